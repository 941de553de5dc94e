"""Runs as submitit jobs: on this machine (``--executor submitit``) or as one SLURM job array (``slurm``).

Submitted jobs are tracked in ``<results>/<experiment>/submitit/jobs.json`` (run id → job id, kept until the
job's outcome is collected), so a later ``bench run`` or ``bench status`` finds runs that are queued, running or
finished without submitting them again. Each job claims its run when it starts (``bench.run.runner.run_claimed``),
as any executor's worker does.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bench.data import samples as data
from bench.errors import BenchError
from bench.paths import process_alive
from bench.records import claims
from bench.records.spec import RunSpec
from bench.records.store import claim_path, experiment_folder
from bench.run.runner import failed_record

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


def submitit_parameters(cluster: str, jobs: int, options: SlurmOptions) -> dict:
    """The ``update_parameters`` arguments of submitit's AutoExecutor for these options."""
    parameters: dict = {"timeout_min": options.time_min}
    if cluster != "slurm":  # a local job is pinned to one GPU by the worker itself (bench.run.executors)
        return parameters
    if options.gpus_per_run is not None:
        parameters["gpus_per_node"] = options.gpus_per_run
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


class SubmititJobs:
    """Submits runs as submitit jobs and collects them; the ledger file maps run ids to uncollected jobs."""

    def __init__(self, results: Path, experiment: str, cluster: str) -> None:
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
        worker: Callable[..., dict],
        arguments: Callable[[RunSpec, int], tuple],
        jobs: int,
        options: SlurmOptions,
        detach: bool,
        finished: Callable[[RunSpec, dict], None],
    ) -> None:
        """Submit ``worker(*arguments(spec, slot))`` for each spec not submitted yet, then collect every job's summary
        (or, with ``detach``, a ``queued`` summary for each job that has not ended). Paths in the arguments must
        be absolute: a SLURM job starts in whatever folder the cluster chooses.

        SLURM runs at most ``jobs`` array tasks at once (its array parallelism). Local jobs have no scheduler:
        here at most ``jobs`` are started at a time, the next as one ends; with ``detach`` nobody is left to
        start the next, so all are started at once. ``slot`` (0 to ``jobs`` − 1) is one no other running job of
        this call holds (local, not detached; else the job's position modulo ``jobs``): a GPU can follow it."""
        by_id = {spec.run_id: spec for spec in specs}
        # runs submitted earlier: collect what ended, keep waiting for (never resubmit) what is queued or running
        pending = [run_id for run_id in by_id if run_id in self.ledger]
        unsubmitted = [spec for spec in specs if spec.run_id not in self.ledger]
        throttled = self.cluster == "local" and not detach
        slots: dict[str, int] = {}  # run id → the slot of a job this call submitted and has not collected
        while pending or unsubmitted:
            room = max(jobs - len(pending), 0) if throttled else len(unsubmitted)
            fresh, unsubmitted = unsubmitted[:room], unsubmitted[room:]
            if fresh:
                free = [slot for slot in range(jobs) if slot not in slots.values()] if throttled else []
                for position, spec in enumerate(fresh):
                    slots[spec.run_id] = free[position] if position < len(free) else position % jobs
                self._submit(fresh, worker, lambda spec: arguments(spec, slots[spec.run_id]), jobs, options)
                pending += [spec.run_id for spec in fresh]
            still = []
            for run_id in pending:
                outcome = self._outcome(by_id[run_id])
                if outcome is None:
                    still.append(run_id)
                else:
                    del self.ledger[run_id]
                    self._save()
                    slots.pop(run_id, None)
                    finished(by_id[run_id], outcome)
            pending = still
            if detach:
                for run_id in pending:
                    job = self.ledger[run_id]["job_id"]
                    finished(by_id[run_id], {"run_id": run_id, "status": "queued", "error": None, "job_id": job})
                return
            if pending and (len(pending) >= jobs or not throttled or not unsubmitted):
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
        worker: Callable[..., dict],
        arguments: Callable[[RunSpec], tuple],
        jobs: int,
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
        submitted = submitter.map_array(worker, *zip(*(arguments(spec) for spec in specs), strict=True))
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
        claims.clear_stale(claim_path(self.results, self.experiment, spec.run_id))  # a killed job's claim
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
