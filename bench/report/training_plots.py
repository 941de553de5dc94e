"""What training did, for methods that log it (``RunContext.log``): the report's training curves and the
support images' final predicted sizes.

* ``training_frame`` / ``training_curves``: the per-epoch values a method logged (loss terms, the predicted
  size over the tight-box area), a line per Table 1 row (mean over its runs), a block of panels per structure;
* ``support_sizes`` / ``support_sizes_figure``: each support image's final predicted size over its box area
  against that box's area, a panel per structure and support draw, a marker per seed.

Rows keep the colours, markers and fills of the report's other plots (``plots.row_styles``).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from bench.records.names import Names
from bench.report.diagnosis import LEGEND_FONT, panel_grid, with_configuration
from bench.report.plots import DPI, add_legend, row_styles

# the size prior's bounds on predicted size / box area (bench.method.box_losses.SIZE_BOUNDS), drawn for reference
SIZE_PRIOR_BOUNDS = (0.5, 0.9)
SEED_MARKERS = ["o", "s", "^", "D", "v", "P"]
CURVE_COLUMNS = 3  # panels per line of the training curves: readable at a page's width
CURVE_PANEL = (3.6, 2.6)  # inches
# what the prompt module logs, in reading order, with the titles its panels get; other logged names are shown
# with their underscores as spaces, after these
LOGGED_TITLES = {
    "loss": "Total loss",
    "emptiness": "Emptiness loss",
    "tightness": "Tightness loss",
    "size": "Size loss",
    "size_over_box_area median": "Predicted size / box area\n(soft; median over support images)",
    "hard_size_over_box_area median": "Predicted size / box area\n(probability > 0.5; median over support images)",
}
_NOT_LOGGED = {"epoch", "seed", "draw", "dice", "hd95", "fit_seconds", "epochs", "infer_seconds_per_image",
               "peak_memory_mb", "params_total", "params_trainable", "n_cases", "shots"}  # fmt: skip


def training_frame(records: list[dict]) -> pd.DataFrame:
    """One row per (finished run, logged epoch): the spec columns and every scalar the method logged; a
    logged list (one value per support image) becomes its median, minimum and maximum."""
    from bench.records.store import runs_frame

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


def _logged(frame: pd.DataFrame) -> list[str]:
    """The logged quantities a panel each: the known ones in LOGGED_TITLES' order, then the others; of a
    per-support-image list its median only (``support_sizes`` shows each image)."""
    numeric = [column for column in frame.columns if column not in _NOT_LOGGED and not column.endswith((" min", " max"))
               and pd.api.types.is_float_dtype(frame[column]) and frame[column].notna().any()]  # fmt: skip
    return [name for name in LOGGED_TITLES if name in numeric] + sorted(set(numeric) - set(LOGGED_TITLES))


def training_curves(frame: pd.DataFrame) -> Figure | None:
    """Each logged quantity over the epochs, a line per Table 1 row (the mean over its seeds and support
    draws), in blocks of CURVE_COLUMNS panels per structure, each panel titled with its structure and what it
    shows; the size prior's bounds drawn on the size panels. None when no run logged anything."""
    if frame.empty:
        return None
    names = Names(frame)
    logged = _logged(frame)
    if not logged:
        return None
    frame = with_configuration(frame, one_line_labels=False, names=names)
    styles = row_styles(frame, names)
    tasks = sorted(frame["task_label"].unique())
    per_task = -(-len(logged) // CURVE_COLUMNS)
    columns = min(CURVE_COLUMNS, len(logged))
    legend_rows = -(-(len(styles) + 4) // 2)  # two columns below the panels
    size = (CURVE_PANEL[0] * columns, CURVE_PANEL[1] * per_task * len(tasks) + 0.25 * legend_rows + 0.6)
    figure = Figure(figsize=size, layout="constrained", dpi=DPI)
    axes = figure.subplots(per_task * len(tasks), columns, squeeze=False)
    means = frame.groupby(["task_label", "row_label", "epoch"])[logged].mean().reset_index()
    # rows that differ only in k share a style: all-data rows are dashed
    all_data = set(frame.loc[frame["shots"] == "all", "row_label"])
    runs = frame.groupby(["task_label", "row_label"])["run_id"].nunique()
    for t, task in enumerate(tasks):
        block = axes[t * per_task:(t + 1) * per_task].flat
        for ax, column in zip(block, [*logged, *[None] * (per_task * columns - len(logged))], strict=True):
            if column is None:
                ax.set_axis_off()
                continue
            for label, style in styles.items():
                mine = means[(means["task_label"] == task) & (means["row_label"] == label)].dropna(subset=column)
                if mine.empty:
                    continue
                ax.plot(mine["epoch"], mine[column], color=style.colour, linewidth=1.2, marker=style.marker,
                        markersize=4, markerfacecolor=style.face, markevery=max(1, len(mine) // 6),
                        linestyle="--" if label in all_data else "-")  # fmt: skip
            if "size_over_box_area" in column:  # soft and thresholded (hard_) size
                for bound in SIZE_PRIOR_BOUNDS:
                    ax.axhline(bound, color="0.5", linestyle=":", linewidth=1)
            ax.set_title(f"{task}\n{LOGGED_TITLES.get(column, column.replace('_', ' '))}", fontsize=8)
            ax.set_xlabel("epoch", fontsize=7)
            ax.tick_params(labelsize=7)
            ax.grid(alpha=0.3)
    counts = sorted(set(runs))
    figure.suptitle(f"A line per Table 1 row: mean over its {' or '.join(map(str, counts))} runs (seeds × support"
                    " draws); dotted: the size prior's bounds", fontsize=8)  # fmt: skip
    handles = [Line2D([], [], color=style.colour, marker=style.marker, markerfacecolor=style.face,
                      linestyle="--" if label in all_data else "-", label=style.label)
               for label, style in styles.items()]  # fmt: skip
    add_legend(figure, frame, handles, below=True, font=LEGEND_FONT)
    return figure


def support_sizes(records: list[dict]) -> pd.DataFrame:
    """Per finished run and support image: its box area (fraction of the image) and the predicted size over
    that area at the last epoch, soft and thresholded; from runs that logged ``support_box_area`` and
    ``size_over_box_area``."""
    from bench.records.store import runs_frame

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
    """``support_sizes`` drawn: final predicted size / box area against box area, a row of panels per
    structure and a panel per support draw, a marker per seed, with the size prior's bounds."""
    if sizes.empty:
        return None
    names = Names(sizes)
    frame = with_configuration(sizes, one_line_labels=False, names=names)
    frame["area"] = frame["support_box_area"] * 100
    styles = row_styles(frame, names)
    seeds = sorted(frame["seed"].unique())
    markers = dict(zip(seeds, SEED_MARKERS * len(seeds), strict=False))
    tasks, draws = sorted(frame["task_label"].unique()), sorted(frame["draw"].unique())
    lines = sum(1 + style.label.count("\n") for style in styles.values()) + len(seeds) + 6
    figure, axes = panel_grid(len(tasks), len(draws), lines)
    for (task, draw), ax in zip([(task, draw) for task in tasks for draw in draws], axes.flat, strict=True):
        panel = frame[(frame["task_label"] == task) & (frame["draw"] == draw)]
        for label, style in styles.items():
            for seed, points in panel[panel["row_label"] == label].groupby("seed"):
                ax.scatter(points["area"], points["final_size_over_box_area"], s=30, marker=markers[seed],
                           facecolors=style.colour if style.filled else "none", edgecolors=style.colour,
                           linewidths=0.9, alpha=0.7)  # fmt: skip
        for bound in SIZE_PRIOR_BOUNDS:
            ax.axhline(bound, color="0.5", linestyle=":", linewidth=1)
        ax.set_title(f"{task}\nsupport draw {draw}", fontsize=9)
        ax.set(xlabel="support image's box area [% of image]",
               ylabel="predicted size / box area (last epoch)")  # fmt: skip
        ax.grid(alpha=0.3)
    # markers here are seeds: a row is its colour (and fill)
    row_handles = [Line2D([], [], color=style.colour, linewidth=3, label=style.label) for style in styles.values()]
    seed_handles = [Line2D([], [], linestyle="none", marker=markers[seed], color="0.35", label=f"seed {seed}")
                    for seed in seeds]  # fmt: skip
    add_legend(figure, frame, [*row_handles, Line2D([], [], linestyle="none", label=" "), *seed_handles],
               font=LEGEND_FONT)  # fmt: skip
    return figure
