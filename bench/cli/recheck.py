"""`bench recheck`: re-run a sample of an experiment's records with the current code and compare the Dice."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from bench.cli.common import DataRootOption, PluginOption, ProgressBars, app, console, load_plugins, user_errors
from bench.run.recheck import DEFAULT_TOLERANCE


@app.command()
@user_errors
def recheck(
    experiment: Annotated[str, typer.Option(help="The experiment whose records are re-checked.")],
    runs: Annotated[str | None, typer.Option(help="Comma-separated run ids to re-run.")] = None,
    sample: Annotated[int | None, typer.Option(help="Or: re-run this many finished runs drawn at random.")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the --sample draw.")] = 0,
    shown: Annotated[bool, typer.Option(
        "--shown", help="Or: re-run the runs the results page shows (per Table 1 row and structure, its lowest draw "
                        "and seed).")] = False,
    methods: Annotated[str | None, typer.Option(help="Only runs of these methods (comma-separated).")] = None,
    shots: Annotated[str | None, typer.Option(help="Only runs with these shots (e.g. 10, all).")] = None,
    tolerance: Annotated[
        float, typer.Option(help="Dice points (× 100) a re-run may differ from its record (docs/records.md).")
    ] = DEFAULT_TOLERANCE,
    results: Annotated[Path, typer.Option(help="Folder of experiments and their records.")] = Path("results"),
    scratch: Annotated[
        Path | None, typer.Option(help="Empty folder the re-runs are written to (default: a new one in the cache).")
    ] = None,
    data_root: DataRootOption = None,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda[:N].")] = "auto",
    out: Annotated[Path | None, typer.Option(help="Also write the comparison as Markdown to this file.")] = None,
    keep_predictions: Annotated[bool, typer.Option(
        help="Copy the re-runs' predictions into the experiment (for bench figure and bench report --html); a "
             "re-run that differs from its record is kept marked as a re-run, with its own scores.")] = False,
    resume: Annotated[bool, typer.Option(
        help="Go on with a re-check cut short: re-runs already in --scratch count as done.")] = False,
    plugin: PluginOption = None,
) -> None:
    """Re-run chosen records of an experiment (or N at random) into a scratch folder with the current code, and
    print per run the committed and new Dice, both code revisions and whether they agree within --tolerance."""
    from bench.cli.common import check_writable
    from bench.data.resolved import DatasetPlugins
    from bench.errors import BenchError
    from bench.records import store
    from bench.run import recheck as rechecking
    from bench.run.grid import names_in
    from bench.run.settings import GridSettings

    load_plugins(plugin)
    if tolerance < 0:
        raise BenchError(f"--tolerance takes a number of Dice points ≥ 0, not {tolerance:g}")
    chosen = names_in(runs, "--runs") if runs is not None else ()
    method_names = names_in(methods, "--methods") if methods is not None else ()
    shot_labels = names_in(shots, "--shots") if shots is not None else ()
    records = rechecking.select_records(results, experiment, chosen, sample, seed, method_names, shot_labels, shown)
    if resume and scratch is None:
        raise BenchError("--resume goes on with the re-check in --scratch: name that folder")
    scratch = scratch or rechecking.default_scratch(experiment)
    rechecking.check_scratch(scratch, results, experiment, records, resume)
    datasets = DatasetPlugins.resolve(dict.fromkeys(record["spec"]["dataset"] for record in records), data_root)
    datasets.check_present()
    settings = GridSettings(scratch, experiment, datasets, device)
    if out is not None:
        check_writable(out.parent, out.parent)
    console.print(f"re-running {len(records)} run(s) of {experiment} into {scratch}", highlight=False)
    threads = {record["run_id"]: rechecking.recorded_threads(record) for record in records}
    rows = rechecking.recheck(records, settings, lambda specs: _rerun(specs, settings, threads))
    # the Markdown table the --out file holds: wider than most terminals, so it is printed unwrapped
    console.print(rechecking.markdown_table(rows, tolerance), highlight=False, soft_wrap=True)
    console.print(rechecking.summary_line(rows, tolerance), highlight=False)
    for line in rechecking.notes(rows):
        console.print(line, highlight=False, soft_wrap=True)
    console.print(f"new records in {store.runs_folder(scratch, experiment)}", highlight=False)
    if keep_predictions:
        kept = rechecking.keep_predictions(rows, scratch, results, experiment)
        console.print(f"kept the predictions of {len(kept['identical'])} identical re-run(s) and of "
                      f"{len(kept['re-run'])} other re-run(s), marked as re-runs, in "
                      f"{store.predictions_folder(results, experiment)}", highlight=False)  # fmt: skip
    if out is not None:
        selection = (["--runs", ",".join(record["run_id"] for record in records)] if runs is not None else
                     ["--shown"] if shown else ["--sample", str(sample), "--seed", str(seed)])  # fmt: skip
        selection += [part for flag, value in (("--methods", methods), ("--shots", shots)) if value
                      for part in (flag, ",".join(names_in(value, flag)))]  # fmt: skip
        given = {"--tolerance": tolerance != DEFAULT_TOLERANCE and f"{tolerance:g}", "--data-root": data_root,
                 "--device": device != "auto" and device, "--out": out}  # fmt: skip
        options = [part for flag, value in given.items() if value for part in (flag, str(value))]
        options += ["--keep-predictions"] if keep_predictions else []
        _write_comparison(out, rows, tolerance, experiment, ["--experiment", experiment, *selection, "--results",
                                                              str(results), *options])  # fmt: skip


def _rerun(specs: list, settings, threads: dict[str, int | None]) -> None:
    """Run ``specs`` inline under progress bars, each CPU run with the thread count its record computed with."""
    import torch

    from bench.run.executors import execute

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=False) as progress:
        grid = progress.add_task("re-runs", total=len(specs))
        bars = ProgressBars(progress)

        def on_done(spec, summary: dict) -> None:
            progress.advance(grid)
            progress.console.print(f"{spec.run_id}: {summary['status']}", highlight=False)

        for count, group in _by_thread_count(specs, threads):
            if count is not None and settings.device in ("auto", "cpu"):  # as the record computed
                torch.set_num_threads(count)
            execute(group, settings, on_done=on_done, progress_factory=bars.for_run)


def _write_comparison(out: Path, rows: list, tolerance: float, experiment: str, arguments: list[str]) -> None:
    """The --out file: the comparison, and the command that wrote it (``arguments`` after ``bench recheck``)."""
    from bench.paths import atomic_write
    from bench.run import recheck as rechecking

    with atomic_write(out, "w") as stream:
        command = shlex.join(["bench", "recheck", *arguments])
        stream.write(rechecking.render_markdown(rows, tolerance, experiment, command))
    console.print(f"wrote {out}", highlight=False)


def _by_thread_count(specs: list, threads: dict[str, int | None]) -> list[tuple[int | None, list]]:
    """The specs grouped by the thread count their records computed with, in order of first appearance."""
    groups: dict[int | None, list] = {}
    for spec in specs:
        groups.setdefault(threads[spec.run_id], []).append(spec)
    return list(groups.items())
