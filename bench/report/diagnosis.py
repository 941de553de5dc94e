"""How runs vary with the support draw and what training did: the report's diagnostic tables and figures.

* ``per_draw_table``: mean ± std over seeds for every support draw of each k-shot configuration, and the
  worst draw — a draw that fails shows here, where Table 1's mean over seeds × draws averages it away;
* ``dice_by_size_table`` / ``dice_versus_size``: per-case Dice against the structure's tight-box area
  (``truth_box_area``, a fraction of the image, stored with each case by the runner);
* ``training_frame`` / ``training_curves``: the per-epoch values a method logged (``RunContext.log``: loss
  terms, the predicted soft size over the tight-box area), averaged over seeds, per label regime and draw;
* ``support_sizes``: each support image's final predicted size over its box area against that box's area.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from bench.report.names import GROUP_ORDER, Names
from bench.report.plots import DPI, FILLED_BUDGET, LEGEND_LINE, LEGEND_WIDTH, PANEL_HEIGHT, PANEL_WIDTH
from bench.report.rows import one_line, row_order, with_row_names

CONFIG = ["method", "variant", "labels", "shots", "budget", "backbone", "dataset", "task"]
SIZE_BINS = 3  # terciles of the structure's box area over the scored cases
# the size prior's bounds on predicted size / box area (bench.box_losses.SIZE_BOUNDS), drawn for reference
SIZE_PRIOR_BOUNDS = (0.5, 0.9)
SEED_MARKERS = ["o", "s", "^", "D", "v", "P"]
LEGEND_FONT = 7  # a model search's configurations: many, long labels


def _with_configuration(frame: pd.DataFrame, one_line_labels: bool = True, names: Names | None = None) -> pd.DataFrame:
    """``frame`` with ``rows.with_row_names``'s columns and each row's Table 1 row label as ``configuration``
    ("Prompt module (ours) · box · k=10 · paper", with its --set variant): on one line for tables, on two
    where a variant makes it long for a legend. ``names``: those of the records ``frame`` was aggregated from
    (an aggregate lacks their descriptions)."""
    frame = with_row_names(frame, names or Names(frame))
    return frame.assign(configuration=frame["row_label"].map(one_line) if one_line_labels else frame["row_label"])


def _order(frame: pd.DataFrame) -> list[str]:
    """The configurations of a ``_with_configuration`` frame in Table 1's order."""
    return row_order(frame.assign(row_label=frame["configuration"]), GROUP_ORDER)


def _height(labels: list[str], extra_lines: int = 0) -> float:
    """Inches a panel needs beside a legend of ``labels`` (and ``extra_lines``) at LEGEND_FONT."""
    lines = sum(1 + label.count("\n") for label in labels) + extra_lines + 1
    return max(PANEL_HEIGHT, LEGEND_LINE * LEGEND_FONT / 8 * lines + 0.5)


def _panels_per_draw(frame: pd.DataFrame, extra_lines: int = 0) -> tuple[Figure, list, list[str]]:
    """A figure with one panel per support draw (shared y), tall enough for the legend of its configurations
    (and ``extra_lines``), and the configurations in Table 1's order."""
    draws = sorted(frame["draw"].unique())
    order = _order(frame)
    size = (PANEL_WIDTH * len(draws) + LEGEND_WIDTH, _height(order, extra_lines))
    figure = Figure(figsize=size, layout="constrained", dpi=DPI)
    axes = figure.subplots(1, len(draws), squeeze=False, sharey=True)[0]
    return figure, list(zip(axes, draws, strict=True)), order


def _palette(order: list[str]) -> list:
    """One distinct colour per configuration: the default cycle repeats after 10, as a model search exceeds."""
    return sns.color_palette(n_colors=len(order)) if len(order) <= 10 else sns.color_palette("husl", len(order))


def _scatter_rows(ax, frame: pd.DataFrame, x: str, y: str, order: list[str], marker_of=None, size: float = 12) -> None:
    """A scatter per configuration in its own colour, filled at the paper budget and hollow at the others,
    as in the report's plots; ``marker_of`` maps a frame row to its marker (default: a circle)."""
    for colour, label in zip(_palette(order), order, strict=True):
        mine = frame[frame["configuration"] == label]
        groups = mine.groupby(mine.apply(marker_of, axis=1)) if marker_of and not mine.empty else [("o", mine)]
        for marker, points in groups:
            filled = (points["budget"] == FILLED_BUDGET).all()
            ax.scatter(points[x], points[y], s=size, marker=marker, facecolors=colour if filled else "none",
                       edgecolors=colour, linewidths=0.9, alpha=0.7, label=None)  # fmt: skip


def _legend_rows(figure: Figure, frame: pd.DataFrame, order: list[str], extra: tuple = ()) -> None:
    """The figure's legend: a configuration per colour (its budget's fill), then ``extra``."""
    handles = [Line2D([], [], linestyle="none", marker="o", color=colour, label=label,
                      markerfacecolor=colour if frame.loc[frame["configuration"] == label, "budget"].eq(
                          FILLED_BUDGET).all() else "white")
               for colour, label in zip(_palette(order), order, strict=True)]  # fmt: skip
    figure.legend(handles=[*handles, *extra], loc="outside right upper", frameon=False, fontsize=LEGEND_FONT,
                  title=f"filled: {FILLED_BUDGET} budget; hollow: other budgets",
                  title_fontsize=LEGEND_FONT)  # fmt: skip


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
    named = _with_configuration(table, names=names)
    named["_order"] = named["configuration"].map(_order(named).index)
    ordered = named.sort_values(["_order", *[c for c in ("draw",) if c in named]], kind="stable")
    shown = ["configuration", "backbone", "dataset", "task", *[c for c in table.columns if c not in CONFIG]]
    return ordered[shown].reset_index(drop=True)


def dice_by_size_table(cases: pd.DataFrame) -> pd.DataFrame:
    """Mean per-case Dice × 100 per configuration, draw and tercile of the structure's box area."""
    if cases.empty or "truth_box_area" not in cases or cases["truth_box_area"].isna().all():
        return pd.DataFrame()
    frame = Names(cases).annotate(cases[cases["shots"] != "all"])
    if frame.empty:
        return pd.DataFrame()
    per_case = frame.groupby([*CONFIG, "draw", "case"], dropna=False)[["dice", "truth_box_area"]].mean()
    per_case = per_case.reset_index()
    # terciles; fewer bins where cases share sizes (np.unique drops the repeated edges)
    areas = per_case.drop_duplicates("case")["truth_box_area"]  # each case once, however many runs scored it
    edges = np.unique(np.quantile(areas, np.linspace(0, 1, SIZE_BINS + 1)))
    if len(edges) < 2:
        edges = np.array([edges[0], edges[0]])
    labels = [f"box {100 * lo:.0f}–{100 * hi:.0f} %" for lo, hi in zip(edges[:-1], edges[1:], strict=True)]
    per_case["size"] = pd.cut(per_case["truth_box_area"], edges, labels=labels, include_lowest=True,
                              duplicates="drop")  # fmt: skip
    table = per_case.groupby([*CONFIG, "draw", "size"], dropna=False, observed=True)["dice"].mean() * 100
    table = table.unstack("size").reset_index()
    return _configuration_first(table, Names(cases)).round(2)


def dice_versus_size(cases: pd.DataFrame) -> Figure | None:
    """Per-case Dice (mean over seeds) against the structure's tight-box area, a panel per support draw;
    rows without a draw (training-free, all data) in every panel."""
    if cases.empty or "truth_box_area" not in cases or cases["truth_box_area"].isna().all():
        return None
    frame = cases.groupby([*CONFIG, "draw", "case"], dropna=False)[["dice", "truth_box_area"]].mean().reset_index()
    frame = _with_configuration(frame, one_line_labels=False, names=Names(cases))
    drawless = frame["training_free"].astype(bool) | (frame["shots"] == "all")
    draws = sorted(frame.loc[~drawless, "draw"].unique()) or [0]
    frame = pd.concat([frame[~drawless], *(frame[drawless].assign(draw=draw) for draw in draws)])
    frame["dice"] *= 100
    frame["box area [% of image]"] = frame["truth_box_area"] * 100
    figure, panels, order = _panels_per_draw(frame)
    for ax, draw in panels:
        _scatter_rows(ax, frame[frame["draw"] == draw], "box area [% of image]", "dice", order)
        ax.set(title=f"support draw {draw}", xlabel="box area [% of image]", ylabel="Dice × 100 (mean over seeds)",
               ylim=(-2, 102))  # fmt: skip
        ax.grid(alpha=0.3)
    _legend_rows(figure, frame, order)
    return figure


def training_frame(records: list[dict]) -> pd.DataFrame:
    """One row per (finished run, logged epoch): the spec columns and every scalar the method logged; a
    logged list (one value per support image) becomes its median, minimum and maximum."""
    from bench.store import runs_frame

    rows = []
    for record in records:
        epochs = [entry for entry in record.get("training_log") or [] if "epoch" in entry]
        if record.get("status") != "ok" or not epochs:
            continue
        base = runs_frame([record]).iloc[0].to_dict()
        for entry in epochs:
            row = dict(base)
            for key, value in entry.items():
                if isinstance(value, list):
                    values = np.asarray(value, dtype=float)
                    row |= {f"{key} median": np.nanmedian(values), f"{key} min": np.nanmin(values),
                            f"{key} max": np.nanmax(values)}  # fmt: skip
                else:
                    row[key] = value
            rows.append(row)
    return pd.DataFrame(rows)


def training_curves(frame: pd.DataFrame) -> Figure | None:
    """Each logged quantity over the epochs, mean over seeds, a line per configuration and draw."""
    if frame.empty:
        return None
    frame = _with_configuration(frame)
    order = [f"{label} · draw {draw}" for label in _order(frame) for draw in sorted(frame["draw"].unique())]
    frame["configuration"] = frame["configuration"] + " · draw " + frame["draw"].astype(str)
    order = [label for label in order if label in set(frame["configuration"])]
    spec_columns = set(frame.columns) & {"epoch", "seed", "draw", "dice", "hd95", "fit_seconds", "epochs"}
    logged = [c for c in frame.columns if c not in spec_columns and pd.api.types.is_float_dtype(frame[c])
              and c not in {"infer_seconds_per_image", "peak_memory_mb"} and frame[c].notna().any()]  # fmt: skip
    if not logged:
        return None
    size = (PANEL_WIDTH * len(logged) + LEGEND_WIDTH, _height(order))
    figure = Figure(figsize=size, layout="constrained", dpi=DPI)
    axes = figure.subplots(1, len(logged), squeeze=False)[0]
    for ax, column in zip(axes, logged, strict=True):
        sns.lineplot(data=frame, x="epoch", y=column, hue="configuration", hue_order=order, palette=_palette(order),
                     errorbar=None, legend=False, ax=ax)  # fmt: skip
        if "size_over_box_area" in column:  # soft and thresholded (hard_) size
            for bound in SIZE_PRIOR_BOUNDS:
                ax.axhline(bound, color="0.5", linestyle=":", linewidth=1)
        ax.set(title=column, ylabel="")
        ax.grid(alpha=0.3)
    handles = [Line2D([], [], color=colour, label=label) for colour, label in zip(_palette(order), order, strict=True)]
    figure.legend(handles=handles, loc="outside right upper", frameon=False, fontsize=LEGEND_FONT)
    return figure


def support_sizes(records: list[dict]) -> pd.DataFrame:
    """Per finished run and support image: its box area (fraction of the image) and the predicted size over
    that area at the last epoch, soft and thresholded; from runs that logged ``support_box_area`` and
    ``size_over_box_area``."""
    from bench.store import runs_frame

    rows = []
    for record in records:
        log = record.get("training_log") or []
        facts = next((entry for entry in log if "support_box_area" in entry), None)
        epochs = [entry for entry in log if "size_over_box_area" in entry]
        if record.get("status") != "ok" or facts is None or not epochs:
            continue
        base = runs_frame([record]).iloc[0].to_dict()
        final = epochs[-1]["size_over_box_area"]
        # the thresholded size, where logged (runs before it was added have the soft size only)
        final_hard = epochs[-1].get("hard_size_over_box_area", [float("nan")] * len(final))
        for area, ratio, hard in zip(facts["support_box_area"], final, final_hard, strict=True):
            rows.append(base | {"support_box_area": area, "final_size_over_box_area": ratio,
                                "final_hard_size_over_box_area": hard})  # fmt: skip
    return pd.DataFrame(rows)


def support_sizes_figure(sizes: pd.DataFrame) -> Figure | None:
    """``support_sizes`` drawn: final predicted size / box area against box area, a panel per draw (a marker
    per seed), with the size prior's bounds."""
    if sizes.empty:
        return None
    frame = _with_configuration(sizes, one_line_labels=False)
    frame["box area [% of image]"] = frame["support_box_area"] * 100
    seeds = sorted(frame["seed"].unique())
    markers = dict(zip(seeds, SEED_MARKERS * len(seeds), strict=False))
    figure, panels, order = _panels_per_draw(frame, extra_lines=len(seeds))
    for ax, draw in panels:
        _scatter_rows(ax, frame[frame["draw"] == draw], "box area [% of image]", "final_size_over_box_area", order,
                      marker_of=lambda row: markers[row["seed"]], size=30)  # fmt: skip
        for bound in SIZE_PRIOR_BOUNDS:
            ax.axhline(bound, color="0.5", linestyle=":", linewidth=1)
        ax.set(title=f"support draw {draw}", xlabel="box area [% of image]",
               ylabel="predicted size / box area (last epoch)")  # fmt: skip
        ax.grid(alpha=0.3)
    seed_handles = [Line2D([], [], linestyle="none", marker=markers[seed], color="0.35", label=f"seed {seed}")
                    for seed in seeds]  # fmt: skip
    _legend_rows(figure, frame, order, extra=tuple(seed_handles))
    return figure
