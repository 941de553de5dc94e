"""Table 1 rendered: Markdown, CSV and LaTeX (booktabs) from one ``Table1`` value (``bench.report.table``),
so the three agree number for number and bold for bold."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import pandas as pd

if TYPE_CHECKING:
    from bench.report.table import Column, Table1

MISSING = "–"
MARK = "†"


def to_markdown(table: Table1) -> str:
    header, records = markdown_cells(table)
    frame = pd.DataFrame(records, columns=header)
    # every cell as text, so that tabulate does not reformat "10" or "All" as numbers
    return frame.to_markdown(index=False, disable_numparse=True) + f"\n\nTable 1. {table.caption()}\n"


def markdown_cells(table: Table1) -> tuple[list[str], list[list[str]]]:
    """The Markdown table's header and its rows' cells, as text (bold as ``**…**``): what the HTML page shows too,
    so that its table reads as `bench table` prints it."""
    records = []
    previous_group = None
    for i, row in enumerate(table.rows):
        values = table.row_header(i)
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
    return table.header() + [column.name for column in table.columns], records


def to_csv(table: Table1) -> str:
    """One row per table row; per column its mean, std (as shown, two decimals), runs and bold flag."""
    records = []
    for i, row in enumerate(table.rows):
        values: dict[str, object] = dict(zip(table.header(), table.row_header(i), strict=True))
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
        values = [latex_escape(value) for value in table.row_header(i)[1:]]
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
