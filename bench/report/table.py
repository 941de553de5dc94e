"""Table 1 of the seed paper from the run records, as LaTeX (booktabs), Markdown or CSV.

Rows are grouped by method type (the plugin's ``group``) and list method, training samples and the label
regime, the budget (``–`` for a training-free row, which no budget changes), the number of runs, and a
``--set`` variant in brackets after the method. Columns are grouped by dataset, then structure. A cell is the
mean ± std over runs (seeds × support draws) of each run's mean metric — Dice × 100 or HD95 — with the
population standard deviation (ddof = 0); a single run shows its value alone.

Bold marks the best automatic result per column *among rows of the same budget* (ties at the shown precision
are all bold; a training-free row, which no budget changes, competes at every budget). Rows of different
budgets are different experiments — a `quick` row trains a fraction of a `paper` row's epochs at a smaller
input — so one bold cell per column would crown a budget, not a method; the caption says which rule applies.
The three formats are rendered from one ``Table1`` value, so they agree number for number and bold for bold.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import pandas as pd

from bench.errors import BenchError
from bench.records.names import AUTOMATIC_GROUPS, GROUP_ORDER, Names, shots_sort_key, shots_text
from bench.records.rows import budget_rank, labels_rank, with_row_names
from bench.report import stats as statistics
from bench.report.table_formats import MARK, MISSING, to_csv, to_latex, to_markdown

FORMATS = ("md", "latex", "csv")
METRICS = ("dice", "hd95")
# The seed paper's dataset order (HC | CAMUS | ACDC); other datasets follow by display name.
PAPER_DATASETS = ("hc18", "camus", "acdc")


@dataclass(frozen=True)
class Row:
    group: str
    method: str
    display: str
    labels: str
    shots: str  # "all" or k, as in the store's frames
    training_free: bool
    budget: str
    backbone: str  # "" for methods without the SAM backbone
    shows_labels: bool = True  # False for a method that neither learns from labels nor is prompted with them
    variant: str = ""  # the runs' --set overrides, "key=value, …"

    @property
    def shots_text(self) -> str:
        return shots_text(self.shots, self.training_free)

    @property
    def budget_text(self) -> str:
        return MISSING if self.training_free else self.budget

    @property
    def mask_mark(self) -> str:
        return "✓" if self.shows_labels and self.labels == "mask" else ""

    @property
    def box_mark(self) -> str:
        return {"box": "✓", "box-noisy": "✓ (noisy)"}.get(self.labels, "") if self.shows_labels else ""


@dataclass(frozen=True)
class Column:
    dataset: str
    task: str
    dataset_display: str
    task_display: str

    @property
    def name(self) -> str:
        return f"{self.dataset_display} {self.task_display}"


@dataclass(frozen=True)
class Cell:
    mean: float
    std: float
    runs: int
    best: bool = False
    significant: bool = False
    p_holm: float = math.nan

    def text(self) -> str:
        return f"{self.mean:.2f}" if self.runs == 1 else f"{self.mean:.2f} ± {self.std:.2f}"


@dataclass
class Table1:
    metric: str
    rows: list[Row]
    columns: list[Column]
    cells: dict[tuple[int, int], Cell]
    budgets: list[str]  # the budgets of the rows that train
    runs: int
    split: str = "test"  # the split every run of the table was scored on
    reference: str | None = None  # the method the significance marks compare with, when computed
    reference_display: str | None = None
    # dataset display name → unit of its HD95 ("mm", "px", "mixed"; None for records that do not say)
    hd95_units: dict[str, str | None] = field(default_factory=dict)
    precisions: list[str] = field(default_factory=lambda: ["fp32"])  # of the finished runs (bench.compute.device)

    @property
    def mixed_budgets(self) -> bool:
        return len(self.budgets) > 1

    def header(self) -> list[str]:
        names = ["Type", "Method", "Training samples", "Mask labels", "BB labels"]
        return names + (["Budget"] if self.mixed_budgets else []) + ["Runs"]

    def row_header(self, i: int) -> list[str]:
        row = self.rows[i]
        values = [row.group, row.display, row.shots_text, row.mask_mark, row.box_mark]
        return values + ([row.budget_text] if self.mixed_budgets else []) + [self.runs_text(i)]

    def runs_text(self, i: int) -> str:
        """The row's finished runs: one number, or one per column (in column order) where they differ."""
        counts = [str(self.cells[(i, j)].runs) if (i, j) in self.cells else "0" for j in range(len(self.columns))]
        return counts[0] if len(set(counts)) == 1 else " / ".join(counts)

    def caption(self) -> str:
        """What the numbers are and which budget produced them (every table says so)."""
        if self.metric == "dice":
            what = "Dice × 100 (higher is better)"
        else:
            what = f"{_hd95_units_text(self.hd95_units)} (lower is better)"
        parts = [
            f"{what}: mean ± population std (ddof 0) over runs (seeds × support draws), {self.runs} finished"
            f" runs, scored on the {self.split} split. Runs: finished runs per row (per column where they"
            " differ); a single run shows its value without ±. – in a cell: no finished run.",
        ]
        if self.mixed_budgets:
            budgets = ", ".join(self.budgets)
            parts.append(
                f"Records mix budgets ({budgets}): the Budget column names each row's (– for a training-free row)."
                " Bold: the best automatic result per column among rows of the same budget, so a column has one"
                " bold cell per budget; a training-free row competes at every budget."
            )
        else:
            budget = f"Budget: {self.budgets[0]}." if self.budgets else "No row trains: budgets do not apply."
            parts.append(f"{budget} Bold: the best automatic result per column.")
        parts.append(f"Precision: {', '.join(self.precisions)}.")
        if any(row.variant for row in self.rows):
            parts.append("[key=value]: the row's --set overrides.")
        if self.reference is not None:
            parts.append(
                f"{MARK} differs from {self.reference_display} (same structure, budget and"
                f" training samples) at Holm-adjusted p < {statistics.ALPHA}, two-sided paired Wilcoxon"
                " signed-rank test on per-case values averaged over runs."
            )
        return " ".join(parts)


_UNIT_WORDS = {"mm": "in mm", "px": "in pixels", "mixed": "in mm and pixels (some images lack a pixel spacing)"}


def _hd95_units_text(units: dict[str, str | None]) -> str:
    """"HD95 in mm", or, when datasets differ, the unit of each; the old wording for records without one."""
    if not units or None in units.values():
        return "HD95 in mm, in pixels where a dataset has no pixel spacing"
    if len(set(units.values())) == 1:
        return f"HD95 {_UNIT_WORDS[next(iter(units.values()))]}"
    parts = [f"{_UNIT_WORDS[unit]} for {dataset}" for dataset, unit in units.items()]
    return "HD95 " + "; ".join(parts)


def summarise(runs: pd.DataFrame, metric: str = "dice") -> pd.DataFrame:
    """Per (method, variant, labels, shots, budget, backbone, dataset, task): mean, std (ddof 0), finished runs."""
    if metric not in METRICS:
        raise BenchError(f"--metric takes {', '.join(METRICS)}, not '{metric}'")
    finished = runs[(runs["status"] == "ok") & runs[metric].notna()].copy()
    scale = 100.0 if metric == "dice" else 1.0
    finished["value"] = finished[metric] * scale
    if "variant" not in finished:
        finished["variant"] = ""
    # runs with different --set overrides are different configurations: a row each
    keys = ["method", "variant", "labels", "shots", "budget", "backbone", "dataset", "task"]
    grouped = finished.groupby(keys, dropna=False)["value"]
    return grouped.agg(mean="mean", std=lambda v: v.std(ddof=0), runs="count").reset_index()


def _row_key(row: Row) -> tuple:
    return (GROUP_ORDER.index(row.group), row.display.lower(), row.method, labels_rank(row.labels),
            shots_sort_key(row.shots), budget_rank(row.budget), row.backbone, row.variant)  # fmt: skip


def _column_key(column: Column, names: Names) -> tuple:
    rank = PAPER_DATASETS.index(column.dataset) if column.dataset in PAPER_DATASETS else len(PAPER_DATASETS)
    tasks = names.task_order(column.dataset)
    task_rank = tasks.index(column.task) if column.task in tasks else len(tasks)
    return (rank, column.dataset_display.lower(), column.dataset, task_rank, column.task)


def build_table(
    runs: pd.DataFrame,
    metric: str = "dice",
    cases: pd.DataFrame | None = None,
    reference: str = statistics.DEFAULT_REFERENCE,
) -> Table1:
    """The table's rows, columns and cells; with ``cases`` (the store's cases frame), significance marks."""
    splits = sorted(set(runs["eval_split"].dropna())) if "eval_split" in runs else ["test"]
    if len(splits) > 1:  # a caller that skipped store.of_split: val and test numbers must not be averaged
        raise BenchError(f"runs scored on several splits ({', '.join(splits)}): tabulate one split at a time")
    summary = summarise(runs, metric)
    if summary.empty:
        raise BenchError("no finished runs to tabulate")
    names = Names(runs)
    # a method run with several backbones or --set variants gets a row per backbone and variant, named after it
    summary = with_row_names(summary, names)
    rows = sorted(
        {Row(r.group, r.method, r.row_display, r.labels, r.shots, r.training_free, r.budget, r.backbone,
             names.method(r.method).shows_labels, r.variant)
         for r in summary.itertuples()},
        key=_row_key,
    )  # fmt: skip
    columns = sorted(
        {Column(r.dataset, r.task, r.dataset_display, names.task_display(r.dataset, r.task))
         for r in summary.itertuples()},
        key=lambda column: _column_key(column, names),
    )  # fmt: skip
    row_index = {(row.method, row.variant, row.labels, row.shots, row.budget, row.backbone): i
                 for i, row in enumerate(rows)}  # fmt: skip
    column_index = {(column.dataset, column.task): j for j, column in enumerate(columns)}
    tests = _significance(cases, reference, metric) if cases is not None else {}
    cells = {}
    for r in summary.itertuples():
        i = row_index[(r.method, r.variant, r.labels, r.shots, r.budget, r.backbone)]
        j = column_index[(r.dataset, r.task)]
        p_holm = math.nan if r.variant else tests.get(
            (r.dataset, r.task, r.budget, r.method, r.labels, r.shots, r.backbone), math.nan
        )  # fmt: skip
        cells[(i, j)] = Cell(r.mean, r.std, r.runs, significant=p_holm < statistics.ALPHA, p_holm=p_holm)
    _mark_best(rows, cells, lower_is_better=metric == "hd95")
    budgets = sorted({row.budget for row in rows if not row.training_free}, key=budget_rank)
    compared = cases is not None
    units = {column.dataset_display: names.spacing_unit(column.dataset) for column in columns}
    finished = runs[runs["status"] == "ok"] if "status" in runs else runs
    precisions = sorted(set(finished["precision"].dropna())) if "precision" in finished else ["fp32"]
    return Table1(metric, rows, columns, cells, budgets, int(summary["runs"].sum()), splits[0] if splits else "test",
                  reference if compared else None, names.method(reference).display if compared else None,
                  units, precisions or ["fp32"])  # fmt: skip


def _significance(cases: pd.DataFrame, reference: str, metric: str) -> dict[tuple, float]:
    if cases.empty or reference not in set(cases["method"]):
        present = ", ".join(sorted(set(cases["method"]))) if not cases.empty else "none"
        raise BenchError(
            f"no finished runs of the reference method '{reference}' to test against; "
            f"choose one with --reference (methods with finished runs: {present})"
        )
    compared = statistics.compare(cases, reference, metric, intervals=False)
    compared = compared[compared["p_holm"].notna()]
    return {tuple(row[statistics.CONFIG]): float(row["p_holm"]) for _, row in compared.iterrows()}


def _mark_best(rows: list[Row], cells: dict[tuple[int, int], Cell], lower_is_better: bool) -> None:
    """Bold the best automatic cell per column and budget, comparing values as they are shown; a training-free
    row, which no budget changes, competes in every budget of its column (alone when no row there trains)."""
    automatic = [(i, j) for (i, j) in cells if rows[i].group in AUTOMATIC_GROUPS]
    candidates: dict[tuple[int, str], list[tuple[int, int]]] = {}
    for i, j in automatic:
        if not rows[i].training_free:
            candidates.setdefault((j, rows[i].budget), []).append((i, j))
    for i, j in automatic:
        if rows[i].training_free:
            budgets = [key for key in candidates if key[0] == j and not rows[candidates[key][0][0]].training_free]
            for key in budgets or [(j, MISSING)]:
                candidates.setdefault(key, []).append((i, j))
    for keys in candidates.values():
        shown = {key: round(cells[key].mean, 2) for key in keys}
        target = min(shown.values()) if lower_is_better else max(shown.values())
        for key, value in shown.items():
            if value == target:
                cells[key] = Cell(**{**vars(cells[key]), "best": True})


def render_table(
    runs: pd.DataFrame,
    metric: str = "dice",
    fmt: str = "md",
    cases: pd.DataFrame | None = None,
    reference: str = statistics.DEFAULT_REFERENCE,
) -> str:
    """The table in one format; ``cases`` (the store's cases frame) adds the significance marks."""
    if fmt not in FORMATS:
        raise BenchError(f"--format takes {', '.join(FORMATS)}, not '{fmt}'")
    table = build_table(runs, metric, cases, reference)
    return {"md": to_markdown, "latex": to_latex, "csv": to_csv}[fmt](table)
