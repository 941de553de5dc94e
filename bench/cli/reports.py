"""`bench table`, `bench report` and `bench figure`: everything rendered from the records."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from bench.cli.common import PluginOption, app, console, load_plugins, user_errors
from bench.data.samples import safe_name

ExperimentOption = Annotated[
    str | None,
    typer.Option(help="The one experiment to read; default: 'default' (bench run's), else the only one there is."),
]


@app.command()
@user_errors
def table(
    results: Annotated[Path, typer.Option(help="Folder of experiments.")] = Path("results"),
    experiment: ExperimentOption = None,
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
    from bench.records import store
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
    experiment: ExperimentOption = None,
    out: Annotated[Path | None, typer.Option(help="Report folder; default: RESULTS/report.")] = None,
    reference: Annotated[str, typer.Option(help="Reference of fit-time ratios and stats.")] = "prompt-module",
    split: Annotated[
        str | None, typer.Option(help="Records scored on test or val; default: test, or the only split there is.")
    ] = None,
    html: Annotated[
        bool, typer.Option("--html", help="Also write index.html: tables, claims, plots and a browser of every case.")
    ] = False,
    data_root: Annotated[
        Path | None, typer.Option(help="Folder holding the dataset releases (the cases of --html).")
    ] = None,
    stand_ins: Annotated[str, typer.Option(
        help="OURS=PAPER,…: our datasets that stand in for one of the paper's (hc18, acdc, camus), whose numbers "
             "the page's Table 1 shows beside ours; a dataset of the paper's name needs none.")] = "",
    plugin: PluginOption = None,
) -> None:
    """The training-time report, run status, statistics and plots (Markdown, CSV, PNG and PDF); with --html, one
    self-contained page of them that opens from file://, with every test case's image, truth and predictions."""
    from bench.report.build import write_report
    from bench.report.paper import parse_stand_ins

    load_plugins(plugin)
    mapping = parse_stand_ins(stand_ins, "--stand-ins")
    written = write_report(results, out or results / "report", experiment, reference, split, html, data_root,
                           mapping)  # fmt: skip
    console.print(f"wrote {len(written)} files to {written[-1].parent}", highlight=False)


@app.command()
@user_errors
def figure(
    task: Annotated[str, typer.Option(help="The task (structure) to show.")],
    results: Annotated[Path, typer.Option(help="Folder of experiments.")] = Path("results"),
    experiment: ExperimentOption = None,
    dataset: Annotated[str | None, typer.Option(help="Needed if several datasets have the task.")] = None,
    ids: Annotated[
        str | None, typer.Option(help="Comma-separated test-case ids; default: spread over --reference's Dice.")
    ] = None,
    images: Annotated[
        int, typer.Option(min=1, help="How many test images: the middle case of each of as many Dice quantiles.")
    ] = 4,
    reference: Annotated[
        str, typer.Option(help="The method whose column's Dice ranks the cases (else the first column).")
    ] = "prompt-module",
    shots: Annotated[str | None, typer.Option(help="Only runs with this k (or 'all').")] = None,
    labels: Annotated[str | None, typer.Option(help="Only runs with this label regime.")] = None,
    rows: Annotated[
        str, typer.Option(help="'headline': a column per method (its Table 1 headline row); 'all': per row.")
    ] = "headline",
    data_root: Annotated[Path | None, typer.Option(help="Folder holding the dataset releases.")] = None,
    out: Annotated[Path | None, typer.Option(help="Folder; default: RESULTS/report.")] = None,
    split: Annotated[
        str | None, typer.Option(help="Records scored on test or val; default: test, or the only split there is.")
    ] = None,
    plugin: PluginOption = None,
) -> None:
    """The qualitative figure: test images with each method's predicted and the true contour; the cases are
    ranked by the reference method's Dice and one is taken from each quantile (the quartiles for 4 images)."""
    from bench.records import store
    from bench.records.names import Names
    from bench.report.figure import choose_runs, draw_qualitative, mean_dice
    from bench.report.plots import save_figure
    from bench.run import grid

    load_plugins(plugin)
    records = store.require_records(results, experiment, split)
    names = Names(store.runs_frame(records))
    chosen = choose_runs(records, results, task, dataset, shots, labels, names, rows)
    for row in chosen.left_out:
        console.print(f"[yellow]not shown:[/] {row}", highlight=False)
    drawn = draw_qualitative(
        chosen, results, task, names, grid.split_list(ids) if ids else None, images, data_root, reference
    )
    for record in chosen.runs:
        console.print(f"{record['run_id']}: mean Dice {mean_dice(record):.4f}", highlight=False)
    stem = f"qualitative_{safe_name(dataset) + '_' if dataset else ''}{task}{'_all_rows' if rows == 'all' else ''}"
    written = save_figure(drawn, out or results / "report", stem)
    console.print(f"wrote {', '.join(map(str, written))}", highlight=False)

