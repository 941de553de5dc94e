"""The `bench` command line: ls, run, table (and the data, cache, perf and report commands)."""

from __future__ import annotations

import functools
import sys
import tempfile
import warnings
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Annotated, TypeVar

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from bench.errors import BenchError, hide_dependency_notices
from bench.paths import remove_stale_temporaries
from bench.registry import BACKBONES, DATASETS, METHODS, load_plugin_file

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)
data_app = typer.Typer(no_args_is_help=True, help="Download and check dataset releases.")
cache_app = typer.Typer(no_args_is_help=True, help="Inspect and clear the embedding cache.")
perf_app = typer.Typer()  # its help is the suite's docstring (perf_suite)
app.add_typer(data_app, name="data")
app.add_typer(cache_app, name="cache")
app.add_typer(perf_app, name="perf")
console = Console()
errors = Console(stderr=True)
# click's UsageError, whether typer uses click or its own vendored copy (which exports only the subclass)
_USAGE_ERROR: type[Exception] = typer.BadParameter.__base__
F = TypeVar("F", bound=Callable)
ItemT = TypeVar("ItemT")

REGISTRIES = {"methods": METHODS, "datasets": DATASETS, "backbones": BACKBONES}
PluginOption = Annotated[
    list[Path] | None, typer.Option("--plugin", help="A Python file that registers extra plugins.")
]


def user_errors(command: F) -> F:
    """Turn a BenchError into one red line and exit code 2, never a traceback."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except BenchError as error:
            errors.print(f"[red]error:[/red] {error}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None

    return wrapper  # type: ignore[return-value]


def _load_plugins(plugins: list[Path] | None) -> None:
    for path in plugins or []:
        load_plugin_file(path)


@app.command("ls")
@user_errors
def list_plugins(
    kind: Annotated[str | None, typer.Argument(help="methods, datasets or backbones (default: all)")] = None,
    plugin: PluginOption = None,
) -> None:
    """List registered plugins (built-ins are listed without importing their code)."""
    _load_plugins(plugin)
    if kind is not None and kind not in REGISTRIES:
        raise BenchError(f"bench ls takes methods, datasets or backbones, not '{kind}'")
    for name, registry in REGISTRIES.items():
        if kind in (None, name):
            console.print(f"[bold]{name}[/bold]: {', '.join(registry.names()) or '(none)'}", highlight=False)


def _check_writable(folder: Path, shown_as: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-test-"):
            pass
    except OSError as error:
        raise BenchError(
            f"results folder '{shown_as}' is not writable ({error.strerror}); choose another with --results"
        ) from error


class _ProgressBars:
    """A rich progress display: one bar for the grid and, per run, a transient bar for its epochs/batches."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress

    def for_run(self, _spec) -> Callable[..., Iterator]:
        def track(iterable: Iterable[ItemT], total: int | None = None, description: str = "") -> Iterator[ItemT]:
            if total is None and hasattr(iterable, "__len__"):
                total = len(iterable)  # type: ignore[arg-type]
            task = self.progress.add_task(f"  {description}", total=total)
            try:
                for item in iterable:
                    yield item
                    self.progress.advance(task)
            finally:
                self.progress.remove_task(task)

        return track


@app.command()
@user_errors
def run(
    methods: Annotated[str, typer.Option(help="Comma-separated method names, or 'all'.")] = "all",
    datasets: Annotated[str, typer.Option(help="Comma-separated dataset names.")] = "synthetic",
    tasks: Annotated[str | None, typer.Option(help="Tasks (structures); default: every task.")] = None,
    shots: Annotated[str, typer.Option(help="Training images per run: integers and/or 'all'.")] = "10",
    labels: Annotated[
        str | None, typer.Option(help="mask, box, box-noisy; default: each method's own regimes.")
    ] = None,
    seeds: Annotated[str | None, typer.Option(help="Init seeds; default: the budget's (paper 0,1,2).")] = None,
    draws: Annotated[int | None, typer.Option(help="Support draws per k; default: the budget's (paper 3).")] = None,
    budget: Annotated[str, typer.Option(help="auto (paper on CUDA, else quick), paper or quick.")] = "auto",
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
    executor: Annotated[str, typer.Option(help="inline, pool, submitit (local) or slurm.")] = "inline",
    jobs: Annotated[int, typer.Option(help="Parallel runs: pool workers, or the SLURM array parallelism.")] = 1,
    detach: Annotated[
        bool, typer.Option("--detach", help="submitit/slurm: submit and return; re-run or `bench status` collects.")
    ] = False,
    slurm_partition: Annotated[str | None, typer.Option(help="SLURM partition.")] = None,
    slurm_time: Annotated[int, typer.Option(help="Time limit per run in minutes (slurm, submitit).")] = 240,
    slurm_gpus: Annotated[int | None, typer.Option(help="GPUs per run (slurm, submitit).")] = None,
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
    plugin: PluginOption = None,
) -> None:
    """Run a grid of methods × datasets × tasks × shots × labels × draws × seeds, resuming what is done."""
    from bench import data, store
    from bench import spec as specs
    from bench.executors import SlurmOptions, check_executor, execute, load_job_ledger
    from bench.runner import recipe_changes, resolve_device

    _load_plugins(plugin)
    method_names = METHODS.names() if methods.strip() == "all" else specs.names_in(methods, "--methods")
    resolved_budget = specs.resolve_budget(budget)
    resolve_device(device)
    check_executor(executor, jobs)
    if detach and executor not in ("submitit", "slurm"):
        raise BenchError("--detach needs --executor submitit or slurm")
    slurm = SlurmOptions(
        partition=slurm_partition, time_min=slurm_time, gpus_per_run=slurm_gpus, cpus_per_run=slurm_cpus,
        mem_gb=slurm_mem_gb, account=slurm_account, qos=slurm_qos, array_parallelism=slurm_array_parallelism,
        extra=_key_values(slurm_arg or [], "--slurm-arg"),
    )  # fmt: skip
    if any(METHODS.get(name).uses_backbone for name in method_names):
        BACKBONES.get(backbone)  # an unknown name fails here with the did-you-mean line
    planned = specs.expand_grid(
        methods=method_names,
        datasets=specs.names_in(datasets, "--datasets"),
        tasks=specs.names_in(tasks, "--tasks") if tasks is not None else None,
        shots=specs.parse_shots(shots),
        labels=specs.names_in(labels, "--labels") if labels is not None else None,
        seeds=specs.parse_ints(seeds, "--seeds") if seeds else None,
        draws=draws,
        budget=resolved_budget,
        backbone=backbone,
        checkpoint=str(checkpoint.resolve()) if checkpoint else None,
        overrides=specs.parse_overrides(set_ or []),
        eval_split=eval_split,
    )
    runnable = [p.spec for p in planned if p.skip_reason is None]
    existing = {s.run_id: store.existing_record(results, experiment, s.run_id) for s in runnable}
    statuses = {run_id: record and record.get("status") for run_id, record in existing.items()}
    # a finished record made before its method's defaults changed is of another recipe: run it again
    changed = {s.run_id: recipe_changes(existing[s.run_id], s) for s in runnable if statuses[s.run_id] == "ok"}
    outdated = [s for s in runnable if changed.get(s.run_id)]
    for spec in outdated:
        statuses[spec.run_id] = "outdated"
    to_run = [s for s in runnable if statuses.get(s.run_id) != "ok"]
    skipped = Counter(p.skip_reason for p in planned if p.skip_reason)

    if dry_run:
        _print_plan(planned, statuses, resolved_budget)
        return
    for dataset_name, task_name in dict.fromkeys((s.dataset, s.task) for s in to_run):
        with console.status(f"loading {dataset_name}/{task_name}"):
            data.load_task(dataset_name, task_name, data_root)  # bad data roots fail here, before any record
    if any(METHODS.get(s.method).uses_backbone for s in to_run):
        from bench.backbones import load_backbone

        with console.status(f"loading backbone {backbone}"):
            # a missing or wrong checkpoint fails here in one line; inline runs reuse the loaded model
            load_backbone(backbone, checkpoint, resolve_device(device))
    if to_run:  # after the checks of the data and the checkpoint, so that a bad input leaves no folder behind
        _check_writable(store.runs_folder(results, experiment), results)
        for folder in (store.runs_folder(results, experiment), store.predictions_folder(results, experiment)):
            remove_stale_temporaries(folder)  # half-written files of a grid killed earlier
    submitted = load_job_ledger(results, experiment) if executor in ("submitit", "slurm") else {}
    waiting = sum(1 for s in to_run if s.run_id in submitted)
    console.print(
        f"budget [bold]{resolved_budget}[/bold], scored on [bold]{eval_split}[/bold]: {len(runnable)} runs planned, "
        f"{len(runnable) - len(to_run)} already done, {len(to_run)} to run, {sum(skipped.values())} skipped",
        highlight=False,
    )
    if waiting:
        console.print(f"  {waiting} of them already submitted: collected, not submitted again", highlight=False)
    for reason, count in skipped.items():
        console.print(f"  skipped {count}: {reason}", highlight=False)
    if outdated:
        listed = ", ".join(f"{key} {old} → {new}" for key, (old, new) in changed[outdated[0].run_id].items())
        console.print(f"  run again {len(outdated)}: recorded with an older default recipe (e.g. {listed}); "
                      "pass the old values with --set to keep them", highlight=False)  # fmt: skip
    if not to_run:
        console.print("Nothing left to run.")
        return

    failures: list[dict] = []
    queued: list[dict] = []
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=False) as progress:
        grid = progress.add_task("runs", total=len(to_run))
        bars = _ProgressBars(progress)

        def on_done(spec, summary: dict) -> None:
            if summary["status"] == "queued":
                queued.append(summary)
                return
            progress.advance(grid)
            mark = "[green]ok[/green]" if summary["status"] == "ok" else f"[red]failed[/red]: {summary['error']}"
            progress.console.print(f"{spec.run_id}: {mark}", highlight=False)
            if summary["status"] != "ok":
                failures.append(summary)

        try:
            execute(
                to_run, results, experiment, data_root, device, executor, jobs,
                on_done=on_done, progress_factory=bars.for_run, plugins=[path.resolve() for path in plugin or []],
                slurm=slurm, detach=detach,
            )  # fmt: skip
        except OSError as error:  # the results folder filled up or went away mid-grid: stop, keep what is done
            raise BenchError(
                f"could not write to '{store.runs_folder(results, experiment)}' ({error.strerror or error}); "
                "the records written so far are kept: fix it and re-run the command to resume"
            ) from error
    console.print(
        f"{len(to_run) - len(failures) - len(queued)} ok, {len(failures)} failed"
        + (f", {len(queued)} queued or running" if queued else "")
        + f"; records in {store.runs_folder(results, experiment)}"
    )
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


def _key_values(pairs: list[str], option: str) -> dict[str, str]:
    values = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise BenchError(f"{option} takes key=value, not '{pair}'")
        values[key.strip()] = value.strip()
    return values


@app.command()
@user_errors
def status(
    results: Annotated[Path, typer.Option(help="Folder of experiments and their records.")] = Path("results"),
    experiment: Annotated[str | None, typer.Option(help="One experiment (default: all).")] = None,
    plugin: PluginOption = None,
) -> None:
    """Per method: runs done, failed, queued or running (submitit/slurm jobs) and missing; collects ended jobs."""
    from bench.executors import grid_status

    _load_plugins(plugin)
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


def _print_plan(planned, statuses: dict, budget: str) -> None:
    table = Table(title=f"Plan (budget {budget})")
    for column in ("method", "dataset", "task", "labels", "shots", "draw", "seed", "state"):
        table.add_column(column)
    for item in planned:
        spec = item.spec
        if item.skip_reason:
            state = f"skip: {item.skip_reason}"
        else:
            state = {"ok": "done", "failed": "failed, re-run", "outdated": "older recipe, re-run"}.get(
                statuses.get(spec.run_id) or "", "to run"
            )
        table.add_row(spec.method, spec.dataset, spec.task, spec.labels, spec.shots_label,
                      str(spec.draw), str(spec.seed), state)  # fmt: skip
    console.print(table)


@app.command()
@user_errors
def table(
    results: Annotated[Path, typer.Option(help="Folder of experiments.")] = Path("results"),
    experiment: Annotated[str | None, typer.Option(help="One experiment; default: all.")] = None,
    format: Annotated[str, typer.Option("--format", help="md, latex or csv.")] = "md",
    metric: Annotated[str, typer.Option(help="dice or hd95.")] = "dice",
    stats: Annotated[
        bool, typer.Option("--stats", help="Mark cells that differ significantly from --reference.")
    ] = False,
    reference: Annotated[str, typer.Option(help="Reference method of --stats.")] = "prompt-module",
    split: Annotated[
        str | None, typer.Option(help="Records scored on test or val; default: test, or the only split there is.")
    ] = None,
    out: Annotated[Path | None, typer.Option(help="Write to this file instead of printing.")] = None,
) -> None:
    """Table 1: mean ± std over seeds × draws, grouped by method type and by dataset and structure."""
    from bench import store
    from bench.report.table import render_table

    records = store.require_records(results, experiment, split)
    cases = store.cases_frame(records) if stats else None
    runs = store.runs_frame(records)
    text = render_table(runs, metric=metric, fmt=format, cases=cases, reference=reference)
    if out:
        out.write_text(text)
        console.print(f"wrote {out}")
    else:
        typer.echo(text)


@app.command()
@user_errors
def report(
    results: Annotated[Path, typer.Option(help="Folder of experiments.")] = Path("results"),
    experiment: Annotated[str | None, typer.Option(help="One experiment; default: all.")] = None,
    out: Annotated[Path | None, typer.Option(help="Report folder; default: RESULTS/report.")] = None,
    reference: Annotated[str, typer.Option(help="Reference of fit-time ratios and stats.")] = "prompt-module",
    split: Annotated[
        str | None, typer.Option(help="Records scored on test or val; default: test, or the only split there is.")
    ] = None,
) -> None:
    """The training-time report, run status, statistics and plots (Markdown, CSV, PNG and PDF)."""
    from bench.report.build import write_report

    written = write_report(results, out or results / "report", experiment, reference, split)
    console.print(f"wrote {len(written)} files to {written[-1].parent}", highlight=False)


@app.command()
@user_errors
def figure(
    task: Annotated[str, typer.Option(help="The task (structure) to show.")],
    results: Annotated[Path, typer.Option(help="Folder of experiments.")] = Path("results"),
    experiment: Annotated[str | None, typer.Option(help="One experiment; default: all.")] = None,
    dataset: Annotated[str | None, typer.Option(help="Needed if several datasets have the task.")] = None,
    ids: Annotated[str | None, typer.Option(help="Comma-separated test-case ids; default: drawn.")] = None,
    images: Annotated[int, typer.Option(min=1, help="How many test images to draw.")] = 4,
    seed: Annotated[int, typer.Option(help="Seed of the drawn images.")] = 0,
    shots: Annotated[str | None, typer.Option(help="Only runs with this k (or 'all').")] = None,
    labels: Annotated[str | None, typer.Option(help="Only runs with this label regime.")] = None,
    data_root: Annotated[Path | None, typer.Option(help="Folder holding the dataset releases.")] = None,
    out: Annotated[Path | None, typer.Option(help="Folder; default: RESULTS/report.")] = None,
    split: Annotated[
        str | None, typer.Option(help="Records scored on test or val; default: test, or the only split there is.")
    ] = None,
) -> None:
    """The qualitative figure: test images with each method's predicted and the true contour."""
    from bench import spec as specs
    from bench import store
    from bench.report.figure import qualitative_figure
    from bench.report.plots import save_figure

    records = store.require_records(results, experiment, split)
    chosen = specs.split_list(ids) if ids else None
    drawn = qualitative_figure(
        records, results, task, dataset, chosen, images, seed, shots, labels, data_root
    )
    stem = f"qualitative_{dataset + '_' if dataset else ''}{task}"
    written = save_figure(drawn, out or results / "report", stem)
    console.print(f"wrote {', '.join(map(str, written))}", highlight=False)


DataRootOption = Annotated[
    Path | None, typer.Option(help="Folder holding the dataset releases (default: $BENCH_DATA or the cache).")
]


@data_app.command("download")
@user_errors
def data_download(
    dataset: Annotated[str, typer.Argument(help="hc18 (downloaded), camus or acdc (registration needed).")],
    data_root: DataRootOption = None,
) -> None:
    """Download HC18 (resumable, checksum-verified), or say how to get CAMUS and ACDC."""
    from bench import download

    download.download(dataset, data_root, console)


@data_app.command("check")
@user_errors
def data_check(
    dataset: Annotated[str, typer.Argument(help="A dataset name, e.g. hc18.")],
    data_root: DataRootOption = None,
) -> None:
    """Validate a release and print what was found, excluded and split; exit 2 when it is not usable."""
    from bench import download

    download.check(dataset, data_root, console)


@cache_app.command("info")
@user_errors
def cache_info() -> None:
    """Per backbone: how many image embeddings are cached and their size on disk."""
    from bench.embedding_cache import cache_usage, embeddings_root

    usage = cache_usage()
    if not usage:
        console.print(f"no embeddings cached under {embeddings_root()}", highlight=False)
        return
    table = Table(title=f"Embedding cache: {embeddings_root()}")
    for column in ("backbone", "embeddings", "size on disk", "checkpoint × preprocessing versions"):
        table.add_column(column)
    for entry in usage:
        size = f"{entry.bytes / 2**20:.1f} MiB"
        table.add_row(entry.backbone, str(entry.embeddings), size, str(entry.variants))
    console.print(table)


@cache_app.command("clear")
@user_errors
def cache_clear(
    backbone: Annotated[str | None, typer.Option(help="Only this backbone (default: all).")] = None,
) -> None:
    """Delete cached image embeddings to free the disk; they are re-encoded when next needed."""
    from bench.embedding_cache import clear_cache

    freed = clear_cache(backbone)
    count, size = sum(entry.embeddings for entry in freed), sum(entry.bytes for entry in freed)
    scope = f"backbone {backbone}" if backbone else "all backbones"
    console.print(f"removed {count} embeddings ({size / 2**20:.1f} MiB) of {scope}", highlight=False)


@perf_app.callback(invoke_without_command=True)
@user_errors
def perf_suite(
    context: typer.Context,
    out: Annotated[Path, typer.Option(help="The Markdown report to write.")] = Path("results/perf.md"),
    data_root: DataRootOption = None,
    dataset: Annotated[
        str | None, typer.Option(help="Default: hc18 when the data root holds it, else synthetic.")
    ] = None,
    task: Annotated[str | None, typer.Option(help="Default: hc18's head, synthetic's ellipse, else the first.")] = None,
    shots: Annotated[int, typer.Option(min=1, help="Training images of every run.")] = 10,
    epochs: Annotated[int, typer.Option(min=1, help="Epochs of every trained method (quick budget otherwise).")] = 5,
    backbone: Annotated[
        str | None, typer.Option(help="SAM-family backbone; default litemedsam (tiny-sam-test with --tiny).")
    ] = None,
    checkpoint: Annotated[Path | None, typer.Option(help="Checkpoint file for ViT backbones.")] = None,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda[:N].")] = "auto",
    tiny: Annotated[
        bool, typer.Option("--tiny", help="Tests: random tiny backbone, tiny inputs; every section in seconds.")
    ] = False,
) -> None:
    """Speed and memory benchmarks; without a command, the whole suite in one Markdown report.

    The suite: encoding throughput, a cold vs a warm embedding cache, fit time per method, tightness-loss memory
    and peak memory per method, written to --out; about 10 minutes on a 2-core CPU.
    """
    if context.invoked_subcommand is not None:
        return
    from bench.perf import SECTIONS, check_inputs, render_report, run_suite

    settings = _suite_settings(out, data_root, dataset, task, shots, epochs, backbone, checkpoint, device, tiny)
    _check_report_path(out)
    # before the progress display, so that a bad data root, checkpoint or --shots ends in one line and nothing else
    with console.status(f"loading {settings.dataset}/{settings.task} and backbone {settings.backbone}"):
        check_inputs(settings)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=False) as progress:
        sections = progress.add_task("perf", total=len(SECTIONS))

        def on_section(number: int, title: str) -> None:
            progress.update(sections, completed=number - 1, description=f"{number}. {title}")

        result = run_suite(settings, _ProgressBars(progress).for_run, on_section)
        progress.update(sections, completed=len(SECTIONS), description="perf")
    from bench.paths import atomic_write

    with atomic_write(out, "w") as stream:
        stream.write(render_report(result))
    for name, seconds in result.section_seconds.items():
        console.print(f"  {name}: {seconds:.1f} s", highlight=False)
    console.print(f"wrote {out}", highlight=False)


def _suite_settings(
    out: Path, data_root: Path | None, dataset: str | None, task: str | None, shots: int, epochs: int,
    backbone: str | None, checkpoint: Path | None, device: str, tiny: bool,
):  # fmt: skip
    """The suite's settings from the options, every name checked; the command line that reproduces them."""
    import shlex

    from bench.paths import default_data_root
    from bench.perf import SuiteSettings, default_dataset
    from bench.runner import resolve_device

    root = (data_root or default_data_root()).expanduser().resolve()
    if dataset is None:
        dataset, default_task = default_dataset(root)
        task = task or default_task
    tasks = DATASETS.get(dataset).tasks  # an unknown name fails here with the did-you-mean line
    task = task or tasks[0]
    if task not in tasks:
        raise BenchError(f"dataset '{dataset}' has no task '{task}'; its tasks are {', '.join(tasks)}")
    backbone = backbone or ("tiny-sam-test" if tiny else "litemedsam")
    BACKBONES.get(backbone)
    resolved_device = str(resolve_device(device))
    words = ["bench", "perf", "--out", str(out), "--dataset", dataset, "--task", task]
    if DATASETS.get(dataset).needs_data_root:
        words += ["--data-root", str(root)]
    words += ["--shots", str(shots), "--epochs", str(epochs), "--backbone", backbone]
    words += ["--checkpoint", str(checkpoint)] if checkpoint else []
    words += ["--device", resolved_device] + (["--tiny"] if tiny else [])
    sizes = {"encode_images": 2, "encode_repeats": 1, "loss_size": 40, "loss_batch": 2, "loss_repeats": 1}
    return SuiteSettings(
        dataset=dataset, task=task, data_root=root, shots=shots, epochs=epochs, backbone=backbone,
        checkpoint=checkpoint, device=resolved_device, tiny=tiny, command=shlex.join(words),
        **(sizes if tiny else {}),
    )  # fmt: skip


def _check_report_path(out: Path) -> None:
    """Fail before minutes of measuring, not after, when the report could not be written."""
    if out.is_dir():
        raise BenchError(f"--out '{out}' is a folder; name the report file, e.g. {out / 'perf.md'}")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out.parent, prefix=".write-test-"):
            pass
    except OSError as error:
        raise BenchError(f"cannot write the report '{out}' ({error.strerror}); choose another with --out") from error


def _perf_backbone(backbone: str, checkpoint: Path | None, device: str):
    from bench.backbones import load_backbone
    from bench.runner import resolve_device

    return load_backbone(backbone, checkpoint, resolve_device(device))


@perf_app.command("encode")
@user_errors
def perf_encode(
    backbone: Annotated[str, typer.Option(help="Backbone to time.")] = "litemedsam",
    checkpoint: Annotated[Path | None, typer.Option(help="Checkpoint file for ViT backbones.")] = None,
    images: Annotated[int, typer.Option(min=1, help="Images encoded per repeat.")] = 16,
    size: Annotated[int, typer.Option(min=8, help="Side of the square test images (HC18: 640).")] = 640,
    batch_size: Annotated[int | None, typer.Option(min=1, help="Default: the backbone's.")] = None,
    repeats: Annotated[int, typer.Option(min=1, help="Alternating repeats; the median is reported.")] = 3,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda[:N].")] = "auto",
) -> None:
    """Images/s of the harness's encoding path vs a bare image_encoder forward on the same batches."""
    from bench.perf import encode_benchmark

    model = _perf_backbone(backbone, checkpoint, device)
    result = encode_benchmark(model, images, (size, size), batch_size, repeats)
    console.print("\n".join(result.lines()), highlight=False)


@perf_app.command("decode")
@user_errors
def perf_decode(
    backbone: Annotated[str, typer.Option(help="Backbone to time.")] = "litemedsam",
    checkpoint: Annotated[Path | None, typer.Option(help="Checkpoint file for ViT backbones.")] = None,
    images: Annotated[int, typer.Option(min=1, help="Images (one box each) per repeat.")] = 16,
    repeats: Annotated[int, typer.Option(min=1, help="Alternating repeats; the median is reported.")] = 3,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda[:N].")] = "auto",
) -> None:
    """Images/s of batched mask decoding (one box per image) vs decoding the images one at a time."""
    from bench.perf import decode_benchmark

    result = decode_benchmark(_perf_backbone(backbone, checkpoint, device), images, repeats)
    console.print("\n".join(result.lines()), highlight=False)


@perf_app.command("loss")
@user_errors
def perf_loss(
    size: Annotated[int, typer.Option(min=2, help="Side of the square probability maps (HC18: 640).")] = 640,
    batch: Annotated[int, typer.Option(min=1, help="Maps per batch (the paper's batch: 4).")] = 4,
    box_fraction: Annotated[float, typer.Option(help="Side of the centred square box, as a fraction.")] = 0.6,
    repeats: Annotated[int, typer.Option(min=1, help="Timed repeats; the median is reported.")] = 5,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda[:N].")] = "cpu",
) -> None:
    """Peak memory and time of the tightness prior: row/column sums vs one full-size mask per band."""
    from bench.perf_loss import tightness_benchmark

    result = tightness_benchmark(size, batch, box_fraction, repeats, device)
    console.print("\n".join(result.lines()), highlight=False)


def _one_line_warning(message, category, filename, lineno, line=None) -> str:
    """Warnings the user should see (a skipped record, an excluded file) as one line, without our source."""
    return f"warning: {message}\n"


def main() -> None:
    hide_dependency_notices()
    warnings.formatwarning = _one_line_warning
    try:
        exit_code = app(standalone_mode=False)
    except _USAGE_ERROR as error:  # a malformed option value: one line, like every other user error
        if not sys.argv[1:] or type(error).__name__ == "NoArgsIsHelpError":
            error.show()  # a bare command shows its help
        else:
            command = f"{error.ctx.command_path}: " if error.ctx else ""
            errors.print(f"[red]error:[/red] {command}{error.format_message()}", highlight=False, soft_wrap=True)
        exit_code = 2
    except typer.Abort:
        errors.print("[red]interrupted[/red]; finished runs are recorded, re-run the command to resume")
        exit_code = 130
    sys.exit(exit_code or 0)
