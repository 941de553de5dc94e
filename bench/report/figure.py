"""The qualitative figure, like the paper's Fig. 2: test images, one column per method, each method's
predicted contour over the image with the ground-truth contour in another colour.

Predictions come from the files the runner saves beside the records (``store.prediction_path``: every
test case, binarised; ``bench.records.predictions``), images and ground truth from the dataset plugin. By default
(``rows="headline"``) one run per method is shown: one of its Table 1 headline row (``rows.headline``: no
``--set`` overrides, its default label regime — boxes for the prompt module —, its best budget), with the
most training samples (all data before any k), then the lowest draw and seed. With ``rows="all"`` every
Table 1 row gets a column (its lowest draw and seed), in the table's order, so label regimes, budgets and
``--set`` variants of one method can be compared by eye. ``shots`` and ``labels`` narrow the choice. Each
column's title names its run — labels, k, budget, seed and support draw, and its overrides — and its mean
Dice over all its test cases, so the cases shown can be read against it. The cases (rows) follow a stated
rule (``choose_cases``): the reference method's column ranks the cases that have saved predictions by Dice
and the figure takes the middle of each of ``images`` equal parts — with 4 images, one case per quartile,
from worst to best. A row whose run has no predictions file (made on a machine whose ``predictions/`` did
not come back) is named under the legend rather than dropped.
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import NamedTuple

import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from bench.data.dataset import load_task
from bench.errors import BenchError
from bench.records.names import GROUP_ORDER, Names, shots_sort_key, shots_text
from bench.records.predictions import kept_ids, load_predictions, rerun_note, with_kept_scores
from bench.records.rows import budget_rank, labels_rank
from bench.records.spec import shots_label
from bench.records.store import prediction_path, record_split, runs_frame, variant_text
from bench.report.stats import DEFAULT_REFERENCE

DEFAULT_IMAGES = 4
PANEL_INCHES = 2.3
TRUTH_COLOUR = "#ffd60a"  # yellow, dashed: visible on grey-scale images and distinct from the prediction
PREDICTION_COLOUR = "#ff2d55"
ROW_CHOICES = ("headline", "all")
TITLE_CHARS = 30  # about what a PANEL_INCHES-wide column holds at the titles' font size


def _rank(record: dict, names: Names) -> tuple:
    spec = record["spec"]
    most_samples = -(float("inf") if spec["shots"] is None else spec["shots"])
    return (bool(spec.get("overrides")), labels_rank(spec["labels"], names.default_labels(spec["method"])),
            budget_rank(spec["budget"]), most_samples, spec["draw"], spec["seed"], record["run_id"])  # fmt: skip


def _matches_shots(record: dict, shots: str) -> bool:
    value = record["spec"]["shots"]
    return shots == shots_label(value)


def _method_order(method: str, names: Names) -> tuple:
    info = names.method(method)
    return (GROUP_ORDER.index(info.group), info.display.lower(), method)


def _row_key(record: dict) -> tuple:
    """The Table 1 row of a run (``rows.ROW_KEYS``), ordered as the table orders a method's rows."""
    spec = record["spec"]
    return (labels_rank(spec["labels"]), shots_sort_key(shots_label(spec["shots"])), budget_rank(spec["budget"]),
            spec.get("backbone") or "", variant_text(spec.get("overrides")))  # fmt: skip


class ChosenRuns(NamedTuple):
    """The runs a qualitative figure shows, and what it had to leave out."""

    dataset: str
    runs: list[dict]
    # one phrase per Table 1 row (per method with rows="headline") whose best run has no predictions file:
    # left out, or, for a method's headline, stood in for by its next run that has one
    left_out: list[str]


def choose_runs(
    records: list[dict],
    results: Path,
    task: str,
    dataset: str | None = None,
    shots: str | None = None,
    labels: str | None = None,
    names: Names | None = None,
    rows: str = "headline",
) -> ChosenRuns:
    """One finished run with a predictions file per method (per Table 1 row with ``rows="all"``), in the
    table's order (by the records' ``names``, read from ``records`` when not given), and the rows whose best
    run has none — runs made elsewhere (e.g. on a lent GPU) whose predictions did not come back."""
    if rows not in ROW_CHOICES:
        raise BenchError(f"unknown --rows '{rows}'; choose one of {', '.join(ROW_CHOICES)}")
    done = [r for r in records if r.get("status") == "ok"]
    finished = [r for r in done if r["spec"]["task"] == task and dataset in (None, r["spec"]["dataset"])]
    datasets = sorted({r["spec"]["dataset"] for r in finished})
    if not datasets:
        known = sorted({f"{r['spec']['dataset']}/{r['spec']['task']}" for r in done})
        where = f" in {dataset}" if dataset else ""
        finished_tasks = ", ".join(known) or "none"
        raise BenchError(
            f"no finished runs of task '{task}'{where} in '{results}' (finished: {finished_tasks})"
        )
    if len(datasets) > 1:
        raise BenchError(f"task '{task}' has runs in {', '.join(datasets)}; choose one with --dataset")
    finished = [
        r for r in finished
        if (shots is None or _matches_shots(r, shots)) and labels in (None, r["spec"]["labels"])
    ]  # fmt: skip
    saved = [r for r in finished if prediction_path(results, r["experiment"], r["run_id"]).exists()]
    if not saved:
        raise BenchError(
            f"none of the {len(finished)} matching finished runs of {datasets[0]}/{task} has a predictions"
            " file (runs recorded before predictions were saved must be run again)"
        )
    names = names or Names(runs_frame(records))
    # a file of the older layout keeps a few cases only: a method's run with every case kept goes first, so that
    # the figure's cases are drawn from the whole test split
    complete = {record["run_id"] for record in saved if kept_ids(prediction_path(
        results, record["experiment"], record["run_id"])) >= {case["id"] for case in record["cases"]}}  # fmt: skip

    def column(record: dict) -> tuple:
        return _method_order(record["spec"]["method"], names), _row_key(record) if rows == "all" else ()

    best: dict[tuple, dict] = {}
    chosen: dict[tuple, dict] = {}
    ranked = sorted(finished, key=lambda record: _rank(record, names))
    for record in ranked:
        best.setdefault(column(record), record)
    saved_ids = {record["run_id"] for record in saved}
    for kept in (complete, saved_ids):  # then a run with some cases kept
        for record in ranked:
            if record["run_id"] in kept:
                chosen.setdefault(column(record), record)
    left_out = []
    for key in sorted(best):
        wanted, shown = best[key], chosen.get(key)
        why = "some cases kept" if wanted["run_id"] in saved_ids else "no predictions file"
        if shown is None:
            left_out.append(f"{_row_text(wanted, names)} ({why})")
        elif _row_key(shown) != _row_key(wanted):
            left_out.append(f"{_row_text(wanted, names)} ({why}; {_row_text(shown, names)} shown)")
    return ChosenRuns(datasets[0], [chosen[key] for key in sorted(chosen)], left_out)


def choose_cases(
    available: list[str], ids: list[str] | None, count: int, ranking: dict[str, float], ranked_by: str
) -> tuple[list[str], str]:
    """The cases to show and the rule that chose them, in a sentence: the given ``ids`` (each must have saved
    predictions), else ``count`` of the ``available`` cases spread over ``ranking`` (case → Dice of the
    column named ``ranked_by``): ranked from worst to best, the middle case of each of ``count`` equal parts
    (the quartiles for 4), so the figure shows the spread of that column's results rather than whichever
    cases come first."""
    if ids:
        unknown = [case for case in ids if case not in available]
        if unknown:
            raise BenchError(
                f"no saved predictions of {', '.join(unknown)} in every chosen run;"
                f" saved: {', '.join(available) or 'none'}"
            )
        return list(ids), "Cases chosen by id (--ids)."
    if not available:
        raise BenchError("the chosen runs have no saved test case in common")
    ranked = sorted(available, key=lambda case: (ranking.get(case, float("nan")), case))
    size = min(count, len(ranked))
    chosen = [ranked[int((part + 0.5) * len(ranked) / size)] for part in range(size)]
    parts = {4: "quartile", 3: "tercile", 2: "half"}.get(size, f"{size}-quantile")
    rule = (f"Cases: the {len(ranked)} test cases with saved predictions ranked by {ranked_by}'s Dice, one from the"
            f" middle of each {parts}, worst first.")  # fmt: skip
    return chosen, rule


def reference_column(runs: list[dict], reference: str, names: Names) -> int:
    """The column whose Dice ranks the cases: the ``reference`` method's best-ranked run (its headline row's
    with ``rows="headline"``), else the first column."""
    mine = [i for i, record in enumerate(runs) if record["spec"]["method"] == reference]
    return min(mine, key=lambda i: _rank(runs[i], names)) if mine else 0


def _contour(ax, mask: np.ndarray, colour: str, style: str) -> None:
    if mask.any() and not mask.all():  # a constant mask has no contour (matplotlib would warn)
        ax.contour(mask.astype(np.float32), levels=[0.5], colors=[colour], linewidths=1.3, linestyles=style)


def _panel(ax, image: np.ndarray, truth: np.ndarray, prediction: np.ndarray | None = None) -> None:
    ax.imshow(image, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
    if prediction is not None:
        _contour(ax, prediction, PREDICTION_COLOUR, "solid")
    _contour(ax, truth, TRUTH_COLOUR, "dashed")  # on top: a perfect prediction still shows both
    ax.set_xticks([])
    ax.set_yticks([])


def _config(record: dict, names: Names) -> tuple[str, list[str], str]:
    """A run's method display name, its row ("mask", "k=10", "quick") and its seed and draw."""
    spec = record["spec"]
    info = names.method(spec["method"])
    k = shots_text(shots_label(spec["shots"]), info.training_free)
    # a training-free run has no budget, as Table 1 shows it ("–"): the one it was run under changes nothing
    budget = "budget –" if info.training_free else spec["budget"]
    config = ([spec["labels"]] if info.shows_labels else []) + ([] if k == "–" else [f"k={k}"]) + [budget]
    return info.display, config, f"seed {spec['seed']}" + ("" if k == "–" else f", draw {spec['draw']}")


def _row_text(record: dict, names: Names) -> str:
    """A run's Table 1 row on one line: "UNet (mask, k=All, quick)"."""
    display, config, _ = _config(record, names)
    overrides = record["spec"].get("overrides")
    return f"{display} ({', '.join(config)}{'; ' + variant_text(overrides) if overrides else ''})"


def mean_dice(record: dict) -> float:
    """A run's mean Dice over all its test cases, as Table 1 averages it."""
    return float(np.mean([case["dice"] for case in record["cases"]]))


def _title(record: dict, names: Names) -> str:
    """The column's run: "UNet" / "mask, k=10, quick" / "seed 0, draw 1" / "mean Dice 0.87 over 335 cases"
    (and its --set overrides)."""
    display, config, run = _config(record, names)
    lines = [display, ", ".join(config), run, f"mean Dice {mean_dice(record):.2f} over {len(record['cases'])} cases"]
    note = rerun_note(record)
    lines += textwrap.wrap(note, TITLE_CHARS) if note else []
    overrides = record["spec"].get("overrides")
    # wrapped at the commas: one long "key=value, key=value" line would run past the column (and the figure)
    variant = textwrap.wrap(f"[{variant_text(overrides)}]", TITLE_CHARS, break_on_hyphens=False)
    return "\n".join(lines + (variant if overrides else []))


def qualitative_figure(
    records: list[dict],
    results: Path,
    task: str,
    dataset: str | None = None,
    ids: list[str] | None = None,
    images: int = DEFAULT_IMAGES,
    shots: str | None = None,
    labels: str | None = None,
    data_root: Path | None = None,
    rows: str = "headline",
    reference: str = DEFAULT_REFERENCE,
) -> Figure:
    """Rows: test images; columns: the image with its ground truth, then one per method (per Table 1 row
    with ``rows="all"``)."""
    names = Names(runs_frame(records))
    chosen = choose_runs(records, results, task, dataset, shots, labels, names, rows)
    return draw_qualitative(chosen, results, task, names, ids, images, data_root, reference)


def draw_qualitative(
    chosen: ChosenRuns,
    results: Path,
    task: str,
    names: Names,
    ids: list[str] | None = None,
    images: int = DEFAULT_IMAGES,
    data_root: Path | None = None,
    reference: str = DEFAULT_REFERENCE,
) -> Figure:
    """The figure of ``chosen`` runs, its cases ranked by the ``reference`` method's column (its headline
    run; the first column when it has none); the rule that chose the cases and the rows it left out are
    said under the legend."""
    dataset = chosen.dataset
    paths = [prediction_path(results, r["experiment"], r["run_id"]) for r in chosen.runs]
    # a run whose kept masks are a re-run's is shown with the re-run's scores, which go with those masks
    runs = [with_kept_scores(record, path) for record, path in zip(chosen.runs, paths, strict=True)]
    predictions = [load_predictions(path) for path in paths]
    dice_by_case = [{c["id"]: c["dice"] for c in record["cases"]} for record in runs]
    common = sorted(set.intersection(*(set(p) for p in predictions)))
    ranker = reference_column(runs, reference, names)
    cases, rule = choose_cases(common, ids, images, dice_by_case[ranker], _row_text(runs[ranker], names))
    split = record_split(runs[0])  # the caller passes the records of one split (store.of_split)
    samples = load_task(dataset, task, data_root).by_id(split)
    missing = [case for case in cases if case not in samples]
    if missing:
        raise BenchError(f"{', '.join(missing)} not in the {split} split of {dataset}/{task}: the split has changed")

    columns = 1 + len(runs)
    figure = Figure(figsize=(PANEL_INCHES * columns, PANEL_INCHES * len(cases) + 0.6), layout="constrained")
    axes = figure.subplots(len(cases), columns, squeeze=False)
    for row, case in enumerate(cases):
        sample = samples[case]
        _panel(axes[row, 0], sample.image, sample.mask)
        axes[row, 0].set_ylabel(case)
        for column, (record, predicted, dices) in enumerate(zip(runs, predictions, dice_by_case, strict=True), 1):
            ax = axes[row, column]
            mask = predicted[case]
            if mask.shape != sample.mask.shape:
                raise BenchError(f"saved prediction of {case} in {record['run_id']} has shape {mask.shape},"
                                 f" the image {sample.mask.shape}: the dataset has changed")  # fmt: skip
            _panel(ax, sample.image, sample.mask, mask)
            dice = dices.get(case)
            if dice is not None:
                ax.text(0.03, 0.97, f"Dice {dice:.2f}", transform=ax.transAxes, va="top", fontsize=8,
                        color="white", bbox={"facecolor": "black", "alpha": 0.55, "pad": 1.5, "linewidth": 0})
    # a long dataset name (e.g. "CAMUS 2CH ED (224x224 resized copy) LV") would run past the figure's left edge
    task_lines = textwrap.wrap(names.task_label(dataset, task), TITLE_CHARS)
    axes[0, 0].set_title("\n".join([*task_lines, "image + ground truth"]), fontsize=9)
    for column, record in enumerate(runs, start=1):
        axes[0, column].set_title(_title(record, names), fontsize=9)
    handles = [
        Line2D([], [], color=TRUTH_COLOUR, linestyle="--", label="ground truth"),
        Line2D([], [], color=PREDICTION_COLOUR, label="prediction (probability > 0.5)"),
    ]
    # the rows left out are said in the figure itself (as the legend's title, which the layout makes room
    # for): a committed PNG must not look like the whole table
    notes = [rule] + (["Not shown: " + "; ".join(chosen.left_out) + "."] if chosen.left_out else [])
    note = "\n".join(textwrap.fill(text, TITLE_CHARS * columns) for text in notes)
    figure.legend(handles=handles, loc="outside lower center", ncols=2, frameon=False, title=note, title_fontsize=8)
    return figure
