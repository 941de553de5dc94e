"""`bench ls`, `bench run` and `bench status`: the plugins, running a grid, and where a grid stands."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from bench.cli import run_options as options
from bench.cli.common import (
    DataRootOption,
    PluginOption,
    ProgressBars,
    app,
    check_writable,
    console,
    key_values,
    load_plugins,
    user_errors,
)
from bench.cli.grid_output import GridTally, print_outcome, print_plan, print_summary
from bench.errors import BenchError
from bench.paths import remove_stale_temporaries
from bench.registry import BACKBONES, DATASETS, METHODS

if TYPE_CHECKING:
    from bench.records.commands import CommandLog
    from bench.run.executors import ExecutorOptions
    from bench.run.plan import GridPlan

REGISTRIES = {"methods": METHODS, "datasets": DATASETS, "backbones": BACKBONES}


@app.command("ls")
@user_errors
def list_plugins(
    kind: Annotated[str | None, typer.Argument(help="methods, datasets or backbones (default: all)")] = None,
    plugin: PluginOption = None,
    data_root: DataRootOption = None,
) -> None:
    """List registered plugins (built-ins are listed without importing their code), and the user datasets
    (nnU-Net folders, image folders) under --data-root with their tasks."""
    load_plugins(plugin)
    if kind is not None and kind not in REGISTRIES:
        raise BenchError(f"bench ls takes methods, datasets or backbones, not '{kind}'")
    for name, registry in REGISTRIES.items():
        if kind in (None, name):
            console.print(f"[bold]{name}[/bold]: {', '.join(registry.names()) or '(none)'}", highlight=False)
    if kind in (None, "datasets") and data_root is not None:
        from bench.data.user_dataset import discover

        for name, found in discover(data_root):
            described = f"{found}" if isinstance(found, BenchError) else f"tasks {', '.join(found.tasks)}"
            console.print(f"  {name}: {described}", highlight=False, soft_wrap=True)


@app.command()
@user_errors
def run(
    methods: options.Methods = "all",
    datasets: options.Datasets = "hc18-demo",
    tasks: options.Tasks = None,
    shots: options.Shots = "10",
    labels: options.Labels = None,
    seeds: options.Seeds = None,
    draws: options.Draws = None,
    budget: options.Budget = "auto",
    eval_split: options.EvalSplit = "test",
    backbone: options.Backbone = "litemedsam",
    checkpoint: options.Checkpoint = None,
    data_root: options.DataRoot = None,
    results: options.Results = Path("results"),
    experiment: options.Experiment = "default",
    set_: options.Overrides = None,
    device: options.Device = "auto",
    precision: options.Precision = "auto",
    deterministic: options.Deterministic = False,
    executor: options.Executor = "inline",
    jobs: options.Jobs = 1,
    detach: options.Detach = False,
    slurm_partition: options.SlurmPartition = None,
    slurm_time: options.SlurmTime = 240,
    slurm_gpus: options.SlurmGpus = None,
    slurm_cpus: options.SlurmCpus = None,
    slurm_mem_gb: options.SlurmMemGb = None,
    slurm_account: options.SlurmAccount = None,
    slurm_qos: options.SlurmQos = None,
    slurm_array_parallelism: options.SlurmArrayParallelism = None,
    slurm_arg: options.SlurmArgs = None,
    dry_run: options.DryRun = False,
    stop_after: options.StopAfter = None,
    save_models: options.SaveModels = False,
    plugin: PluginOption = None,
) -> None:
    """Run a grid of methods × datasets × tasks × shots × labels × draws × seeds, resuming what is done."""
    from bench.compute.device import Numerics, check_precision
    from bench.compute.timing import Deadline, parse_duration
    from bench.data.resolved import DatasetPlugins
    from bench.records.commands import CommandLog
    from bench.run import grid
    from bench.run.executors import ExecutorOptions
    from bench.run.plan import plan_grid
    from bench.run.settings import GridSettings
    from bench.run.submitit_jobs import SlurmOptions

    deadline = Deadline(parse_duration(stop_after) if stop_after is not None else None)
    command_log = CommandLog(results, experiment)
    load_plugins(plugin)
    request = grid.GridRequest(
        methods=grid.names_in(methods, "--methods"), datasets=grid.names_in(datasets, "--datasets"),
        tasks=grid.names_in(tasks, "--tasks") if tasks is not None else None, shots=grid.parse_shots(shots),
        labels=grid.names_in(labels, "--labels") if labels is not None else None,
        seeds=grid.parse_ints(seeds, "--seeds") if seeds else None, draws=draws, budget=budget, backbone=backbone,
        checkpoint=str(checkpoint.resolve()) if checkpoint else None, overrides=grid.parse_overrides(set_ or []),
        eval_split=eval_split,
    )  # fmt: skip
    slurm = SlurmOptions(
        partition=slurm_partition, time_min=slurm_time, gpus_per_run=slurm_gpus, cpus_per_run=slurm_cpus,
        mem_gb=slurm_mem_gb, account=slurm_account, qos=slurm_qos, array_parallelism=slurm_array_parallelism,
        extra=key_values(slurm_arg or [], "--slurm-arg"),
    )  # fmt: skip
    run_options = ExecutorOptions(executor, jobs, slurm, detach, deadline)
    settings = GridSettings(results, experiment, DatasetPlugins(data_root), device,
                            Numerics(check_precision(precision), deterministic), save_models,
                            tuple(path.resolve() for path in plugin or []))  # fmt: skip
    plan = plan_grid(request, settings, run_options)
    if dry_run:
        print_plan(plan)
        return
    _carry_out(plan, run_options, stop_after, command_log)


def _carry_out(plan: GridPlan, run_options: ExecutorOptions, stop_after: str | None, command_log: CommandLog) -> None:
    """Run a planned grid: its summary, its runs, the last line, and the command's line in the experiment's log
    (only when runs ran); exit code 1 when a run failed."""
    _check_inputs(plan)
    print_summary(plan, run_options.detach)
    if not plan.to_run:
        console.print("Nothing left to run.")
        return
    tally = _execute_grid(plan, run_options)
    print_outcome(tally, plan, stop_after)
    command_log.write(tally.outcome(len(plan.to_run)))
    if tally.failures:
        raise typer.Exit(1)


def _check_inputs(plan: GridPlan) -> None:
    """Load the data and the backbone the runs to run need, then ready the results folder: a bad input fails in
    one line, and leaves no folder behind."""
    from bench.records import store
    from bench.records.claims import remove_stale

    for dataset_name, task_name in dict.fromkeys((s.dataset, s.task) for s in plan.to_run):
        with console.status(f"loading {dataset_name}/{task_name}"):
            plan.settings.datasets.task(dataset_name, task_name)  # bad data roots fail here, before any record
    if any(METHODS.get(s.method).uses_backbone for s in plan.to_run):
        from bench.sam.backbones import load_backbone

        backbone, checkpoint = plan.request.backbone, plan.request.checkpoint
        with console.status(f"loading backbone {backbone}"):
            # a missing or wrong checkpoint fails here in one line; inline runs reuse the loaded model
            load_backbone(backbone, checkpoint, plan.checked_device)
    if plan.to_run:
        results, experiment = plan.settings.results, plan.settings.experiment
        check_writable(store.runs_folder(results, experiment), results)
        for folder in (store.runs_folder(results, experiment), store.predictions_folder(results, experiment)):
            remove_stale_temporaries(folder)  # half-written files of a grid killed earlier
        # and the claims its killed processes left on runs that are done (the others are taken over by name)
        remove_stale(store.claims_folder(results, experiment), spared={s.run_id for s in plan.to_run})


def _execute_grid(plan: GridPlan, run_options: ExecutorOptions) -> GridTally:
    """Run what is left of the grid under a progress display; what the runs came to."""
    from bench.records import store
    from bench.run.executors import execute

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=False) as progress:
        tally = GridTally(progress, len(plan.to_run), run_options.detach)
        try:
            execute(plan.to_run, plan.settings, run_options, tally.on_done, ProgressBars(progress).for_run)
        except OSError as error:  # the results folder filled up or went away mid-grid: stop, keep what is done
            folder = store.runs_folder(plan.settings.results, plan.settings.experiment)
            raise BenchError(
                f"could not write to '{folder}' ({error.strerror or error}); "
                "the records written so far are kept: fix it and re-run the command to resume"
            ) from error
    return tally


@app.command()
@user_errors
def status(
    results: Annotated[Path, typer.Option(help="Folder of experiments and their records.")] = Path("results"),
    experiment: Annotated[str | None, typer.Option(help="One experiment (default: all).")] = None,
    plugin: PluginOption = None,
) -> None:
    """Per method: runs done, failed, queued or running (submitted jobs and claimed runs) and missing; collects
    ended jobs, and names the processes holding claims."""
    from bench.records.claims import live_holders
    from bench.records.store import claims_folder
    from bench.run.grid_status import grid_status

    load_plugins(plugin)
    rows = grid_status(results, experiment)
    if not rows:
        raise BenchError(f"no run records or submitted jobs under '{results}'")
    status_table = Table(title=f"Run status under {results}")
    for column in ("experiment", "method", "done", "failed", "queued or running", "missing"):
        status_table.add_column(column)
    for row in rows:
        status_table.add_row(row["experiment"], row["method"], str(row["done"]), str(row["failed"]),
                             str(row["queued_or_running"]), str(row["missing"]))  # fmt: skip
    console.print(status_table)
    for name in dict.fromkeys(row["experiment"] for row in rows):
        by_holder = Counter(holder.describe() for holder in live_holders(claims_folder(results, name)).values())
        for holder, count in by_holder.items():
            console.print(f"{name}: {count} run{'s' * (count > 1)} claimed by {holder}", highlight=False)
