"""Where the tool keeps data and caches: environment variables first, then a per-user folder."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO


def _user_cache_home() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")


def cache_dir() -> Path:
    """Root of every cache the harness owns (embeddings, support sets): `$BENCH_CACHE` or ~/.cache/medsam-bench."""
    return Path(os.environ.get("BENCH_CACHE") or _user_cache_home() / "medsam-bench")


def default_data_root() -> Path:
    """Where dataset releases are looked for: `$BENCH_DATA` or ~/.cache/medsam-bench/data."""
    return Path(os.environ.get("BENCH_DATA") or cache_dir() / "data")


@contextmanager
def atomic_write(path: Path, mode: str = "wb", fsync: bool = False) -> Iterator[IO]:
    """A stream to a temporary file beside ``path``, renamed onto ``path`` when the block succeeds.

    No reader ever sees half a file; on any failure (an interrupt too) the old file, if any, stays and the
    temporary is removed. ``fsync`` makes the data durable before the rename (records), at a cost per file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, mode) as stream:
            yield stream
            if fsync:
                stream.flush()
                os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
