"""Where runs execute: inline (default), a bounded local process pool, or submitit (SLURM or local).

Before fanning runs out (pool, submitit, slurm) the parent encodes every image the grid's SAM-based runs need
through the shared embedding cache (``bench.runner.encode_grid``), so workers only read embeddings and each
image is encoded once per grid. Submitit jobs are tracked in ``<results>/<experiment>/submitit/jobs.json``
(run id → job id, kept until the job's outcome is collected), so a later ``bench run`` or ``bench status``
finds runs that are queued, running or finished without submitting them again.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import sys
import threading
import time
import warnings
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path

from bench import data
from bench.errors import BenchError, hide_dependency_notices
from bench.method import no_progress
from bench.paths import process_alive
from bench.runner import encode_grid, failed_record, run_one
from bench.spec import RunSpec
from bench.store import experiment_folder

EXECUTORS = ("inline", "pool", "submitit", "slurm")
# how often a waiting `bench run` looks at its submitit jobs, in seconds
POLL_SECONDS = 2.0
# SLURM states of a job that has not ended (submitit reports these from squeue/sacct)
_PENDING_STATES = {"PENDING", "RUNNING", "REQUEUED", "CONFIGURING", "COMPLETING", "RESIZING", "SUSPENDED", "UNKNOWN"}


@dataclass(frozen=True)
class SlurmOptions:
    """What a SLURM run asks for; None leaves the cluster's default. ``extra``: any other submitit/sbatch key."""

    partition: str | None = None
    time_min: int = 240
    gpus_per_run: int | None = None
    cpus_per_run: int | None = None
    mem_gb: float | None = None
    account: str | None = None
    qos: str | None = None
    array_parallelism: int | None = None  # default: --jobs
    extra: dict[str, str] = field(default_factory=dict)


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
    visible_gpu: str | None = None,
) -> dict:
    if visible_gpu is not None:  # before anything touches CUDA in this fresh process
        os.environ["CUDA_VISIBLE_DEVICES"] = visible_gpu
    hide_dependency_notices()
    # a fresh process (pool worker, submitit job) knows only the built-in and entry-point plugins
    _load_plugins(plugins)
    record = run_one(spec, results, experiment, data_root, device, progress=progress)
    return {"run_id": record["run_id"], "status": record["status"], "error": record["error"]}


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


def _lost(spec: RunSpec, error: BaseException) -> dict:
    """The summary of a run whose pool worker died before it could write its own failure record."""
    return {"run_id": spec.run_id, "status": "failed", "error": f"worker lost: {type(error).__name__}: {error}"}


def pool_gpus(device: str, jobs: int) -> list[str | None]:
    """``CUDA_VISIBLE_DEVICES`` for each of the pool's ``jobs`` worker slots: round-robin over the GPUs when
    ``device`` is cuda or auto and more than one is visible, else None (the worker inherits the parent's)."""
    import torch

    count = torch.cuda.device_count() if device in ("cuda", "auto") else 0
    if count < 2:
        return [None] * jobs
    inherited = os.environ.get("CUDA_VISIBLE_DEVICES")
    names = [name.strip() for name in inherited.split(",")][:count] if inherited else [str(i) for i in range(count)]
    return [names[slot % len(names)] for slot in range(jobs)]


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
    slurm: SlurmOptions | None = None,
    detach: bool = False,
) -> list[dict]:
    """Run every spec; returns one summary (run_id, status, error) per spec, in the order they finish.

    ``plugins`` are the ``--plugin`` files, loaded again in every worker process. A pool worker that dies (out
    of memory, a signal) fails the runs it takes down — every run not finished by then — with one summary each
    and no record, so running the command again runs them. A submitit job that ends without a result (killed,
    timed out) or raises outside the run gets a ``failed`` record carrying the job's state or exception.
    With ``detach`` (submitit/slurm), runs are submitted and their summaries say ``queued`` with the job id.
    """
    check_executor(executor, jobs)
    if detach and executor not in ("submitit", "slurm"):
        raise BenchError("--detach needs --executor submitit or slurm")
    summaries: list[dict] = []

    def finished(spec: RunSpec, summary: dict) -> None:
        summaries.append(summary)
        if on_done is not None:
            on_done(spec, summary)

    if executor != "inline" and specs:
        try:
            encode_grid(specs, data_root, device)
        except BenchError:
            raise
        except Exception as error:  # e.g. out of memory: the workers encode what they miss, and record failures
            warnings.warn(f"encoding the grid's images first failed ({type(error).__name__}: {error})", stacklevel=2)
    if executor == "inline":
        for spec in specs:
            progress = progress_factory(spec) if progress_factory else no_progress
            finished(spec, _run_in_worker(spec, results, experiment, data_root, device, progress=progress))
    elif executor == "pool":
        _execute_pool(specs, results, experiment, data_root, device, jobs, plugins, finished)
    else:
        jobs_ledger = _SubmititJobs(results, experiment, "slurm" if executor == "slurm" else "local")
        jobs_ledger.execute(specs, data_root, device, jobs, plugins, slurm or SlurmOptions(), detach, finished)
    return summaries


def _execute_pool(
    specs: Sequence[RunSpec],
    results: Path,
    experiment: str,
    data_root: Path | None,
    device: str,
    jobs: int,
    plugins: Sequence[Path],
    finished: Callable[[RunSpec, dict], None],
) -> None:
    # spawn: a forked child would inherit the parent's torch threads and CUDA state. One run per worker
    # process (Python ≥ 3.11), so memory never carries over from one run to the next
    context = multiprocessing.get_context("spawn")
    fresh = {"max_tasks_per_child": 1} if sys.version_info >= (3, 11) else {}
    gpus = pool_gpus(device, jobs)
    waiting = list(specs)
    running: dict[Future, tuple[RunSpec, int]] = {}
    with ProcessPoolExecutor(max_workers=jobs, mp_context=context, initializer=_exit_with_parent,
                             initargs=(os.getpid(),), **fresh) as pool:  # fmt: skip
        # at most one run per slot, each slot pinned to its GPU: a finished run hands its slot to the next one
        free_slots = list(range(min(jobs, len(waiting))))
        while waiting or running:
            while waiting and free_slots:
                slot = free_slots.pop(0)
                spec = waiting.pop(0)
                try:
                    future = pool.submit(_run_in_worker, spec, results, experiment, data_root, device,
                                         tuple(plugins), no_progress, gpus[slot])  # fmt: skip
                except BrokenProcessPool as error:  # an earlier worker died: the pool takes no more runs
                    finished(spec, _lost(spec, error))
                    free_slots.append(slot)
                    continue
                running[future] = (spec, slot)
            if not running:
                continue
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                spec, slot = running.pop(future)
                free_slots.append(slot)
                try:
                    summary = future.result()
                except Exception as error:  # BrokenProcessPool: the worker was killed mid-run
                    summary = _lost(spec, error)
                finished(spec, summary)


def submitit_parameters(cluster: str, jobs: int, options: SlurmOptions) -> dict:
    """The ``update_parameters`` arguments of submitit's AutoExecutor for these options."""
    parameters: dict = {"timeout_min": options.time_min}
    if options.gpus_per_run is not None:
        parameters["gpus_per_node"] = options.gpus_per_run
    if cluster != "slurm":
        return parameters
    parameters["slurm_array_parallelism"] = options.array_parallelism or jobs
    named = {"slurm_partition": options.partition, "cpus_per_task": options.cpus_per_run,
             "mem_gb": options.mem_gb, "slurm_account": options.account, "slurm_qos": options.qos}  # fmt: skip
    parameters.update({key: value for key, value in named.items() if value is not None})
    from submitit.slurm.slurm import SlurmExecutor

    known = SlurmExecutor._valid_parameters()
    additional = {}
    for key, value in options.extra.items():
        typed = int(value) if value.isdigit() else value
        if key.removeprefix("slurm_") in known:  # a submitit parameter (e.g. constraint, exclude, nodes)
            parameters[key if key.startswith("slurm_") else f"slurm_{key}"] = typed
        else:  # anything else goes to sbatch as #SBATCH --key=value
            additional[key] = typed
    if additional:
        parameters["slurm_additional_parameters"] = additional
    return parameters


class _SubmititJobs:
    """Submits runs as submitit jobs and collects them; the ledger file maps run ids to uncollected jobs."""

    def __init__(self, results: Path, experiment: str, cluster: str) -> None:
        # absolute: a SLURM job starts in whatever folder the cluster chooses
        self.results = Path(results).resolve()
        self.experiment = experiment
        self.cluster = cluster
        self.folder = submitit_folder(self.results, experiment)
        self.ledger = load_job_ledger(self.results, experiment)

    def _save(self) -> None:
        data.write_json_atomic(self.folder / "jobs.json", self.ledger)

    def execute(
        self,
        specs: Sequence[RunSpec],
        data_root: Path | None,
        device: str,
        jobs: int,
        plugins: Sequence[Path],
        options: SlurmOptions,
        detach: bool,
        finished: Callable[[RunSpec, dict], None],
    ) -> None:
        by_id = {spec.run_id: spec for spec in specs}
        # runs submitted earlier: collect what ended, keep waiting for (never resubmit) what is queued or running
        pending = [run_id for run_id in by_id if run_id in self.ledger]
        fresh = [spec for spec in specs if spec.run_id not in self.ledger]
        if fresh:
            self._submit(fresh, data_root, device, jobs, plugins, options)
        pending += [spec.run_id for spec in fresh]
        while pending:
            still = []
            for run_id in pending:
                outcome = self._outcome(by_id[run_id])
                if outcome is None:
                    still.append(run_id)
                else:
                    del self.ledger[run_id]
                    self._save()
                    finished(by_id[run_id], outcome)
            pending = still
            if detach:
                for run_id in pending:
                    job = self.ledger[run_id]["job_id"]
                    finished(by_id[run_id], {"run_id": run_id, "status": "queued", "error": None, "job_id": job})
                return
            if pending:
                time.sleep(POLL_SECONDS)

    def collect(self) -> dict[str, RunSpec]:
        """Collect every job in the ledger that ended; returns the runs still queued or running."""
        pending = {}
        for run_id, entry in list(self.ledger.items()):
            spec = RunSpec.from_dict(entry["spec"])
            outcome = self._outcome(spec)
            if outcome is None:
                pending[run_id] = spec
            else:
                del self.ledger[run_id]
                self._save()
        return pending

    def _submit(
        self,
        specs: Sequence[RunSpec],
        data_root: Path | None,
        device: str,
        jobs: int,
        plugins: Sequence[Path],
        options: SlurmOptions,
    ) -> None:
        import submitit

        try:
            submitter = submitit.AutoExecutor(folder=self.folder, cluster=self.cluster)
        except RuntimeError as error:  # no srun on this machine
            raise BenchError(f"--executor {self.cluster} cannot submit here: {error}") from None
        try:
            submitter.update_parameters(**submitit_parameters(self.cluster, jobs, options))
        except (TypeError, ValueError, NameError) as error:  # an unknown --slurm-arg key, a bad value
            raise BenchError(f"submitit refused the SLURM options: {error}") from None
        count = len(specs)
        root = Path(data_root).resolve() if data_root is not None else None
        submitted = submitter.map_array(
            _run_in_worker, list(specs), [self.results] * count, [self.experiment] * count, [root] * count,
            [device] * count, [tuple(plugins)] * count,
        )  # fmt: skip
        for spec, job in zip(specs, submitted, strict=True):
            self.ledger[spec.run_id] = {"job_id": str(job.job_id), "cluster": self.cluster, "spec": spec.canonical()}
        self._save()

    def _outcome(self, spec: RunSpec) -> dict | None:
        """The summary of a run whose job ended (writing a failed record if the job could not), else None."""
        entry = self.ledger[spec.run_id]
        job_id = entry["job_id"]
        state, result = job_outcome(self.folder, job_id, entry.get("cluster", self.cluster))
        if state == "queued-or-running":
            return None
        if result is not None and result[0] == "success":
            return result[1]
        if result is not None:  # the job raised outside run_one: keep its own exception
            trace = str(result[1]).rstrip()
            error = f"job {job_id} failed: {trace.splitlines()[-1] if trace else 'no traceback'}"
        else:
            error, trace = f"job {job_id} ended without a result ({state})", _log_tail(self.folder, job_id)
        record = failed_record(spec, self.results, self.experiment, error, trace)
        return {"run_id": spec.run_id, "status": "failed", "error": record["error"]}


def submitit_folder(results: Path, experiment: str) -> Path:
    return experiment_folder(Path(results), experiment) / "submitit"


def load_job_ledger(results: Path, experiment: str) -> dict[str, dict]:
    """run id → {job_id, cluster, spec} of the submitted runs whose outcome has not been collected yet."""
    path = submitit_folder(results, experiment) / "jobs.json"
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, json.JSONDecodeError) as error:
        raise BenchError(f"cannot read the job list '{path}' ({error}); delete it to forget those jobs") from None


def job_outcome(folder: Path, job_id: str, cluster: str) -> tuple[str, tuple | None]:
    """("finished", submitit's (status, value) result), ("queued-or-running", None) or (the end state, None)."""
    from submitit.core.utils import JobPaths, pickle_load

    paths = JobPaths(folder, job_id, task_id=0)
    if paths.result_pickle.exists():  # written by renaming, so it is whole
        return "finished", pickle_load(paths.result_pickle)
    if cluster == "local":
        state = "queued-or-running" if process_alive(int(job_id)) else "process gone"
    else:
        import submitit

        state = submitit.SlurmJob(folder, job_id).state
        state = "queued-or-running" if state.split()[0] in _PENDING_STATES else state
    if state != "queued-or-running" and paths.result_pickle.exists():  # it finished while we looked
        return "finished", pickle_load(paths.result_pickle)
    return state, None


def _log_tail(folder: Path, job_id: str, lines: int = 20) -> str:
    from submitit.core.utils import JobPaths

    try:
        text = JobPaths(folder, job_id, task_id=0).stderr.read_text(errors="replace")
    except OSError:
        return "(no job log)"
    return "\n".join(text.splitlines()[-lines:])


def grid_status(results: Path, experiment: str | None = None) -> list[dict]:
    """Per experiment and method: runs done, failed, queued or running (submitit jobs) and missing.

    Jobs that ended are collected first (a job that died gets its failed record). Missing runs are those of the
    grid rebuilt from the records (``bench.report.timing.run_status``) that have no record and no job.
    """
    from bench.report.timing import SPEC_KEYS, run_status
    from bench.store import load_records, runs_frame

    results = Path(results)
    if not results.is_dir():
        raise BenchError(f"results folder '{results}' does not exist")
    if experiment is not None:
        names = [experiment_folder(results, experiment).name]
    else:
        names = sorted(
            path.name for path in results.iterdir() if (path / "runs").is_dir() or (path / "submitit").is_dir()
        )
    rows = []
    for name in names:
        pending = _SubmititJobs(results, name, "local").collect()
        records = load_records(results, name) if (results / name / "runs").is_dir() else []
        counts: dict[str, Counter] = defaultdict(Counter)
        pending_keys = set()
        for spec in pending.values():
            counts[spec.method]["queued_or_running"] += 1
            pending_keys.add(tuple(getattr(spec, key) if key != "shots" else spec.shots_label for key in SPEC_KEYS))
        if records:
            runs = runs_frame(records)
            runs = runs[~runs["run_id"].isin(pending)]  # a failed run submitted again counts as queued
            if not runs.empty:
                table, _, missing = run_status(runs)
                for row in table.itertuples():
                    counts[row.method]["done"] += row.ok
                    counts[row.method]["failed"] += row.failed
                for key in set(missing) - pending_keys:
                    counts[key[0]]["missing"] += 1
        columns = ("done", "failed", "queued_or_running", "missing")
        rows += [{"experiment": name, "method": method, **{column: row[column] for column in columns}}
                 for method, row in sorted(counts.items())]  # fmt: skip
    return rows
