"""Where runs execute: inline (default), a bounded local process pool, or submitit (SLURM or local)."""

from __future__ import annotations

import multiprocessing
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

from bench.errors import BenchError
from bench.method import no_progress
from bench.runner import run_one
from bench.spec import RunSpec

EXECUTORS = ("inline", "pool", "submitit", "slurm")


def _load_plugins(plugins: Sequence[Path]) -> None:
    from bench.registry import load_plugin_file

    for path in plugins:
        load_plugin_file(path)


def _run_in_worker(
    spec: RunSpec,
    results: Path,
    experiment: str,
    data_root: Path | None,
    device: str,
    plugins: Sequence[Path] = (),
    progress: Callable = no_progress,
) -> dict:
    # a fresh process (pool worker, submitit job) knows only the built-in and entry-point plugins
    _load_plugins(plugins)
    record = run_one(spec, results, experiment, data_root, device, progress=progress)
    return {"run_id": record["run_id"], "status": record["status"], "error": record["error"]}


def check_executor(executor: str, jobs: int) -> None:
    """Fail in one line, before anything runs, on an executor name or a job count that cannot work."""
    if executor not in EXECUTORS:
        raise BenchError(f"--executor takes {', '.join(EXECUTORS)}, not '{executor}'")
    if jobs < 1:
        raise BenchError(f"--jobs takes an integer ≥ 1, not {jobs}")


def _lost(spec: RunSpec, error: BaseException) -> dict:
    """The summary of a run whose process or job died before it could write its own failure record."""
    return {"run_id": spec.run_id, "status": "failed", "error": f"worker lost: {type(error).__name__}: {error}"}


def execute(
    specs: Sequence[RunSpec],
    results: Path,
    experiment: str,
    data_root: Path | None,
    device: str,
    executor: str = "inline",
    jobs: int = 1,
    on_done: Callable[[RunSpec, dict], None] | None = None,
    progress_factory: Callable[[RunSpec], Callable] | None = None,
    plugins: Sequence[Path] = (),
) -> list[dict]:
    """Run every spec; returns one summary (run_id, status, error) per spec, in the order they finish.

    ``plugins`` are the ``--plugin`` files, loaded again in every worker process. A worker that dies (out of
    memory, a signal, a scheduler time-out) fails the runs it takes down — in a pool, every run not finished
    by then — with one summary each and no record, so running the command again runs them.
    """
    check_executor(executor, jobs)
    summaries: list[dict] = []

    def finished(spec: RunSpec, summary: dict) -> None:
        summaries.append(summary)
        if on_done is not None:
            on_done(spec, summary)

    if executor == "inline":
        for spec in specs:
            progress = progress_factory(spec) if progress_factory else no_progress
            finished(spec, _run_in_worker(spec, results, experiment, data_root, device, progress=progress))
    elif executor == "pool":
        # spawn: a forked child would inherit the parent's torch threads and CUDA state. One run per worker
        # process (Python ≥ 3.11): its peak resident set is then the run's own, and memory never carries over
        context = multiprocessing.get_context("spawn")
        fresh = {"max_tasks_per_child": 1} if sys.version_info >= (3, 11) else {}
        with ProcessPoolExecutor(max_workers=jobs, mp_context=context, **fresh) as pool:
            futures = {
                pool.submit(_run_in_worker, spec, results, experiment, data_root, device, tuple(plugins)): spec
                for spec in specs
            }
            for future in as_completed(futures):
                spec = futures[future]
                try:
                    summary = future.result()
                except Exception as error:  # BrokenProcessPool: the worker was killed mid-run
                    summary = _lost(spec, error)
                finished(spec, summary)
    elif executor in ("submitit", "slurm"):
        import submitit

        folder = Path(results) / experiment / "submitit"
        cluster = "slurm" if executor == "slurm" else "local"
        submitter = submitit.AutoExecutor(folder=folder, cluster=cluster)
        submitter.update_parameters(timeout_min=240, slurm_array_parallelism=jobs)
        count = len(specs)
        submitted = submitter.map_array(
            _run_in_worker,
            list(specs),
            [results] * count,
            [experiment] * count,
            [data_root] * count,
            [device] * count,
            [tuple(plugins)] * count,
        )
        # collected in submission order: job.result() blocks until that job is done
        for spec, job in zip(specs, submitted, strict=True):
            try:
                summary = job.result()
            except Exception as error:  # submitit's UncompletedJobError, FailedJobError
                summary = _lost(spec, error)
            finished(spec, summary)
    return summaries
