"""Where runs execute: inline (default), a bounded local process pool, or submitit (SLURM or local)."""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

from bench.errors import BenchError
from bench.runner import run_one
from bench.spec import RunSpec

EXECUTORS = ("inline", "pool", "submitit", "slurm")


def _run_in_worker(spec: RunSpec, results: Path, experiment: str, data_root: Path | None, device: str) -> dict:
    record = run_one(spec, results, experiment, data_root, device)
    return {"run_id": record["run_id"], "status": record["status"], "error": record["error"]}


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
) -> list[dict]:
    """Run every spec; returns one summary (run_id, status, error) per spec, in completion order."""
    summaries: list[dict] = []

    def finished(spec: RunSpec, summary: dict) -> None:
        summaries.append(summary)
        if on_done is not None:
            on_done(spec, summary)

    if executor == "inline":
        for spec in specs:
            progress = progress_factory(spec) if progress_factory else None
            kwargs = {"progress": progress} if progress else {}
            record = run_one(spec, results, experiment, data_root, device, **kwargs)
            finished(spec, {"run_id": record["run_id"], "status": record["status"], "error": record["error"]})
    elif executor == "pool":
        # spawn: a forked child would inherit the parent's torch threads and CUDA state
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=max(1, jobs), mp_context=context) as pool:
            futures = {
                pool.submit(_run_in_worker, spec, results, experiment, data_root, device): spec for spec in specs
            }
            for future in as_completed(futures):
                finished(futures[future], future.result())
    elif executor in ("submitit", "slurm"):
        import submitit

        folder = Path(results) / experiment / "submitit"
        cluster = "slurm" if executor == "slurm" else "local"
        submitter = submitit.AutoExecutor(folder=folder, cluster=cluster)
        submitter.update_parameters(timeout_min=240, slurm_array_parallelism=max(1, jobs))
        submitted = submitter.map_array(
            _run_in_worker,
            list(specs),
            [results] * len(specs),
            [experiment] * len(specs),
            [data_root] * len(specs),
            [device] * len(specs),
        )
        for spec, job in zip(specs, submitted, strict=True):
            finished(spec, job.result())
    else:
        raise BenchError(f"--executor takes {', '.join(EXECUTORS)}, not '{executor}'")
    return summaries
