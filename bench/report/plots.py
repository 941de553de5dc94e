"""The report's plots: per-case Dice, Dice versus training samples, Dice versus fit time.

Every plot shows every row of Table 1 (method × labels × k × ``--set`` variant × budget × backbone), each in
one style throughout (``row_styles``, also used by ``diagnosis`` and ``training_plots``): the method's colour
(``names.Names.palette``, the same in every plot; a lighter or darker shade of it for another variant or
backbone, never another hue), a marker per label regime, and the budget as the marker's fill — filled at
``paper``, hollow at any other budget — and in the row's label; a training-free row has no budget: "–", as in
Table 1, and filled. Figures are ``matplotlib.figure.Figure`` objects rather than pyplot ones: no GUI backend
and no global state, so reports can be made in worker processes and tests (matplotlib's recipe for web
servers); saving renders through Agg (PNG) and the PDF backend.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from bench.records.names import AUTOMATIC_GROUPS, GROUP_ORDER, Names, shots_sort_key, shots_text
from bench.records.rows import row_order, with_row_names

DPI = 150
PANEL_WIDTH = 4.2  # inches per task
PANEL_HEIGHT = 3.6
LEGEND_WIDTH = 4.0  # a row's label: "Prompt module (ours) · box-noisy · k=10 · quick"
LABELS_WIDTH = 3.4  # the per-case plot's row labels, left of its first panel
BUDGET_LEGEND_WIDTH = 1.8
ROW_HEIGHT = 0.3  # inches per row in the per-case plot (a row with a --set variant takes two lines)
LEGEND_LINE = 0.19  # inches per legend line at LEGEND_FONT
LEGEND_FONT = 8
FILLED_BUDGET = "paper"
NO_BUDGET = "–"  # a training-free row's budget, as Table 1 shows it: no budget changes what it computes
MARKERS = {"mask": "o", "box": "s", "box-noisy": "^"}
EXTRA_MARKERS = ("D", "v", "P", "X")
DODGE_DECADES = 0.025  # rows at one k are spread this far apart on the log axis, so none hides another
FIT_TIME_LABEL = "Mean fit time [s] (symmetric log scale;\ntraining-free rows at 0 s: they fit nothing)"
ALL_DATA_FACTOR = 4.0  # all-data rows sit at this multiple of the largest k, under the tick "All"


@dataclass(frozen=True)
class RowStyle:
    label: str  # the row's label in legends and on axes: its ``row_label``, "· –" for a training-free row
    colour: tuple[float, float, float]
    marker: str
    filled: bool

    @property
    def face(self) -> tuple[float, float, float] | str:
        return self.colour if self.filled else "white"

    def handle(self) -> Line2D:
        return Line2D([], [], linestyle="none", marker=self.marker, markersize=7, color=self.colour,
                      markerfacecolor=self.face, markeredgewidth=1.4, label=self.label)  # fmt: skip


def row_styles(frame: pd.DataFrame, names: Names, key: str = "row_label") -> dict[str, RowStyle]:
    """Row label (or, with ``key="series_label"``, series label) → style, in Table 1's order, for a
    ``rows.with_row_names`` frame. A row's style does not depend on its k, so a series has its rows' style."""
    palette = names.palette(frame["method"].unique())
    markers = dict(MARKERS)
    for regime in sorted(set(frame["labels"]) - set(MARKERS)):
        markers[regime] = EXTRA_MARKERS[len(markers) % len(EXTRA_MARKERS)]
    shades: dict[str, list[tuple[str, str]]] = {}
    for method, backbone, variant in sorted(set(zip(frame["method"], frame["backbone"], frame["variant"],
                                                    strict=True))):  # fmt: skip
        shades.setdefault(method, []).append((backbone, variant))
    rows = frame.drop_duplicates(key).set_index(key)
    styles = {}
    for label in row_order(frame, GROUP_ORDER, key):
        row = rows.loc[label]
        colour = _shade(palette[row["method_display"]], len(shades[row["method"]]),
                        shades[row["method"]].index((row["backbone"], row["variant"])))  # fmt: skip
        free = bool(row["training_free"])
        # the budget sits in the label's first line, before a --set variant's second line
        shown = label.replace("\n", f" · {NO_BUDGET}\n", 1) if "\n" in label else f"{label} · {NO_BUDGET}"
        styles[label] = RowStyle(shown if free else label, colour, markers[row["labels"]],
                                 free or row["budget"] == FILLED_BUDGET)  # fmt: skip
    return styles


def _shade(colour: tuple, combinations: int, index: int) -> tuple[float, float, float]:
    """The colour of a method's ``index``-th of ``combinations`` (backbone, variant): the method's own for the
    first, then alternately darker and lighter shades of it, so a method keeps its hue in every plot however
    many variants a model search ran."""
    if index == 0:
        return tuple(colour)
    steps = (combinations + 1) // 2  # shades on each side of the method's own colour
    amount = 0.5 * ((index + 1) // 2) / steps  # at most half-way: the hue stays recognisable
    target = 0.0 if index % 2 else 1.0  # odd: towards black; even: towards white
    return tuple(channel + (target - channel) * amount for channel in colour)


def _budget_handles(frame: pd.DataFrame) -> list[Line2D]:
    """What the fill says: a handle per budget of the trained rows, and "–" for training-free rows."""
    free = frame["training_free"].astype(bool)
    budgets = sorted(set(frame.loc[~free, "budget"]), key=lambda budget: (budget != FILLED_BUDGET, budget))
    handles = [Line2D([], [], linestyle="none", marker="o", markersize=7, color="0.35",
                      markerfacecolor="0.35" if budget == FILLED_BUDGET else "white", label=f"{budget} budget")
               for budget in budgets]  # fmt: skip
    if free.any():
        handles.append(Line2D([], [], linestyle="none", marker="o", markersize=7, color="0.35",
                              label=f"{NO_BUDGET} training-free (no budget)"))  # fmt: skip
    return handles


def budgets_differ(frame: pd.DataFrame) -> bool:
    """Whether the trained rows of ``frame`` (a ``rows.with_row_names`` frame) ran at several budgets."""
    return frame.loc[~frame["training_free"].astype(bool), "budget"].nunique() > 1


def add_legend(
    figure: Figure, frame: pd.DataFrame, handles: list, title: str = "Table 1 row", below: bool = False,
    font: int = LEGEND_FONT,
) -> None:
    """One legend outside the panels, right of them (or ``below`` them, in columns): ``handles``, then what the
    fill says about the budget (``frame``: a ``rows.with_row_names`` frame)."""
    budget_title = "Budget (differs between rows)" if budgets_differ(frame) else "Budget"
    header = [Line2D([], [], linestyle="none", label=budget_title)]
    if handles and not below:  # a blank line between the rows and the budgets
        header.insert(0, Line2D([], [], linestyle="none", label=" "))
    entries = [*handles, *header, *_budget_handles(frame)]
    figure.legend(handles=entries, loc="outside lower center" if below else "outside right upper",
                  ncols=2 if below else 1, frameon=False, title=title, fontsize=font, title_fontsize=font + 1,
                  alignment="left")  # fmt: skip


def _text_width(labels) -> float:
    """Inches the longest line of ``labels`` takes at LEGEND_FONT (DejaVu Sans: about 0.6 em a character)."""
    longest = max((len(line) for label in labels for line in label.split("\n")), default=0)
    return 0.6 * longest * LEGEND_FONT / 72


def _legend_width(styles: dict[str, RowStyle]) -> float:
    return max(LEGEND_WIDTH, _text_width(style.label for style in styles.values()) + 0.8)  # marker and padding


def _legend_height(styles: dict[str, RowStyle], frame: pd.DataFrame) -> float:
    lines = sum(1 + style.label.count("\n") for style in styles.values()) + 3 + len(_budget_handles(frame))
    return LEGEND_LINE * lines + 0.5


def _figure(panels: int, height: float, left: float = 0.0, legend: float = LEGEND_WIDTH) -> tuple[Figure, list]:
    """A figure of ``panels`` side by side, ``left`` inches for row labels and ``legend`` for the legend."""
    figure = Figure(figsize=(left + PANEL_WIDTH * panels + legend, height), layout="constrained", dpi=DPI)
    return figure, list(figure.subplots(1, panels, squeeze=False, sharey=True)[0])


def _rows(frame: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, RowStyle], list[str]]:
    """The frame with its rows named, their styles, and the task labels of its panels."""
    names = Names(frame)
    frame = with_row_names(frame, names)
    return frame, row_styles(frame, names), sorted(frame["task_label"].unique())


def per_case_dice(cases: pd.DataFrame) -> Figure:
    """Box plots of per-case Dice (each case averaged over its row's runs), a box per Table 1 row and a
    panel per task; paper-budget boxes filled, the others hollow."""
    named, styles, tasks = _rows(cases)
    split = cases["eval_split"].iloc[0]  # the caller passes one split's cases (store.of_split)
    frame = named.groupby(["task_label", "row_label", "case"])["dice"].mean().reset_index()
    order = list(styles)
    shown = [style.label for style in styles.values()]
    lines = sum(1 + label.count("\n") for label in shown)
    labels_width = max(LABELS_WIDTH, _text_width(shown) + 0.3)
    figure, axes = _figure(len(tasks), max(PANEL_HEIGHT, ROW_HEIGHT * lines + 1.2), labels_width,
                           BUDGET_LEGEND_WIDTH)  # fmt: skip
    rng = np.random.default_rng(0)
    for ax, task in zip(axes, tasks, strict=True):
        data = frame[frame["task_label"] == task]
        values = [100 * data.loc[data["row_label"] == label, "dice"].to_numpy() for label in order]
        positions = np.arange(len(order))
        drawn = [i for i, value in enumerate(values) if len(value)]  # a row may lack this task
        boxes = ax.boxplot([values[i] for i in drawn], positions=positions[drawn], orientation="horizontal",
                           widths=0.6, patch_artist=True, showfliers=False,
                           medianprops={"color": "0.1", "linewidth": 1.2})  # fmt: skip
        for i, box in zip(drawn, boxes["boxes"], strict=True):
            style = styles[order[i]]
            box.set(facecolor=style.face, edgecolor=style.colour, linewidth=1.6)
        for i in drawn:
            jitter = rng.uniform(-0.2, 0.2, len(values[i]))
            ax.scatter(values[i], positions[i] + jitter, s=3, color="0.15", alpha=0.4, linewidths=0)
        ax.set_yticks(positions, shown, fontsize=LEGEND_FONT)
        ax.set_ylim(len(order) - 0.5, -0.5)
        ax.set(title=task, xlabel=f"Dice × 100 per {split} case", xlim=(-2, 102))
        ax.grid(axis="x", alpha=0.3)
    add_legend(figure, named, [], title="")
    return figure


def _shots_positions(frame: pd.DataFrame) -> tuple[dict[str, float], list[float], list[str]]:
    """x position per training-sample count ("all" right of the largest k), and the ticks."""
    ks = sorted({int(s) for s in frame["shots"] if s != "all"})
    positions = {str(k): float(k) for k in ks}
    if (frame["shots"] == "all").any():
        positions["all"] = (ks[-1] if ks else 10.0) * ALL_DATA_FACTOR
    ticks = sorted(positions.items(), key=lambda item: shots_sort_key(item[0]))
    return positions, [x for _, x in ticks], ["All" if s == "all" else s for s, _ in ticks]


def dice_versus_shots(runs: pd.DataFrame, seed: int = 0) -> Figure | None:
    """Mean Dice per training-sample count with a 95 % bootstrap interval over runs: a point per Table 1 row
    at its k, a line joining the rows that differ only in k; training-free rows, which no k changes, as
    horizontal dotted lines. None with fewer than two training-sample counts."""
    finished = runs[(runs["status"] == "ok") & runs["dice"].notna()]
    if finished.empty:
        return None
    names = Names(finished)
    frame = with_row_names(finished, names)
    trained = frame[~frame["training_free"].astype(bool)]
    if trained["shots"].nunique() < 2:
        return None
    styles = row_styles(frame, names, key="series_label")
    tasks = sorted(frame["task_label"].unique())
    frame = frame.assign(dice=frame["dice"] * 100)
    positions, ticks, tick_labels = _shots_positions(trained)
    figure, axes = _figure(len(tasks), max(PANEL_HEIGHT, _legend_height(styles, frame)), legend=_legend_width(styles))
    for ax, task in zip(axes, tasks, strict=True):
        data = frame[frame["task_label"] == task]
        pairs = set(data.loc[~data["training_free"].astype(bool), ["series_label", "shots"]].itertuples(index=False))
        at_shots = {shots: [label for label in styles if (label, shots) in pairs] for _, shots in pairs}
        for label, style in styles.items():
            mine = data[data["series_label"] == label]
            if mine.empty:
                continue
            if mine["training_free"].astype(bool).any():
                ax.axhline(mine["dice"].mean(), color=style.colour, linestyle=":", linewidth=1.3, marker=style.marker,
                           markerfacecolor=style.face, markersize=6, clip_on=False)  # fmt: skip
                continue
            x = [positions[s] * 10 ** (DODGE_DECADES * (at_shots[s].index(label) - (len(at_shots[s]) - 1) / 2))
                 for s in mine["shots"]]  # fmt: skip
            sns.lineplot(data=mine.assign(x=x), x="x", y="dice", color=style.colour, marker=style.marker,
                         markerfacecolor=style.face, markeredgecolor=style.colour, markeredgewidth=1.4,
                         errorbar=("ci", 95), err_style="bars", n_boot=2000, seed=seed, legend=False,
                         ax=ax)  # fmt: skip
        ax.set_xscale("log")
        ax.set_xticks(ticks, tick_labels)
        ax.minorticks_off()
        ax.set_xlim(ticks[0] / 1.6, ticks[-1] * 1.6)
        ax.set(title=task, xlabel="Training samples k (log scale)", ylabel="Dice × 100 (95 % bootstrap interval)")
        ax.grid(alpha=0.3)
    add_legend(figure, frame, [style.handle() for style in styles.values()], title="Table 1 rows (k on the x axis)")
    return figure


def pareto_front(points: pd.DataFrame) -> pd.DataFrame:
    """The rows no other beats on both fit time (lower) and Dice (higher), by fit time."""
    ordered = points.sort_values(["fit_seconds", "dice"], ascending=[True, False])
    best_so_far = ordered["dice"].astype(float).cummax().shift(fill_value=-np.inf)
    return ordered[ordered["dice"] > best_so_far]


def dice_versus_fit_time(runs: pd.DataFrame) -> Figure | None:
    """Each Table 1 row's mean Dice against its mean fit time, its k written beside its point where a panel has
    several k (rows that differ only in k share a style), with the cost–quality frontier over the automatic
    rows (drawn, and in the legend, where two or more rows make it). Training-free rows fit nothing: they sit
    at 0 s, on a symmetric-log axis that is linear below the fastest trained fit's decade."""
    finished = runs[(runs["status"] == "ok") & runs["dice"].notna() & runs["fit_seconds"].notna()]
    if finished.empty:
        return None
    frame, styles, tasks = _rows(finished)
    points = frame.groupby(["task_label", "row_label", "group", "shots", "training_free"])[
        ["dice", "fit_seconds"]].mean().reset_index()  # fmt: skip
    points["dice"] *= 100
    # a training-free method's fit time is bookkeeping (microseconds): drawn as what it is, no training
    points.loc[points["training_free"].astype(bool), "fit_seconds"] = 0.0
    figure, axes = _figure(len(tasks), max(PANEL_HEIGHT, _legend_height(styles, frame)), legend=_legend_width(styles))
    trained = points.loc[points["fit_seconds"] > 0, "fit_seconds"]
    # a log axis where trained fit times span a decade or more, or a training-free row sits at 0 s with them
    log_axis = not trained.empty and (trained.max() >= 10 * trained.min() or (points["fit_seconds"] == 0).any())
    frontier_drawn = False
    for ax, task in zip(axes, tasks, strict=True):
        data = points[points["task_label"] == task]
        # a prompted method needs a box for every test image: it is no point on an automatic method's frontier
        front = pareto_front(data[data["group"].isin(AUTOMATIC_GROUPS)])
        if len(front) > 1:
            ax.step(front["fit_seconds"], front["dice"], where="post", color="0.55", linestyle="--", linewidth=1,
                    zorder=1)  # fmt: skip
            frontier_drawn = True
        # k=10 and k=All of one configuration share a style: where k differs between rows, it is written
        several_k = data.loc[~data["training_free"].astype(bool), "shots"].nunique() > 1
        for row in data.itertuples():
            style = styles[row.row_label]
            ax.plot(row.fit_seconds, row.dice, linestyle="none", marker=style.marker, markersize=7,
                    color=style.colour, markerfacecolor=style.face, markeredgewidth=1.4, zorder=2)  # fmt: skip
            if several_k and not row.training_free:
                ax.annotate(f"k={shots_text(row.shots, False)}", (row.fit_seconds, row.dice), xytext=(5, 3),
                            textcoords="offset points", fontsize=LEGEND_FONT - 1, color=style.colour)  # fmt: skip
        if log_axis:
            ax.set_xscale("symlog", linthresh=10 ** np.floor(np.log10(trained.min())), linscale=0.5)
        ax.set(title=task, xlabel=FIT_TIME_LABEL if log_axis else "Mean fit time [s]", ylabel="Mean Dice × 100")
        ax.grid(alpha=0.3)
    handles = [style.handle() for style in styles.values()]
    if frontier_drawn:
        handles.append(Line2D([], [], color="0.55", linestyle="--", label="cost–quality frontier\n(automatic rows)"))
    add_legend(figure, frame, handles)
    return figure


def save_figure(figure: Figure, folder: Path, stem: str) -> list[Path]:
    """``stem.png`` and ``stem.pdf`` in ``folder``, at the figure's own size (no cropping)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"{stem}.png", folder / f"{stem}.pdf"]
    for path in paths:
        figure.savefig(path, dpi=DPI)
    return paths
