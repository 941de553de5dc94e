"""Where the tool keeps data and caches: environment variables first, then a per-user folder."""

from __future__ import annotations

import os
from pathlib import Path


def _user_cache_home() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")


def cache_dir() -> Path:
    """Root of every cache the harness owns (embeddings, support sets): `$BENCH_CACHE` or ~/.cache/medsam-bench."""
    return Path(os.environ.get("BENCH_CACHE") or _user_cache_home() / "medsam-bench")


def default_data_root() -> Path:
    """Where dataset releases are looked for: `$BENCH_DATA` or ~/.cache/medsam-bench/data."""
    return Path(os.environ.get("BENCH_DATA") or cache_dir() / "data")
