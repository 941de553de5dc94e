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

from bench.report.names import Names
from bench.report.plots import DPI, PANEL_HEIGHT, PANEL_WIDTH

CONFIG = ["method_display", "variant", "labels", "shots", "budget", "backbone", "dataset", "task"]
SIZE_BINS = 3  # terciles of the structure's box area over the scored cases
# the size prior's bounds on predicted size / box area (bench.box_losses.SIZE_BOUNDS), drawn for reference
SIZE_PRIOR_BOUNDS = (0.5, 0.9)


def _configuration(frame: pd.DataFrame) -> pd.Series:
    """"Prompt module (ours) · box · k=10 [lr=0.0001]": one label per configuration of CONFIG."""
    parts = [
        f"{r.method_display} · {r.labels} · k={r.shots}" + (f" [{r.variant}]" if r.variant else "")
        for r in frame.itertuples()
    ]
    return pd.Series(parts, index=frame.index)


def _panels_per_draw(frame: pd.DataFrame) -> tuple[Figure, list, list[str]]:
    """A figure with one panel per support draw (shared y) and the configurations' legend order."""
    draws = sorted(frame["draw"].unique())
    figure = Figure(figsize=(PANEL_WIDTH * len(draws) + 3.2, PANEL_HEIGHT), layout="constrained", dpi=DPI)
    axes = figure.subplots(1, len(draws), squeeze=False, sharey=True)[0]
    return figure, list(zip(axes, draws, strict=True)), sorted(frame["configuration"].unique())


def _palette(order: list[str]) -> list:
    """One distinct colour per configuration: the default cycle repeats after 10, as a model search exceeds."""
    return sns.color_palette(n_colors=len(order)) if len(order) <= 10 else sns.color_palette("husl", len(order))


def _legend_outside(ax) -> None:
    if ax.get_legend() is not None:
        sns.move_legend(ax, "upper left", bbox_to_anchor=(1.02, 1), frameon=False, title="")


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
    table.insert(0, "configuration", _configuration(table))
    return table.drop(columns=["method_display", "variant", "labels", "shots"])


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
    table.insert(0, "configuration", _configuration(table))
    return table.drop(columns=["method_display", "variant", "labels", "shots"]).round(2)


def dice_versus_size(cases: pd.DataFrame) -> Figure | None:
    """Per-case Dice (mean over seeds) against the structure's tight-box area, a panel per draw."""
    if cases.empty or "truth_box_area" not in cases or cases["truth_box_area"].isna().all():
        return None
    frame = Names(cases).annotate(cases[cases["shots"] != "all"])
    if frame.empty:
        return None
    frame = frame.groupby([*CONFIG, "draw", "case"], dropna=False)[["dice", "truth_box_area"]].mean().reset_index()
    frame["configuration"] = _configuration(frame)
    frame["dice"] *= 100
    frame["box area [% of image]"] = frame["truth_box_area"] * 100
    figure, panels, order = _panels_per_draw(frame)
    for ax, draw in panels:
        sns.scatterplot(data=frame[frame["draw"] == draw], x="box area [% of image]", y="dice",
                        hue="configuration", hue_order=order, palette=_palette(order), s=12, alpha=0.6,
                        legend=ax is panels[-1][0], ax=ax)  # fmt: skip
        ax.set(title=f"support draw {draw}", ylabel="Dice × 100 (mean over seeds)", ylim=(-2, 102))
        ax.grid(alpha=0.3)
    _legend_outside(panels[-1][0])
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
    frame = Names(frame).annotate(frame)
    frame["configuration"] = _configuration(frame) + " · draw " + frame["draw"].astype(str)
    spec_columns = set(frame.columns) & {"epoch", "seed", "draw", "dice", "hd95", "fit_seconds", "epochs"}
    logged = [c for c in frame.columns if c not in spec_columns and pd.api.types.is_float_dtype(frame[c])
              and c not in {"infer_seconds_per_image", "peak_memory_mb"} and frame[c].notna().any()]  # fmt: skip
    if not logged:
        return None
    figure = Figure(figsize=(PANEL_WIDTH * len(logged) + 3.2, PANEL_HEIGHT), layout="constrained", dpi=DPI)
    axes = figure.subplots(1, len(logged), squeeze=False)[0]
    order = sorted(frame["configuration"].unique())
    for ax, column in zip(axes, logged, strict=True):
        sns.lineplot(data=frame, x="epoch", y=column, hue="configuration", hue_order=order, palette=_palette(order),
                     errorbar=None, legend=ax is axes[-1], ax=ax)  # fmt: skip
        if "size_over_box_area" in column:  # soft and thresholded (hard_) size
            for bound in SIZE_PRIOR_BOUNDS:
                ax.axhline(bound, color="0.5", linestyle=":", linewidth=1)
        ax.set(title=column, ylabel="")
        ax.grid(alpha=0.3)
    _legend_outside(axes[-1])
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
    """``support_sizes`` drawn: final predicted size / box area against box area, a panel per draw, with the
    size prior's bounds."""
    if sizes.empty:
        return None
    frame = Names(sizes).annotate(sizes)
    frame["configuration"] = _configuration(frame)
    frame["box area [% of image]"] = frame["support_box_area"] * 100
    figure, panels, order = _panels_per_draw(frame)
    for ax, draw in panels:
        sns.scatterplot(data=frame[frame["draw"] == draw], x="box area [% of image]", y="final_size_over_box_area",
                        hue="configuration", hue_order=order, palette=_palette(order), style="seed", s=30,
                        legend=ax is panels[-1][0], ax=ax)  # fmt: skip
        for bound in SIZE_PRIOR_BOUNDS:
            ax.axhline(bound, color="0.5", linestyle=":", linewidth=1)
        ax.set(title=f"support draw {draw}", ylabel="predicted size / box area (last epoch)")
        ax.grid(alpha=0.3)
    _legend_outside(panels[-1][0])
    return figure
