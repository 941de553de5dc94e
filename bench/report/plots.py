"""The report's plots (seaborn): per-case Dice, Dice versus training samples, Dice versus fit time.

Figures are ``matplotlib.figure.Figure`` objects rather than pyplot ones: no GUI backend and no global
state, so reports can be made in worker processes and tests (matplotlib's recipe for web servers); saving
renders through Agg (PNG) and the PDF backend. Each method keeps one colour in every figure
(``names.Names.palette``) and each label regime one marker and dash pattern.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from bench.report.names import GROUP_ORDER, LABEL_ORDER, Names, shots_sort_key, shots_text

DPI = 150
PANEL_WIDTH = 4.2  # inches per task
PANEL_HEIGHT = 3.6
LEGEND_WIDTH = 2.6
ROW_HEIGHT = 0.28  # inches per configuration in the per-case plot
MIN_FIT_SECONDS = 0.01  # training-free methods fit in ~0 s; the log axis needs a floor
MARKERS = {"mask": "o", "box": "s", "box-noisy": "^"}
DASHES = {"mask": "", "box": (4, 2), "box-noisy": (1, 1.5)}


def _regimes(frame: pd.DataFrame) -> list[str]:
    present = set(frame["labels"])
    return [regime for regime in LABEL_ORDER if regime in present] + sorted(present - set(LABEL_ORDER))


def _styles(regimes: list[str]) -> tuple[dict, dict]:
    extra = ["D", "v", "P", "X"]
    markers = {r: MARKERS.get(r) or extra[i % len(extra)] for i, r in enumerate(regimes)}
    return markers, {r: DASHES.get(r, (2, 1, 1, 1)) for r in regimes}


def _figure(panels: int, height: float) -> tuple[Figure, np.ndarray]:
    figure = Figure(figsize=(PANEL_WIDTH * panels + LEGEND_WIDTH, height), layout="constrained", dpi=DPI)
    return figure, figure.subplots(1, panels, squeeze=False, sharey=True)[0]


def _legend(
    figure: Figure, frame: pd.DataFrame, palette: dict, regimes: list[str] | None = None, extra: tuple = ()
) -> None:
    """One legend for the figure: a colour per method, a marker and dash per label regime, then ``extra``."""
    methods = _method_order(frame)
    handles = [Line2D([], [], color=palette[m], marker="o", linestyle="-", label=m) for m in methods]
    if regimes:
        markers, dashes = _styles(regimes)
        handles.append(Line2D([], [], linestyle="none", label="Training labels"))
        for regime in regimes:
            line = Line2D([], [], color="0.3", marker=markers[regime], label=regime)
            if dashes[regime]:
                line.set_dashes(dashes[regime])
            handles.append(line)
    handles.extend(extra)
    figure.legend(handles=handles, loc="outside right upper", frameon=False, title="Method")


def _method_order(frame: pd.DataFrame) -> list[str]:
    """Display names in the table's order: by group, then name."""
    pairs = frame[["group", "method_display"]].drop_duplicates()
    ranked = sorted(zip(pairs["group"], pairs["method_display"], strict=True),
                    key=lambda pair: (GROUP_ORDER.index(pair[0]), pair[1].lower()))  # fmt: skip
    return list(dict.fromkeys(display for _, display in ranked))


def _tasks(frame: pd.DataFrame) -> list[str]:
    return sorted(frame["task_label"].unique())


def _configuration_labels(frame: pd.DataFrame) -> pd.Series:
    """"UNet · mask · k=10"; without the regime for a method that neither learns from labels nor is prompted
    with them, without k for a training-free one."""
    labels = []
    for row in frame.itertuples():
        k = shots_text(row.shots, row.training_free)
        parts = [row.method_display] + ([row.labels] if row.prompted or not row.training_free else [])
        labels.append(" · ".join(parts + ([] if k == "–" else [f"k={k}"])))
    return pd.Series(labels, index=frame.index)


def per_case_dice(cases: pd.DataFrame) -> Figure:
    """Box plots of per-case Dice (each case averaged over its runs), one panel per task."""
    names = Names(cases)
    frame = names.annotate(cases)
    keys = ["task_label", "group", "method", "method_display", "training_free", "prompted", "labels", "shots",
            "case"]
    frame = frame.groupby(keys, dropna=False)["dice"].mean().reset_index()
    frame["dice"] *= 100
    frame["configuration"] = _configuration_labels(frame)
    methods = _method_order(frame)
    frame["_order"] = [
        (methods.index(m), LABEL_ORDER.index(lab) if lab in LABEL_ORDER else 9, shots_sort_key(s))
        for m, lab, s in zip(frame["method_display"], frame["labels"], frame["shots"], strict=True)
    ]
    order = list(dict.fromkeys(frame.sort_values("_order")["configuration"]))
    palette = names.palette(frame["method"].unique())
    tasks = _tasks(frame)
    figure, axes = _figure(len(tasks), max(PANEL_HEIGHT, ROW_HEIGHT * len(order) + 1.2))
    for ax, task in zip(axes, tasks, strict=True):
        data = frame[frame["task_label"] == task]
        sns.boxplot(data=data, x="dice", y="configuration", order=order, hue="method_display",
                    palette=palette, saturation=1, dodge=False, legend=False, fliersize=0, width=0.6,
                    ax=ax)  # fmt: skip
        sns.stripplot(data=data, x="dice", y="configuration", order=order, color="0.15", size=2, alpha=0.45,
                      jitter=0.2, ax=ax)  # fmt: skip
        ax.set(title=task, xlabel="Dice × 100 per test case", ylabel="", xlim=(-2, 102))
        ax.grid(axis="x", alpha=0.3)
    _legend(figure, frame, palette)
    return figure


def dice_versus_shots(runs: pd.DataFrame, seed: int = 0) -> Figure | None:
    """Mean Dice per number of training samples with a 95 % bootstrap band over runs; None with < 2 k."""
    names = Names(runs)
    frame = names.annotate(runs[(runs["status"] == "ok") & (runs["shots"] != "all") & runs["dice"].notna()])
    if frame.empty or frame["shots"].nunique() < 2:
        return None
    frame["k"] = frame["shots"].astype(int)
    frame["dice"] *= 100
    palette = names.palette(frame["method"].unique())
    regimes = _regimes(frame)
    markers, dashes = _styles(regimes)
    tasks = _tasks(frame)
    ks = sorted(frame["k"].unique())
    figure, axes = _figure(len(tasks), PANEL_HEIGHT)
    for ax, task in zip(axes, tasks, strict=True):
        data = frame[frame["task_label"] == task]
        sns.lineplot(data=data, x="k", y="dice", hue="method_display", style="labels", style_order=regimes,
                     markers=markers, dashes=dashes, palette=palette, errorbar=("ci", 95), n_boot=2000,
                     seed=seed, legend=False, ax=ax)  # fmt: skip
        ax.set_xscale("log")
        ax.set_xticks(ks, [str(k) for k in ks])
        ax.minorticks_off()
        ax.set(title=task, xlabel="Training samples k (log scale)", ylabel="Dice × 100 (95 % bootstrap band)")
        ax.grid(alpha=0.3)
    _legend(figure, frame, palette, regimes)
    return figure


def pareto_front(points: pd.DataFrame) -> pd.DataFrame:
    """The configurations no other beats on both fit time (lower) and Dice (higher), by fit time."""
    ordered = points.sort_values(["fit_seconds", "dice"], ascending=[True, False])
    best_so_far = ordered["dice"].astype(float).cummax().shift(fill_value=-np.inf)
    return ordered[ordered["dice"] > best_so_far]


def dice_versus_fit_time(runs: pd.DataFrame) -> Figure | None:
    """Each configuration's mean Dice against its mean fit time, with the cost–quality frontier."""
    names = Names(runs)
    frame = names.annotate(runs[(runs["status"] == "ok") & runs["dice"].notna() & runs["fit_seconds"].notna()])
    if frame.empty:
        return None
    keys = ["task_label", "group", "method", "method_display", "training_free", "labels", "shots"]
    points = frame.groupby(keys, dropna=False)[["dice", "fit_seconds"]].mean().reset_index()
    points["dice"] *= 100
    points["fit_seconds"] = points["fit_seconds"].clip(lower=MIN_FIT_SECONDS)
    palette = names.palette(points["method"].unique())
    regimes = _regimes(points)
    markers, _ = _styles(regimes)
    tasks = _tasks(points)
    figure, axes = _figure(len(tasks), PANEL_HEIGHT)
    for ax, task in zip(axes, tasks, strict=True):
        data = points[points["task_label"] == task]
        front = pareto_front(data)
        ax.step(front["fit_seconds"], front["dice"], where="post", color="0.55", linestyle="--", linewidth=1,
                zorder=1)  # fmt: skip
        sns.scatterplot(data=data, x="fit_seconds", y="dice", hue="method_display", style="labels",
                        style_order=regimes, markers=markers, palette=palette, s=60, legend=False, zorder=2,
                        ax=ax)  # fmt: skip
        for row in data.itertuples():
            k = shots_text(row.shots, row.training_free)
            if k != "–":
                ax.annotate(f"k={k}", (row.fit_seconds, row.dice), xytext=(4, 3), textcoords="offset points",
                            fontsize=7, color="0.3")  # fmt: skip
        ax.set_xscale("log")
        ax.set(title=task, xlabel="Mean fit time [s] (log scale)", ylabel="Mean Dice × 100")
        ax.grid(alpha=0.3)
    frontier = Line2D([], [], color="0.55", linestyle="--", label="cost–quality frontier")
    _legend(figure, points, palette, regimes, extra=(frontier,))
    return figure


def save_figure(figure: Figure, folder: Path, stem: str) -> list[Path]:
    """``stem.png`` and ``stem.pdf`` in ``folder``, at the figure's own size (no cropping)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"{stem}.png", folder / f"{stem}.pdf"]
    for path in paths:
        figure.savefig(path, dpi=DPI)
    return paths
