"""`bench ls`, `bench run` and `bench status`: the plugins, running a grid, and where a grid stands."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

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
from bench.data.dataset import check_present, load_task, locate_datasets
from bench.errors import BenchError
from bench.paths import remove_stale_temporaries
from bench.registry import BACKBONES, DATASETS, METHODS

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
    methods: Annotated[str, typer.Option(help="Comma-separated method names, or 'all'.")] = "all",
    datasets: Annotated[
        str,
        typer.Option(
            help="Comma-separated dataset names; own data: nnunet:<folder>, folder:<folder> or a path. Default: "
            "the HC18 subset shipped with the package ($BENCH_DATASETS overrides it; the test suite sets synthetic).",
            envvar="BENCH_DATASETS", show_envvar=False,
        ),
    ] = "hc18-demo",
    tasks: Annotated[
        str | None, typer.Option(help="Tasks (structures, any case); default: every task.")
    ] = None,
    shots: Annotated[str, typer.Option(help="Training images per run: integers and/or 'all'.")] = "10",
    labels: Annotated[
        str | None, typer.Option(help="mask, box, box-noisy; default: each method's own regimes.")
    ] = None,
    seeds: Annotated[str | None, typer.Option(help="Init seeds; default: the budget's (paper 0,1,2).")] = None,
    draws: Annotated[int | None, typer.Option(help="Support draws per k; default: the budget's (paper 3).")] = None,
    budget: Annotated[
        str, typer.Option(help="auto (paper when the runs compute on a GPU, else quick), paper or quick.")
    ] = "auto",
    eval_split: Annotated[
        str, typer.Option(help="Split the runs are scored on: test, or val for model development and tuning.")
    ] = "test",
    backbone: Annotated[str, typer.Option(help="SAM-family backbone for SAM-based methods.")] = "litemedsam",
    checkpoint: Annotated[Path | None, typer.Option(help="Checkpoint file for ViT backbones.")] = None,
    data_root: Annotated[Path | None, typer.Option(help="Folder holding the dataset releases.")] = None,
    results: Annotated[Path, typer.Option(help="Folder of experiments and their records.")] = Path("results"),
    experiment: Annotated[str, typer.Option(help="Subfolder of --results for this grid.")] = "default",
    set_: Annotated[list[str] | None, typer.Option("--set", help="Hyper-parameter override key=value.")] = None,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda[:N].")] = "auto",
    precision: Annotated[
        str, typer.Option(help="auto (tf32 on GPUs that have it, else fp32), fp32, tf32 or bf16 (docs/gpu.md).")
    ] = "auto",
    deterministic: Annotated[
        bool, typer.Option("--deterministic", help="Torch's deterministic algorithms: a seed reproduces on a GPU.")
    ] = False,
    executor: Annotated[str, typer.Option(help="inline, pool, submitit (local) or slurm.")] = "inline",
    jobs: Annotated[int, typer.Option(help="Parallel runs: pool workers, or the SLURM array parallelism.")] = 1,
    detach: Annotated[
        bool, typer.Option("--detach", help="submitit/slurm: submit and return; re-run or `bench status` collects.")
    ] = False,
    slurm_partition: Annotated[str | None, typer.Option(help="SLURM partition.")] = None,
    slurm_time: Annotated[int, typer.Option(help="Time limit per run in minutes (slurm, submitit).")] = 240,
    slurm_gpus: Annotated[int | None, typer.Option(help="GPUs per run (slurm).")] = None,
    slurm_cpus: Annotated[int | None, typer.Option(help="CPUs per run (slurm).")] = None,
    slurm_mem_gb: Annotated[float | None, typer.Option(help="Memory per run in GB (slurm).")] = None,
    slurm_account: Annotated[str | None, typer.Option(help="SLURM account.")] = None,
    slurm_qos: Annotated[str | None, typer.Option(help="SLURM QOS.")] = None,
    slurm_array_parallelism: Annotated[
        int | None, typer.Option(help="Array tasks running at once (default: --jobs).")
    ] = None,
    slurm_arg: Annotated[
        list[str] | None,
        typer.Option("--slurm-arg", help="Other submitit/sbatch option key=value, e.g. constraint=a100."),
    ] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the plan and run nothing.")] = False,
    stop_after: Annotated[
        str | None,
        typer.Option(help="Start no run once this much time (e.g. 8m, 1h30m) has passed since the command began "
                     "(inline, pool); run the command again to go on."),
    ] = None,
    save_models: Annotated[
        bool, typer.Option("--save-models", help="Keep what each run trained in <experiment>/models/ (see predict).")
    ] = False,
    plugin: PluginOption = None,
) -> None:
    """Run a grid of methods × datasets × tasks × shots × labels × draws × seeds, resuming what is done."""
    from bench.compute.timing import Deadline, parse_duration

    deadline = Deadline(parse_duration(stop_after) if stop_after is not None else None)
    from bench.compute.device import Numerics, check_precision, expected_precision, precision_changes, run_device_type
    from bench.paths import environment_variable
    from bench.records import store
    from bench.records.claims import live_holder, remove_stale
    from bench.run import grid
    from bench.run.executors import check_executor, execute, parent_device
    from bench.run.runner import recipe_changes
    from bench.run.saved_models import SAVE_MODELS_VARIABLE, lacks_saved_model
    from bench.run.submitit_jobs import SlurmOptions, load_job_ledger

    load_plugins(plugin)
    method_names = METHODS.names() if methods.strip() == "all" else grid.names_in(methods, "--methods")
    check_executor(executor, jobs)
    if stop_after is not None and executor not in ("inline", "pool"):
        raise BenchError("--stop-after needs --executor inline or pool: submitted jobs are bounded by --slurm-time")
    if executor == "submitit" and slurm_gpus is not None:
        raise BenchError("--slurm-gpus is for --executor slurm: local submitit jobs get one GPU each, round-robin")
    # a SLURM parent may sit on a login node: it only checks the device's spelling, and loads nothing on it
    checked_device = parent_device(device, executor)
    runs_on = run_device_type(device, executor, slurm_gpus)
    resolved_budget = grid.resolve_budget(budget, runs_on)
    numerics = Numerics(check_precision(precision), deterministic)
    if detach and executor not in ("submitit", "slurm"):
        raise BenchError("--detach needs --executor submitit or slurm")
    slurm = SlurmOptions(
        partition=slurm_partition, time_min=slurm_time, gpus_per_run=slurm_gpus, cpus_per_run=slurm_cpus,
        mem_gb=slurm_mem_gb, account=slurm_account, qos=slurm_qos, array_parallelism=slurm_array_parallelism,
        extra=key_values(slurm_arg or [], "--slurm-arg"),
    )  # fmt: skip
    if any(METHODS.get(name).uses_backbone for name in method_names):
        BACKBONES.get(backbone)  # an unknown name fails here with the did-you-mean line
    dataset_names, data_root = locate_datasets(grid.names_in(datasets, "--datasets"), data_root)
    check_present(dataset_names, data_root)  # a wrong --data-root fails here, --dry-run included
    planned = grid.expand_grid(
        methods=method_names,
        datasets=dataset_names,
        tasks=grid.names_in(tasks, "--tasks") if tasks is not None else None,
        shots=grid.parse_shots(shots),
        labels=grid.names_in(labels, "--labels") if labels is not None else None,
        seeds=grid.parse_ints(seeds, "--seeds") if seeds else None,
        draws=draws,
        budget=resolved_budget,
        backbone=backbone,
        checkpoint=str(checkpoint.resolve()) if checkpoint else None,
        overrides=grid.parse_overrides(set_ or []),
        eval_split=eval_split,
        data_root=data_root,
    )
    runnable = [p.spec for p in planned if p.skip_reason is None]
    existing = {s.run_id: store.existing_record(results, experiment, s.run_id) for s in runnable}
    statuses = {run_id: record and record.get("status") for run_id, record in existing.items()}
    # a finished record made before its method's defaults changed, or in another precision, is of another
    # recipe: run it again
    expected = expected_precision(precision, runs_on, executor)
    changed = {s.run_id: recipe_changes(existing[s.run_id], s) | precision_changes(existing[s.run_id], expected)
               for s in runnable if statuses[s.run_id] == "ok"}  # fmt: skip
    outdated = [s for s in runnable if changed.get(s.run_id)]
    for spec in outdated:
        statuses[spec.run_id] = "outdated"
    to_run = [s for s in runnable if statuses.get(s.run_id) != "ok"
              or (save_models and lacks_saved_model(existing[s.run_id]))]  # fmt: skip
    skipped = Counter(p.skip_reason for p in planned if p.skip_reason)
    # runs another process holds now: not run here, and waited for after the rest (see ``execute``)
    holders = {s.run_id: live_holder(store.claim_path(results, experiment, s.run_id)) for s in to_run}
    held = {run_id: holder for run_id, holder in holders.items() if holder is not None}

    if dry_run:
        _print_plan(planned, statuses, held, resolved_budget)
        return
    for dataset_name, task_name in dict.fromkeys((s.dataset, s.task) for s in to_run):
        with console.status(f"loading {dataset_name}/{task_name}"):
            load_task(dataset_name, task_name, data_root)  # bad data roots fail here, before any record
    if any(METHODS.get(s.method).uses_backbone for s in to_run):
        from bench.sam.backbones import load_backbone

        with console.status(f"loading backbone {backbone}"):
            # a missing or wrong checkpoint fails here in one line; inline runs reuse the loaded model
            load_backbone(backbone, checkpoint, checked_device)
    if to_run:  # after the checks of the data and the checkpoint, so that a bad input leaves no folder behind
        check_writable(store.runs_folder(results, experiment), results)
        for folder in (store.runs_folder(results, experiment), store.predictions_folder(results, experiment)):
            remove_stale_temporaries(folder)  # half-written files of a grid killed earlier
        # and the claims its killed processes left on runs that are done (the others are taken over by name)
        remove_stale(store.claims_folder(results, experiment), spared={s.run_id for s in to_run})
    submitted = load_job_ledger(results, experiment) if executor in ("submitit", "slurm") else {}
    waiting = sum(1 for s in to_run if s.run_id in submitted)
    console.print(
        f"budget [bold]{resolved_budget}[/bold], precision [bold]{expected or 'auto, per GPU'}[/bold], scored on "
        f"[bold]{eval_split}[/bold]: {len(runnable)} runs planned, "
        f"{len(runnable) - len(to_run)} already done, {len(to_run)} to run, {sum(skipped.values())} skipped",
        highlight=False, soft_wrap=True,
    )  # fmt: skip
    if waiting:
        console.print(f"  {waiting} of them already submitted: collected, not submitted again", highlight=False)
    if held:
        then = "not waited for (--detach)" if detach else "waited for after the rest"
        console.print(f"  {len(held)} of them claimed by other processes: {then}", highlight=False)
    for reason, count in skipped.items():
        console.print(f"  skipped {count}: {reason}", highlight=False)
    if outdated:
        listed = ", ".join(f"{key} {old} → {new}" for key, (old, new) in changed[outdated[0].run_id].items())
        console.print(f"  run again {len(outdated)}: recorded with an older default recipe (e.g. {listed}); "
                      "pass the old values with --set (or --precision) to keep them", highlight=False)  # fmt: skip
    if not to_run:
        console.print("Nothing left to run.")
        return

    failures: list[dict] = []
    queued: list[dict] = []
    not_started: list[dict] = []
    elsewhere: list[dict] = []
    claimed: dict[str, dict] = {}
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with (
        Progress(*columns, console=console, transient=False) as progress,
        environment_variable(SAVE_MODELS_VARIABLE, "1" if save_models else ""),
    ):
        grid = progress.add_task("runs", total=len(to_run))
        bars = ProgressBars(progress)

        def on_done(spec, summary: dict) -> None:
            if summary["status"] in ("queued", "not_started"):
                (queued if summary["status"] == "queued" else not_started).append(summary)
                return
            if summary["status"] == "claimed":  # another process runs it
                claimed[spec.run_id] = summary
                then = "not waited for (--detach)" if detach else "waited for after the rest"
                progress.console.print(f"{spec.run_id}: claimed by {summary['holder']}; {then}", highlight=False)
                return
            claimed.pop(spec.run_id, None)
            progress.advance(grid)
            mark = "[green]ok[/green]" if summary["status"] == "ok" else f"[red]failed[/red]: {summary['error']}"
            if summary.get("elsewhere"):
                mark += " (run by another process)"
                elsewhere.append(summary)
            elif summary.get("taken_from"):
                mark += f" (taken over from {summary['taken_from']}, which is gone)"
            progress.console.print(f"{spec.run_id}: {mark}", highlight=False)
            if summary["status"] != "ok":
                failures.append(summary)

        try:
            execute(
                to_run, results, experiment, data_root, device, executor, jobs,
                on_done=on_done, progress_factory=bars.for_run, plugins=[path.resolve() for path in plugin or []],
                slurm=slurm, detach=detach, numerics=numerics, deadline=deadline,
            )  # fmt: skip
        except OSError as error:  # the results folder filled up or went away mid-grid: stop, keep what is done
            raise BenchError(
                f"could not write to '{store.runs_folder(results, experiment)}' ({error.strerror or error}); "
                "the records written so far are kept: fix it and re-run the command to resume"
            ) from error
    console.print(
        f"{len(to_run) - len(failures) - len(queued) - len(claimed) - len(not_started)} ok, {len(failures)} failed"
        + (f" ({len(elsewhere)} of them run by another process)" if elsewhere else "")
        + (f", {len(not_started)} not started (--stop-after {stop_after} passed: run again to go on)"
           if not_started else "")
        + (f", {len(queued)} queued or running" if queued else "")
        + (f", {len(claimed)} running in other processes" if claimed else "")
        + f"; records in {store.runs_folder(results, experiment)}",
        highlight=False, soft_wrap=True,
    )  # fmt: skip
    if queued:
        arrays = sorted({summary["job_id"].split("_")[0] for summary in queued})
        console.print(
            f"submitted as job{'s' if len(arrays) > 1 else ''} {', '.join(arrays)}; logs in "
            f"{store.experiment_folder(results, experiment) / 'submitit'}. Collect with this command again or "
            f"`bench status --results {results} --experiment {experiment}`",
            highlight=False, soft_wrap=True,
        )  # fmt: skip
    if failures:
        raise typer.Exit(1)


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


def _print_plan(planned, statuses: dict, held: dict, budget: str) -> None:
    table = Table(title=f"Plan (budget {budget})")
    for column in ("method", "dataset", "task", "labels", "shots", "draw", "seed", "state"):
        table.add_column(column)
    for item in planned:
        spec = item.spec
        if item.skip_reason:
            state = f"skip: {item.skip_reason}"
        elif spec.run_id in held:
            state = f"claimed by {held[spec.run_id].describe()}"
        else:
            state = {"ok": "done", "failed": "failed, re-run", "outdated": "older recipe, re-run"}.get(
                statuses.get(spec.run_id) or "", "to run"
            )
        table.add_row(spec.method, spec.dataset, spec.task, spec.labels, spec.shots_label,
                      str(spec.draw), str(spec.seed), state)  # fmt: skip
    console.print(table)
