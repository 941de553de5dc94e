"""Table 1 of the seed paper from the run records, as LaTeX (booktabs), Markdown or CSV.

Rows are grouped by method type (the plugin's ``group``) and list method, training samples and the label
regime; columns are grouped by dataset, then structure. A cell is the mean ± std over runs (seeds ×
support draws) of each run's mean metric — Dice × 100 or HD95 — with the population standard deviation
(ddof = 0), so a single run shows ± 0.00. The best automatic result per column is bold (ties at the shown
precision are all bold). The three formats are rendered from one ``Table1`` value, so they agree number
for number.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

import pandas as pd

from bench.errors import BenchError
from bench.report import stats as statistics
from bench.report.names import AUTOMATIC_GROUPS, GROUP_ORDER, Names, shots_sort_key, shots_text
from bench.report.rows import budget_rank, labels_rank, with_row_names

FORMATS = ("md", "latex", "csv")
METRICS = ("dice", "hd95")
MISSING = "–"
MARK = "†"
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
        return f"{self.mean:.2f} ± {self.std:.2f}"


@dataclass
class Table1:
    metric: str
    rows: list[Row]
    columns: list[Column]
    cells: dict[tuple[int, int], Cell]
    budgets: list[str]
    runs: int
    split: str = "test"  # the split every run of the table was scored on
    reference: str | None = None  # the method the significance marks compare with, when computed
    reference_display: str | None = None
    # dataset display name → unit of its HD95 ("mm", "px", "mixed"; None for records that do not say)
    hd95_units: dict[str, str | None] = field(default_factory=dict)
    precisions: list[str] = field(default_factory=lambda: ["fp32"])  # of the finished runs (bench.device)

    @property
    def mixed_budgets(self) -> bool:
        return len(self.budgets) > 1

    def header(self) -> list[str]:
        names = ["Type", "Method", "Training samples", "Mask labels", "BB labels"]
        return names + ["Budget"] if self.mixed_budgets else names

    def row_header(self, row: Row) -> list[str]:
        values = [row.group, row.display, row.shots_text, row.mask_mark, row.box_mark]
        return values + [row.budget] if self.mixed_budgets else values

    def caption(self) -> str:
        """What the numbers are and which budget produced them (every table says so)."""
        if self.metric == "dice":
            what = "Dice × 100 (higher is better)"
        else:
            what = f"{_hd95_units_text(self.hd95_units)} (lower is better)"
        parts = [
            f"{what}: mean ± std over runs (seeds × support draws), {self.runs} finished runs,"
            f" scored on the {self.split} split.",
            "Best automatic result per column in bold; – no finished run.",
        ]
        if self.mixed_budgets:
            budgets = ", ".join(self.budgets)
            parts.append(f"Records mix budgets ({budgets}): the Budget column names each row's.")
        else:
            parts.append(f"Budget: {self.budgets[0]}.")
        parts.append(f"Precision: {', '.join(self.precisions)}.")
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
    budgets = sorted(summary["budget"].unique())
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
    """Bold the best automatic cell per column and budget, comparing values as they are shown."""
    candidates: dict[tuple[int, str], list[tuple[int, int]]] = {}
    for (i, j) in cells:
        if rows[i].group in AUTOMATIC_GROUPS:
            candidates.setdefault((j, rows[i].budget), []).append((i, j))
    for keys in candidates.values():
        shown = {key: round(cells[key].mean, 2) for key in keys}
        target = min(shown.values()) if lower_is_better else max(shown.values())
        for key, value in shown.items():
            if value == target:
                cells[key] = Cell(**{**vars(cells[key]), "best": True})


# --- formats ------------------------------------------------------------------------------------------


def to_markdown(table: Table1) -> str:
    records = []
    previous_group = None
    for i, row in enumerate(table.rows):
        values = table.row_header(row)
        if row.group == previous_group:  # the type names its group once, like the paper's merged cells
            values[0] = ""
        previous_group = row.group
        for j in range(len(table.columns)):
            cell = table.cells.get((i, j))
            if cell is None:
                values.append(MISSING)
                continue
            text = f"**{cell.text()}**" if cell.best else cell.text()
            values.append(text + MARK if cell.significant else text)
        records.append(values)
    frame = pd.DataFrame(records, columns=table.header() + [column.name for column in table.columns])
    # every cell as text, so that tabulate does not reformat "10" or "All" as numbers
    return frame.to_markdown(index=False, disable_numparse=True) + f"\n\nTable 1. {table.caption()}\n"


def to_csv(table: Table1) -> str:
    """One row per table row; per column its mean, std (as shown, two decimals), runs and bold flag."""
    records = []
    for i, row in enumerate(table.rows):
        values: dict[str, object] = dict(zip(table.header(), table.row_header(row), strict=True))
        values.update(method=row.method, labels=row.labels, budget=row.budget)
        for j, column in enumerate(table.columns):
            cell = table.cells.get((i, j))
            values[f"{column.name} mean"] = round(cell.mean, 2) if cell else None
            values[f"{column.name} std"] = round(cell.std, 2) if cell else None
            values[f"{column.name} runs"] = cell.runs if cell else 0
            values[f"{column.name} best"] = bool(cell and cell.best)
            if table.reference is not None:
                values[f"{column.name} p_holm"] = cell.p_holm if cell else None
        records.append(values)
    return pd.DataFrame(records).to_csv(index=False, float_format="%.6g")


_LATEX_SPECIAL = {
    "\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{",
    "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "—": "---", "–": "--",
    "±": r"$\pm$", "×": r"$\times$", "✓": r"$\checkmark$", "†": r"$^\dagger$",
    # outside math mode the default OT1 font encoding prints these as other glyphs (< as ¡)
    "<": r"$<$", ">": r"$>$", "|": r"\textbar{}",
}  # fmt: skip
_LATEX_PATTERN = re.compile("|".join(re.escape(character) for character in _LATEX_SPECIAL))


def latex_escape(text: str) -> str:
    """Text safe in a LaTeX body: special characters escaped, the table's symbols as commands."""
    return _LATEX_PATTERN.sub(lambda match: _LATEX_SPECIAL[match.group(0)], text)


def to_latex(table: Table1) -> str:
    header = table.header()[1:]  # the type becomes a group line above its rows, not a column
    width = len(header) + len(table.columns)
    lines = [
        f"% Table 1 written by `bench table` from {table.runs} finished runs; needs booktabs and amssymb.",
        r"\begin{table}[htbp]",
        r"\centering",
        rf"\caption{{{latex_escape(table.caption())}}}",
        r"\begin{tabular}{" + "l" + "c" * (width - 1) + "}",
        r"\toprule",
    ]
    spans, rules, start = [], [], len(header) + 1
    for dataset, columns in _runs_of_datasets(table.columns):
        spans.append(rf"\multicolumn{{{len(columns)}}}{{c}}{{{latex_escape(dataset)}}}")
        rules.append(rf"\cmidrule(lr){{{start}-{start + len(columns) - 1}}}")
        start += len(columns)
    lines.append(" & ".join([""] * len(header) + spans) + r" \\")
    lines.append(" ".join(rules))
    names = [latex_escape(name) for name in header] + [latex_escape(c.task_display) for c in table.columns]
    lines.append(" & ".join(names) + r" \\")
    previous_group = None
    for i, row in enumerate(table.rows):
        if row.group != previous_group:
            lines.append(r"\midrule")
            lines.append(rf"\multicolumn{{{width}}}{{l}}{{\textit{{{latex_escape(row.group)}}}}} \\")
            previous_group = row.group
        values = [latex_escape(value) for value in table.row_header(row)[1:]]
        for j in range(len(table.columns)):
            cell = table.cells.get((i, j))
            if cell is None:
                values.append(latex_escape(MISSING))
                continue
            text = latex_escape(cell.text())
            text = rf"\textbf{{{text}}}" if cell.best else text
            values.append(text + latex_escape(MARK) if cell.significant else text)
        lines.append(" & ".join(values) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(lines) + "\n"


def _runs_of_datasets(columns: list[Column]) -> list[tuple[str, list[Column]]]:
    """Consecutive columns of one dataset, for the spanning header."""
    groups: list[tuple[str, list[Column]]] = []
    for column in columns:
        if groups and groups[-1][1][0].dataset == column.dataset:
            groups[-1][1].append(column)
        else:
            groups.append((column.dataset_display, [column]))
    return groups


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
