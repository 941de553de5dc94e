"""Table 1's rows as every part of the report names, orders and picks them.

A row is one configuration of Table 1: method × label regime × training samples k × ``--set`` variant ×
budget × backbone. The table, the plots, the statistics, the cost table and the qualitative figure all use
these rows, so no part of the report drops or merges a row the table shows. A method's *headline* row is the
one Table 1 puts forward for it: no ``--set`` overrides, its default label regime (boxes for the prompt
module), its best budget (``paper`` before ``quick``).
"""

from __future__ import annotations

import pandas as pd

from bench.records.names import LABEL_ORDER, Names, shots_sort_key, shots_text
from bench.records.spec import BUDGETS

ROW_KEYS = ["method", "variant", "labels", "shots", "budget", "backbone"]


def budget_rank(budget: str) -> tuple[int, str]:
    """The budgets from best to least: ``paper``, ``quick``, then any other by name."""
    return (BUDGETS.index(budget) if budget in BUDGETS else len(BUDGETS), budget)


def labels_rank(labels: str, default: str | None = None) -> tuple[int, int]:
    """The label regimes in preference order: the method's default first, then mask, box, box-noisy."""
    return (labels != default, LABEL_ORDER.index(labels) if labels in LABEL_ORDER else len(LABEL_ORDER))


def with_row_names(frame: pd.DataFrame, names: Names) -> pd.DataFrame:
    """A copy of a store frame (or a summary of it) with ``Names.annotate``'s columns and the row's names.

    ``row_display`` is the Method cell of Table 1: the display name, with the backbone when the method ran
    with several, and with the ``--set`` variant in brackets whenever the row has one (a smoke run with
    ``--set epochs=2`` must never pass for the recipe, even when every row shares it). ``row_label`` names
    the whole row in plots: "UNet · mask · k=10 · quick" ("MedSAM · box" for a training-free row, which has no k
    and no budget), the variant on a second line; ``series_label`` is the same without k, for a line that joins
    a configuration's rows across k.
    """
    if "variant" not in frame:
        frame = frame.assign(variant="")
    frame = names.annotate(frame)
    several_backbones = frame.groupby("method")["backbone"].nunique() > 1
    displays, labels, series = [], [], []
    for row in frame.itertuples():
        display = f"{row.method_display} ({row.backbone})" if several_backbones[row.method] else row.method_display
        displays.append(f"{display} [{row.variant}]" if row.variant else display)
        k = shots_text(row.shots, row.training_free)
        regime = [row.labels] if names.method(row.method).shows_labels else []
        variant = f"\n[{row.variant}]" if row.variant else ""
        # a training-free row has neither k nor budget (Table 1 shows "–" for both): nothing changes what it computes
        budget = [] if row.training_free else [row.budget]
        labels.append(" · ".join([display, *regime, *([] if k == "–" else [f"k={k}"]), *budget]) + variant)
        series.append(" · ".join([display, *regime, *budget]) + variant)
    return frame.assign(row_display=displays, row_label=labels, series_label=series)


def one_line(label: str) -> str:
    """A ``row_label`` for running text: the variant on the same line."""
    return label.replace("\n", " ")


def row_order(frame: pd.DataFrame, group_order: tuple[str, ...], key: str = "row_label") -> list[str]:
    """The distinct ``key`` values (``row_label`` or ``series_label``) of a ``with_row_names`` frame in Table
    1's order: by group, method name, label regime, k, budget, backbone and variant."""
    keyed = frame.drop_duplicates(key)
    ranked = sorted(
        keyed.itertuples(),
        key=lambda row: (group_order.index(row.group), row.method_display.lower(), row.method,
                         labels_rank(row.labels), shots_sort_key(row.shots), budget_rank(row.budget),
                         row.backbone, row.variant),
    )  # fmt: skip
    return [getattr(row, key) for row in ranked]


def headline(rows: pd.DataFrame, default_labels: str | None, backbone: str | None = None) -> pd.Series | None:
    """The headline among one method's ``rows`` (a frame with ROW_KEYS columns): no ``--set`` variant, its
    default label regime (else the first of mask, box, box-noisy), its best budget, then ``backbone`` when
    it has it, else its first backbone by name; None when ``rows`` is empty."""
    if rows.empty:
        return None
    ranked = sorted(
        rows.index,
        key=lambda i: (rows.at[i, "variant"] != "", labels_rank(rows.at[i, "labels"], default_labels),
                       budget_rank(rows.at[i, "budget"]), rows.at[i, "backbone"] != backbone,
                       rows.at[i, "backbone"]),
    )  # fmt: skip
    return rows.loc[ranked[0]]


def nearest_shots(available: set[str], shots: str) -> str | None:
    """``shots`` when the reference has rows at it, else its fewest training samples (k before all data),
    the few-shot setting Table 1 leads with; None when there is nothing."""
    if shots in available:
        return shots
    return min(available, key=shots_sort_key, default=None)


def shown_runs(runs: pd.DataFrame, names: Names) -> list[str]:
    """The id of the finished run that stands for each Table 1 row on each structure: its lowest draw, then seed
    (the run whose kept masks the results page and the figure with every row show)."""
    finished = with_row_names(runs[runs["status"] == "ok"], names)
    finished = finished.sort_values(["draw", "seed", "run_id"], kind="stable")
    return finished.groupby(["dataset", "task", *ROW_KEYS], sort=False, dropna=False).head(1)["run_id"].tolist()
