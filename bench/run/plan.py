"""Planning a grid: the runs a `bench run` asks for, and which of them are left to run, here and now.

The planner resolves the methods and datasets once (the datasets into the plugin objects every later step
shares, ``GridSettings.datasets``), expands the grid, reads each run's record and decides with ``is_current``
which records still stand, and notes the runs other processes hold or earlier jobs were submitted for. The
command prints the plan and hands ``to_run`` and ``settings`` to the executor.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from dataclasses import dataclass

import torch

from bench.compute.device import run_device_type
from bench.data.dataset import locate_datasets
from bench.data.resolved import DatasetPlugins
from bench.records.claims import Holder, live_holder
from bench.records.spec import PlannedRun, RunSpec
from bench.records.store import claim_path, existing_record
from bench.registry import BACKBONES, METHODS
from bench.run.current import is_current, outdated_by
from bench.run.executors import ExecutorOptions, parent_device
from bench.run.grid import GridRequest, expand_grid, resolve_budget
from bench.run.settings import GridSettings
from bench.run.submitit_jobs import load_job_ledger


@dataclass(frozen=True)
class GridPlan:
    """A grid as planned: every combination (``planned``, skips with their reasons), the runnable ones, and what
    is left of them to run, with the state of each run's record and who else holds a run."""

    settings: GridSettings  # the command's, with the grid's datasets located and resolved
    request: GridRequest  # the command's, resolved: method and dataset names as planned, the budget paper or quick
    planned: list[PlannedRun]
    runnable: list[RunSpec]
    to_run: list[RunSpec]
    statuses: dict[str, str | None]  # run id → its record's status ("outdated": of another recipe), None: no record
    outdated: dict[str, dict[str, tuple[object, object]]]  # run id → what makes its finished record outdated
    held: dict[str, Holder]  # run id → the live process that holds the run now (waited for after the rest)
    submitted: int  # runs to run whose jobs an earlier command submitted: collected, not submitted again
    checked_device: torch.device  # where this process loads the backbone to check its checkpoint

    @property
    def skipped(self) -> Counter:
        return Counter(item.skip_reason for item in self.planned if item.skip_reason)


def plan_grid(request: GridRequest, settings: GridSettings, options: ExecutorOptions) -> GridPlan:
    """The plan of ``request`` under ``settings`` (``settings.datasets``: the data root the user gave) and
    ``options``; a bad option, name or data root fails here in one line, before anything is written."""
    options.check()
    # a SLURM parent may sit on a login node: it only checks the device's spelling, and loads nothing on it
    checked_device = parent_device(settings.device, options.executor)
    runs_on = run_device_type(settings.device, options.executor, options.slurm.gpus_per_run)
    budget = resolve_budget(request.budget, runs_on)
    methods = METHODS.names() if list(request.methods) == ["all"] else list(request.methods)
    if any(METHODS.get(name).uses_backbone for name in methods):
        BACKBONES.get(request.backbone)  # an unknown name fails here with the did-you-mean line
    names, data_root = locate_datasets(list(request.datasets), settings.data_root)
    datasets = DatasetPlugins.resolve(names, data_root)
    datasets.check_present()  # a wrong --data-root fails here, --dry-run included
    slurm_device_type = runs_on if options.executor == "slurm" else None
    settings = dataclasses.replace(settings, datasets=datasets, slurm_device_type=slurm_device_type)
    request = dataclasses.replace(request, methods=methods, datasets=names, budget=budget)
    planned = expand_grid(request, datasets)
    runnable = [item.spec for item in planned if item.skip_reason is None]
    records = {spec.run_id: existing_record(settings.results, settings.experiment, spec.run_id) for spec in runnable}
    # a finished record made before its method's defaults changed, or in another precision, is of another
    # recipe: run it again
    outdated = {spec.run_id: changes for spec in runnable if (records[spec.run_id] or {}).get("status") == "ok"
                and (changes := outdated_by(records[spec.run_id], spec, settings))}  # fmt: skip
    statuses = {run_id: "outdated" if run_id in outdated else record and record.get("status")
                for run_id, record in records.items()}  # fmt: skip
    to_run = [spec for spec in runnable if not is_current(records[spec.run_id], spec, settings)]
    # runs another process holds now: not run here, and waited for after the rest (see ``execute``)
    holders = {spec.run_id: live_holder(claim_path(settings.results, settings.experiment, spec.run_id))
               for spec in to_run}  # fmt: skip
    held = {run_id: holder for run_id, holder in holders.items() if holder is not None}
    submitting = options.executor in ("submitit", "slurm")
    ledger = load_job_ledger(settings.results, settings.experiment) if submitting else {}
    submitted = sum(1 for spec in to_run if spec.run_id in ledger)
    return GridPlan(settings, request, planned, runnable, to_run, statuses, outdated, held, submitted, checked_device)
