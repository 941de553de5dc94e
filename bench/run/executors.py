"""Where runs execute: inline (default), a bounded local process pool, or submitit (SLURM or local).

Whatever the executor, the process that runs a run claims it first (``bench.run.runner.run_claimed``), so several
``bench run`` processes, pools and job arrays sharing one results folder run each run once between them; a
run another process holds is waited for after the others (``execute``). Before fanning runs out (pool,
submitit) the parent encodes every image the grid's SAM-based runs need through the shared embedding cache
(``bench.run.runner.encode_grid``), so workers only read embeddings and each image is encoded once per grid. A SLURM
grid's parent does not: it may run on a login node without the jobs' GPU, and an embedding computed on another
kind of device or in another precision is another cache entry; the jobs encode what they need, each image once
between them (the cache's claims). A worker process (pool, job) receives the grid's settings (``GridSettings``)
pickled, as an argument of its run.
"""

from __future__ import annotations

import multiprocessing
import os
import shutil
import sys
import threading
import time
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from bench.compute.device import local_job_gpus, pin_gpu, pool_gpus
from bench.compute.timing import Deadline
from bench.errors import BenchError
from bench.paths import process_alive
from bench.progress import no_progress
from bench.records import claims
from bench.records.spec import RunSpec
from bench.records.store import RecordStamp, claim_path, record_stamp
from bench.run.runner import encode_grid, finished_elsewhere, run_claimed
from bench.run.settings import GridSettings
from bench.run.submitit_jobs import SlurmOptions, SubmititJobs, load_job_ledger

if TYPE_CHECKING:
    import torch

EXECUTORS = ("inline", "pool", "submitit", "slurm")
# how often a `bench run` waiting for runs claimed by other processes looks at their claims, in seconds
CLAIM_POLL_SECONDS = 2.0
# Python ≥ 3.11 gives each pool run a fresh worker process; 3.10 reuses workers from run to run
ONE_RUN_PER_WORKER = sys.version_info >= (3, 11)
# seconds a starting pool worker waits for a free GPU before it keeps the GPUs it inherited
GPU_WAIT_SECONDS = 60.0
# the GPU this pool worker was pinned to, and the queue it goes back to (set by _start_pool_worker)
_worker_gpu: dict = {"name": None, "queue": None}


@dataclass(frozen=True)
class ExecutorOptions:
    """How a grid's runs execute: the executor, its parallel runs (``jobs``), what a SLURM run asks for, whether
    submitted runs are left running (``detach``), and the ``deadline`` after which no run starts (inline and
    pool: ``--stop-after``)."""

    executor: str = "inline"
    jobs: int = 1
    slurm: SlurmOptions = field(default_factory=SlurmOptions)
    detach: bool = False
    deadline: Deadline = field(default_factory=Deadline)

    def check(self) -> None:
        """Fail in one line, before anything runs, on options that cannot work together."""
        check_executor(self.executor, self.jobs)
        if self.deadline.seconds is not None and self.executor not in ("inline", "pool"):
            raise BenchError("--stop-after needs --executor inline or pool: submitted jobs are bounded by --slurm-time")
        if self.executor == "submitit" and self.slurm.gpus_per_run is not None:
            raise BenchError("--slurm-gpus is for --executor slurm: local submitit jobs get one GPU each, round-robin")
        if self.detach and self.executor not in ("submitit", "slurm"):
            raise BenchError("--detach needs --executor submitit or slurm")


@dataclass
class _Grid:
    """What one ``execute`` call's dispatching and waiting share: its settings and options, each run's record
    stamp at planning (``seen``), where summaries go (``finished``) and each inline run's progress callback."""

    settings: GridSettings
    options: ExecutorOptions
    seen: dict[str, RecordStamp | None]
    finished: Callable[[RunSpec, dict], None]
    progress_factory: Callable[[RunSpec], Callable] | None


def _load_plugins(plugins: Sequence[Path]) -> None:
    from bench.registry import load_plugin_file

    for path in plugins:
        load_plugin_file(path)


def _run_in_worker(
    spec: RunSpec,
    settings: GridSettings,
    seen: RecordStamp | None = None,
    progress: Callable = no_progress,
    visible_gpu: str | None = None,
    deadline: Deadline | None = None,
) -> dict:
    pin_gpu(visible_gpu)  # before anything touches CUDA in this fresh process (a submitit job)
    # a fresh process (pool worker, submitit job) knows only the built-in and entry-point plugins
    _load_plugins(settings.plugins)
    return run_claimed(spec, settings, seen, progress, deadline)


def _start_pool_worker(parent: int, gpus) -> None:
    """Pool-worker initializer: end with the parent (``_exit_with_parent``) and, when the pool shares GPUs out,
    take one from the ``gpus`` queue and pin this process to it before CUDA starts in it, on every Python."""
    _exit_with_parent(parent)
    if gpus is None:
        return
    import queue

    try:
        _worker_gpu["name"] = gpus.get(timeout=GPU_WAIT_SECONDS)
    except queue.Empty:  # a worker killed mid-run took its GPU with it: keep the inherited ones
        return
    _worker_gpu["queue"] = gpus
    pin_gpu(_worker_gpu["name"])


def _run_in_pool_worker(*arguments) -> dict:
    """``_run_in_worker`` in a pool worker; a worker that runs one run only hands its GPU on as it ends."""
    try:
        return _run_in_worker(*arguments)
    finally:
        if ONE_RUN_PER_WORKER and _worker_gpu["queue"] is not None:
            _worker_gpu["queue"].put(_worker_gpu["name"])


def _exit_with_parent(parent: int, poll_seconds: float = 2.0) -> None:
    """Pool-worker initializer: end this worker when the ``bench run`` that spawned it is gone.

    A parent killed by a signal (SIGTERM, SIGKILL) never shuts its pool down, and its spawned workers would
    train on to the end of their runs, holding the cores of the next job. The dead parent's run has no
    record, so the next ``bench run`` runs it again.
    """

    def watch() -> None:
        while process_alive(parent):
            time.sleep(poll_seconds)
        os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def check_executor(executor: str, jobs: int) -> None:
    """Fail in one line, before anything runs, on an executor name or a job count that cannot work."""
    if executor not in EXECUTORS:
        raise BenchError(f"--executor takes {', '.join(EXECUTORS)}, not '{executor}'")
    if jobs < 1:
        raise BenchError(f"--jobs takes an integer ≥ 1, not {jobs}")
    if executor == "slurm" and shutil.which("sbatch") is None:
        raise BenchError("--executor slurm needs SLURM's sbatch on the PATH: run bench on a node of the cluster")


def parent_device(device: str, executor: str) -> torch.device:
    """The device the process planning a grid loads the backbone on to check its checkpoint: the runs' own
    (``runner.resolve_device``), except under SLURM, whose parent may be a login node without the jobs' GPU:
    there the name is only checked for its spelling, and the check loads on the CPU."""
    import torch

    from bench.compute.device import check_device_name, resolve_device

    if executor == "slurm":
        check_device_name(device)
        return torch.device("cpu")
    return resolve_device(device)


def _lost(spec: RunSpec, error: BaseException) -> dict:
    """The summary of a run whose pool worker died before it could write its own failure record."""
    return {"run_id": spec.run_id, "status": "failed", "error": f"worker lost: {type(error).__name__}: {error}"}


def _not_started(spec: RunSpec) -> dict:
    """The summary of a run left for a later command because the grid's ``--stop-after`` time had passed."""
    return {"run_id": spec.run_id, "status": "not_started", "error": None}


def execute(
    specs: Sequence[RunSpec],
    settings: GridSettings,
    options: ExecutorOptions | None = None,
    on_done: Callable[[RunSpec, dict], None] | None = None,
    progress_factory: Callable[[RunSpec], Callable] | None = None,
) -> list[dict]:
    """Run every spec; returns one summary (run_id, status, error) per spec, in the order they finish.

    ``settings.plugins`` are the ``--plugin`` files, loaded again in every worker process. A pool worker that
    dies (out of memory, a signal) fails the runs it takes down — every run not finished by then — with one
    summary each and no record, so running the command again runs them. A submitit job that ends without a result
    (killed, timed out) or raises outside the run gets a ``failed`` record carrying the job's state or exception.
    With ``options.detach`` (submitit/slurm), runs are submitted and their summaries say ``queued`` with the job id.

    A run claimed by another live process is not run here: ``on_done`` hears of it once (status ``claimed``,
    with its ``holder``), and once the others are done this process waits for its claim to end. Then the run's
    summary is that process's record (``elsewhere`` set), or, when that process died without one, the run is
    run here (its summary says ``taken_from``). With ``detach`` claimed runs are not waited for: their final
    summary is the ``claimed`` one. ``settings.numerics``: the precision and determinism every run computes in.

    Once ``options.deadline`` has passed (inline and pool only) no run starts: each run not started gets a
    summary with status ``not_started`` and no record; a running fit that goes through ``RunContext.epochs`` is
    saved at its epoch's end (status ``paused``, no record), any other running run finishes; runs claimed by other
    processes are not waited for (their final summary is the ``claimed`` one), so that the command ends within
    its time slice and the same command run again goes on.
    """
    options = options or ExecutorOptions()
    options.check()
    results, experiment = settings.results, settings.experiment
    seen = {spec.run_id: record_stamp(results, experiment, spec.run_id) for spec in specs}
    summaries: list[dict] = []
    held: dict[str, RunSpec] = {}  # claimed by another process: waited for after the rest

    def finished(spec: RunSpec, summary: dict) -> None:
        if summary["status"] == "claimed":
            if spec.run_id not in held and on_done is not None:
                on_done(spec, summary)
            held[spec.run_id] = spec
            return
        summaries.append(summary)
        if on_done is not None:
            on_done(spec, summary)

    grid = _Grid(settings, options, seen, finished, progress_factory)

    def dispatch(batch: list[RunSpec]) -> None:
        # our own jobs submitted earlier hold their runs' claims: they are collected from the job list
        submitting = options.executor in ("submitit", "slurm")
        submitted = load_job_ledger(results, experiment) if submitting else {}
        for spec in batch:  # a cheap look first: no worker is started (nor job submitted) for a held run
            if spec.run_id in submitted:
                continue
            holder = claims.live_holder(claim_path(results, experiment, spec.run_id))
            if holder is not None:
                finished(spec, {"run_id": spec.run_id, "status": "claimed", "error": None,
                                "holder": holder.describe()})  # fmt: skip
        free = [spec for spec in batch if spec.run_id not in held]
        if free:
            _dispatch(free, grid)

    dispatch(list(specs))
    while held and not options.detach and not options.deadline.passed():
        dispatch(_wait_for_claims(held, grid))
    return summaries + [{"run_id": run_id, "status": "claimed", "error": None} for run_id in held]


def _dispatch(specs: list[RunSpec], grid: _Grid) -> None:
    """Run ``specs`` with the grid's executor, each through its claim; every summary goes to ``grid.finished``.
    Runs that would start after the deadline (inline, pool) are reported ``not_started`` instead."""
    settings, options = grid.settings, grid.options
    if options.executor in ("pool", "submitit"):  # never slurm: see the module's docstring
        try:
            encode_grid(specs, settings)
        except BenchError:
            raise
        except Exception as error:  # e.g. out of memory: the workers encode what they miss, and record failures
            warnings.warn(f"encoding the grid's images first failed ({type(error).__name__}: {error})", stacklevel=2)
    if options.executor == "inline":
        for spec in specs:
            if options.deadline.passed():
                grid.finished(spec, _not_started(spec))
                continue
            progress = grid.progress_factory(spec) if grid.progress_factory else no_progress
            grid.finished(spec, run_claimed(spec, settings, grid.seen[spec.run_id], progress, options.deadline))
    elif options.executor == "pool":
        _execute_pool(specs, grid)
    else:
        jobs_settings = settings.for_jobs()
        # a local job gets one GPU, its slot's (round-robin); a SLURM job gets the GPUs its allocation names
        local = options.executor == "submitit"
        gpus = local_job_gpus(settings.device, options.jobs) if local else [None] * options.jobs

        def arguments(spec: RunSpec, slot: int) -> tuple:
            return spec, jobs_settings, grid.seen[spec.run_id], no_progress, gpus[slot]

        submitted = SubmititJobs(settings.results, settings.experiment, "local" if local else "slurm")
        submitted.execute(specs, _run_in_worker, arguments, options.jobs, options.slurm, options.detach, grid.finished)


def _wait_for_claims(held: dict[str, RunSpec], grid: _Grid) -> list[RunSpec]:
    """Wait until some of the ``held`` runs' claims end; report those another process finished, return the
    rest of them (their holder died without a record: they are to be run here). Ended runs leave ``held``.
    Stop waiting (returning nothing) once the deadline has passed."""
    results, experiment = grid.settings.results, grid.settings.experiment
    while not grid.options.deadline.passed():
        time.sleep(CLAIM_POLL_SECONDS)
        ended = [spec for run_id, spec in held.items()
                 if claims.live_holder(claim_path(results, experiment, run_id)) is None]  # fmt: skip
        free = []
        for spec in ended:
            del held[spec.run_id]
            done = finished_elsewhere(spec, grid.settings, grid.seen[spec.run_id])
            if done is None:
                free.append(spec)
            else:
                grid.finished(spec, done)
        if free or not held:
            return free
    return []


def _execute_pool(specs: Sequence[RunSpec], grid: _Grid) -> None:
    settings, jobs, deadline = grid.settings, grid.options.jobs, grid.options.deadline
    # spawn: a forked child would inherit the parent's torch threads and CUDA state. One run per worker
    # process (Python ≥ 3.11), so memory never carries over from one run to the next
    context = multiprocessing.get_context("spawn")
    fresh = {"max_tasks_per_child": 1} if ONE_RUN_PER_WORKER else {}
    # each worker pins itself to a GPU as it starts, before CUDA does (a reused 3.10 worker keeps its GPU)
    gpus = None
    if any(gpu is not None for gpu in pool_gpus(settings.device, jobs)):
        gpus = context.Queue()
        for gpu in pool_gpus(settings.device, jobs):
            gpus.put(gpu)
    waiting = list(specs)
    running: dict[Future, RunSpec] = {}
    with ProcessPoolExecutor(max_workers=jobs, mp_context=context, initializer=_start_pool_worker,
                             initargs=(os.getpid(), gpus), **fresh) as pool:  # fmt: skip
        while waiting or running:
            if deadline.passed():
                for spec in waiting:
                    grid.finished(spec, _not_started(spec))
                waiting.clear()
            while waiting and len(running) < jobs:
                spec = waiting.pop(0)
                try:
                    future = pool.submit(_run_in_pool_worker, spec, settings, grid.seen[spec.run_id], no_progress,
                                         None, deadline)  # fmt: skip
                except BrokenProcessPool as error:  # an earlier worker died: the pool takes no more runs
                    grid.finished(spec, _lost(spec, error))
                    continue
                running[future] = spec
            if not running:
                continue
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                spec = running.pop(future)
                try:
                    summary = future.result()
                except Exception as error:  # BrokenProcessPool: the worker was killed mid-run
                    summary = _lost(spec, error)
                    # the dead worker's claim
                    claims.clear_stale(claim_path(settings.results, settings.experiment, spec.run_id))
                grid.finished(spec, summary)
