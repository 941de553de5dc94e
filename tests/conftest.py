"""Shared fixtures. Every test gets its own cache folder, so nothing is written to the user's home."""

from __future__ import annotations

from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    cache = tmp_path_factory.mktemp("bench-cache")
    monkeypatch.setenv("BENCH_CACHE", str(cache))
    monkeypatch.setenv("BENCH_DATA", str(cache / "data"))
    return cache


@pytest.fixture
def fake_methods():
    """Register the fake methods of tests/fakes.py for one test."""
    from bench.registry import METHODS
    from tests.fakes import FAKES

    for name, cls in FAKES.items():
        METHODS.register(name, cls)
    yield FAKES
    for name in FAKES:
        METHODS._loaded.pop(name, None)
