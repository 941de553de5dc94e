"""Shared fixtures. Every test gets its own cache folder, so nothing is written to the user's home."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--bench-plugin", action="append", default=[], metavar="FILE.py",
        help="a plugin file to register before collection, so the contract tests run on its methods",
    )  # fmt: skip


def pytest_configure(config: pytest.Config) -> None:
    from bench.errors import BenchError
    from bench.registry import load_plugin_file

    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1:  # the cores shared between the workers, and the processes their tests start (OMP_NUM_THREADS)
        import torch

        # a worker inherits COLUMNS=80 from xdist, and rich would wrap and cut the tables the tests read: the
        # console then sizes itself as in a run without workers
        os.environ.pop("COLUMNS", None)

        threads = max(1, (os.cpu_count() or 1) // workers)
        os.environ["OMP_NUM_THREADS"] = str(threads)
        torch.set_num_threads(threads)

    for path in config.getoption("--bench-plugin"):
        try:
            load_plugin_file(path)
        except BenchError as error:
            raise pytest.UsageError(f"--bench-plugin: {error}") from None


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    cache = tmp_path_factory.mktemp("bench-cache")
    monkeypatch.setenv("BENCH_CACHE", str(cache))
    monkeypatch.setenv("BENCH_DATA", str(cache / "data"))
    # the suite's grids run on the generated dataset, not on the real HC18 subset `bench run` defaults to
    monkeypatch.setenv("BENCH_DATASETS", "synthetic")
    return cache


@contextmanager
def registered_methods(methods: dict[str, type]) -> Iterator[dict[str, type]]:
    """Register ``methods`` for the duration of the block, then forget them."""
    from bench.registry import METHODS

    for name, cls in methods.items():
        METHODS.register(name, cls)
    try:
        yield methods
    finally:
        for name in methods:
            METHODS.unregister(name)


def expand(*request, data_root: Path | None = None, **options) -> list:
    """``expand_grid`` of a request given by its fields (``GridRequest``'s order), its datasets under
    ``data_root``."""
    from bench.data.resolved import DatasetPlugins
    from bench.run.grid import GridRequest, expand_grid

    return expand_grid(GridRequest(*request, **options), DatasetPlugins(data_root))


@pytest.fixture
def fake_methods() -> Iterator[dict[str, type]]:
    """Register the fake methods of tests/fakes.py for one test."""
    from tests.fakes import FAKES

    with registered_methods(FAKES) as methods:
        yield methods


@pytest.fixture
def report_methods() -> Iterator[dict[str, type]]:
    """Register the attribute-only methods of tests/report_records.py for one test."""
    from tests.report_records import TEST_METHODS

    with registered_methods(TEST_METHODS) as methods:
        yield methods
