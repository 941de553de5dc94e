"""How runs vary with the support draw and the structure's size: the report's diagnostic tables and figure.

* ``per_draw_table``: mean ± std over seeds for every support draw of each k-shot configuration, and the
  worst draw — a draw that fails shows here, where Table 1's mean over seeds × draws averages it away;
* ``dice_by_size_table`` / ``dice_versus_size``: per-case Dice against the structure's tight-box area
  (``truth_box_area``, a fraction of the image, stored with each case by the runner), per structure.

What training did (the logged curves, the support images' sizes) is ``bench.report.training_plots``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from bench.records.names import GROUP_ORDER, Names
from bench.records.rows import one_line, row_order, with_row_names
from bench.report.plots import DPI, LEGEND_WIDTH, PANEL_HEIGHT, PANEL_WIDTH, add_legend, row_styles

CONFIG = ["method", "variant", "labels", "shots", "budget", "backbone", "dataset", "task"]
SIZE_BINS = ("small", "medium", "large")  # terciles of the structure's box area over one structure's cases
SIZE_EDGES = "tercile edges [box % of image]"
LEGEND_FONT = 7  # a model search's configurations: many, long labels


def with_configuration(frame: pd.DataFrame, one_line_labels: bool = True, names: Names | None = None) -> pd.DataFrame:
    """``frame`` with ``rows.with_row_names``'s columns and each row's Table 1 row label as ``configuration``
    ("Prompt module (ours) · box · k=10 · paper", with its --set variant): on one line for tables, on two
    where a variant makes it long for a legend. ``names``: those of the records ``frame`` was aggregated from
    (an aggregate lacks their descriptions)."""
    frame = with_row_names(frame, names or Names(frame))
    return frame.assign(configuration=frame["row_label"].map(one_line) if one_line_labels else frame["row_label"])


def _order(frame: pd.DataFrame) -> list[str]:
    """The configurations of a ``with_configuration`` frame in Table 1's order."""
    return row_order(frame.assign(row_label=frame["configuration"]), GROUP_ORDER)


def panel_grid(rows: int, columns: int, legend_lines: int, panel: tuple[float, float] = (PANEL_WIDTH, PANEL_HEIGHT),
               ) -> tuple[Figure, np.ndarray]:  # fmt: skip
    """A figure of ``rows`` × ``columns`` panels with a legend of ``legend_lines`` lines on its right."""
    legend_height = 0.19 * LEGEND_FONT / 8 * legend_lines + 0.5
    size = (panel[0] * columns + LEGEND_WIDTH, max(panel[1] * rows, legend_height))
    figure = Figure(figsize=size, layout="constrained", dpi=DPI)
    return figure, figure.subplots(rows, columns, squeeze=False)


def _finished_k_shot(runs: pd.DataFrame) -> pd.DataFrame:
    frame = runs[(runs["status"] == "ok") & runs["dice"].notna() & (runs["shots"] != "all")]
    return Names(runs).annotate(frame) if not frame.empty else frame


def per_draw_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Per k-shot configuration and draw: Dice × 100 mean ± std (ddof 0) over seeds; with the worst draw."""
    frame = _finished_k_shot(runs)
    if frame.empty or frame["draw"].nunique() < 2:
        return pd.DataFrame()
    frame = frame.assign(dice=frame["dice"] * 100)
    by_draw = frame.groupby([*CONFIG, "draw"], dropna=False)["dice"]
    summary = by_draw.agg(mean="mean", std=lambda v: v.std(ddof=0), seeds="count").reset_index()
    rows = []
    for config, group in summary.groupby(CONFIG, dropna=False, sort=True):
        row = dict(zip(CONFIG, config, strict=True))
        for draw in group.itertuples():
            row[f"draw {draw.draw}"] = f"{draw.mean:.2f} ± {draw.std:.2f} ({draw.seeds})"
        worst = group.loc[group["mean"].idxmin()]
        row["worst draw"] = f"{worst['mean']:.2f} (draw {worst['draw']})"
        every_run = frame.loc[(frame[CONFIG] == pd.Series(row)[CONFIG]).all(axis=1), "dice"]
        row["all runs"] = f"{every_run.mean():.2f} ± {every_run.std(ddof=0):.2f} ({len(every_run)})"
        rows.append(row)
    table = pd.DataFrame(rows)
    draws = [column for column in table.columns if column.startswith("draw ")]
    table[draws] = table[draws].fillna("–")
    return _configuration_first(table, Names(runs))


def _configuration_first(table: pd.DataFrame, names: Names) -> pd.DataFrame:
    """A table of CONFIG rows with its configuration (which names the method, variant, labels, k and budget)
    as the first column, in Table 1's order."""
    named = with_configuration(table, names=names)
    named["_order"] = named["configuration"].map(_order(named).index)
    ordered = named.sort_values(["_order", "dataset", "task", *[c for c in ("draw",) if c in named]], kind="stable")
    shown = ["configuration", "backbone", "dataset", "task", *[c for c in table.columns if c not in CONFIG]]
    return ordered[shown].reset_index(drop=True)


def dice_by_size_table(cases: pd.DataFrame) -> pd.DataFrame:
    """Mean per-case Dice × 100 per configuration, draw and tercile of the structure's box area; the terciles
    are each structure's own (an RV and an LV differ in size), their edges in a column of the row."""
    if cases.empty or "truth_box_area" not in cases or cases["truth_box_area"].isna().all():
        return pd.DataFrame()
    frame = Names(cases).annotate(cases[(cases["shots"] != "all") & cases["truth_box_area"].notna()])
    if frame.empty:
        return pd.DataFrame()
    per_case = frame.groupby([*CONFIG, "draw", "case"], dropna=False)[["dice", "truth_box_area"]].mean()
    per_case = per_case.reset_index()
    parts = []
    for _, structure in per_case.groupby(["dataset", "task"], sort=False):
        areas = structure.drop_duplicates("case")["truth_box_area"]  # each case once, however many runs scored it
        edges = np.quantile(areas, np.linspace(0, 1, len(SIZE_BINS) + 1))
        # ranks, not values, cut the cases: thirds of equal count even where cases share a size
        ranks = areas.rank(method="first").to_numpy()
        thirds = np.floor(len(SIZE_BINS) * (ranks - 0.5) / len(ranks)).astype(int)
        cases_once = structure.drop_duplicates("case")["case"]
        size_of = {case: SIZE_BINS[i] for case, i in zip(cases_once, thirds, strict=True)}
        parts.append(structure.assign(size=structure["case"].map(size_of),
                                      edges=" / ".join(f"{100 * edge:.1f}" for edge in edges)))  # fmt: skip
    binned = pd.concat(parts)
    table = binned.groupby([*CONFIG, "draw", "edges", "size"], dropna=False)["dice"].mean() * 100
    table = table.unstack("size").reindex(columns=list(SIZE_BINS)).reset_index().rename(columns={"edges": SIZE_EDGES})
    return _configuration_first(table, Names(cases)).round(2)


def dice_versus_size(cases: pd.DataFrame) -> Figure | None:
    """Per-case Dice (mean over seeds) against the structure's tight-box area: a row of panels per structure,
    a panel per support draw; rows without a draw (training-free, all data) in every panel of their
    structure. Each Table 1 row in its style of the report's other plots (``plots.row_styles``)."""
    if cases.empty or "truth_box_area" not in cases or cases["truth_box_area"].isna().all():
        return None
    frame = cases.groupby([*CONFIG, "draw", "case"], dropna=False)[["dice", "truth_box_area"]].mean().reset_index()
    names = Names(cases)
    frame = with_configuration(frame, one_line_labels=False, names=names)
    drawless = frame["training_free"].astype(bool) | (frame["shots"] == "all")
    draws = sorted(frame.loc[~drawless, "draw"].unique()) or [0]
    frame = pd.concat([frame[~drawless], *(frame[drawless].assign(draw=draw) for draw in draws)])
    frame["dice"] *= 100
    frame["area"] = frame["truth_box_area"] * 100
    styles = row_styles(frame, names)
    tasks = sorted(frame["task_label"].unique())
    lines = sum(1 + style.label.count("\n") for style in styles.values()) + 6
    figure, axes = panel_grid(len(tasks), len(draws), lines)
    for (task, draw), ax in zip([(task, draw) for task in tasks for draw in draws], axes.flat, strict=True):
        panel = frame[(frame["task_label"] == task) & (frame["draw"] == draw)]
        for label, style in styles.items():
            mine = panel[panel["row_label"] == label]
            ax.scatter(mine["area"], mine["dice"], s=10, marker=style.marker, linewidths=0.8, alpha=0.6,
                       facecolors=style.face if style.filled else "none", edgecolors=style.colour)  # fmt: skip
        ax.set_title(f"{task}\nsupport draw {draw}", fontsize=9)  # on two lines: a dataset's name may be long
        ax.set(xlabel="structure's box area [% of image]", ylabel="Dice × 100 (mean over seeds)", ylim=(-2, 102))
        ax.grid(alpha=0.3)
    add_legend(figure, frame, [style.handle() for style in styles.values()], font=LEGEND_FONT)
    return figure
