"""`bench report --html`: one experiment's results as one self-contained page, ``index.html`` in the report folder.

The page holds Table 1 as `bench table` prints it (the same cells, from ``table_formats.markdown_cells``), sortable
by any column; the claims matrix with each claim's rule and the budget flag; every PNG plot of the report folder;
and a case browser per structure (``bench.report.case_browser``). Style and script are inline
(``bench.report.html_assets``) and nothing is fetched from the network, so the page opens from ``file://``.

Images: the plots are already files in the report folder, so the page links them by name (they travel with
it); the case browser's images exist nowhere else, so they are embedded as data URIs — small JPEG thumbnails
and one-colour PNG masks — and the page stays one file that can be mailed or committed whole. A case's image is
in the page once however many structures show it (ACDC's RV and LV are the same slices): the images sit in the
script's JSON block (``ImageIndex``) and each element names its image by number; the rows' masks sit there too,
and the script gives each row its images as the row nears the window.

Every name that comes from a user's data (case ids, file, dataset, task and label names, the experiment, ``--set``
values) is escaped with ``html.escape(..., quote=True)``; the JSON the script reads has ``<``, ``>`` and ``&``
escaped too, so no value can close its ``<script>`` element.
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from urllib.parse import quote

import pandas as pd
from PIL import Image

from bench.records.names import Names
from bench.records.store import record_split
from bench.report import claims
from bench.report.case_browser import BrowserColumn, Case, TaskBrowser, task_browsers
from bench.report.html_assets import SCRIPT, STYLE
from bench.report.paper import DATASETS, TRAINING_FREE, paper_for_row
from bench.report.table import Table1, build_table
from bench.report.table_formats import markdown_cells

PAGE = "index.html"
BUDGETS_DIFFER = "‡"
VERDICT_CLASS = {claims.HOLDS: "holds", claims.FAILS: "fails", claims.UNMEASURABLE: "unmeasurable"}


def text(value: object) -> str:
    """``value`` as HTML text or attribute value: every character that means something in HTML escaped."""
    return html.escape(str(value), quote=True)


def script_json(value: object) -> str:
    """JSON that is safe inside a ``<script>`` element: ``<``, ``>`` and ``&`` as JSON escapes."""
    encoded = json.dumps(value, ensure_ascii=False)
    return encoded.replace("&", "\\u0026").replace("<", "\\u003c").replace(">", "\\u003e")


def _cell(markdown: str) -> str:
    """A Markdown table cell as HTML: ``**x**`` (the best result) in bold, the rest as text."""
    if markdown.startswith("**") and "**" in markdown[2:]:
        inner, _, after = markdown[2:].partition("**")
        return f"<strong>{text(inner)}</strong>{text(after)}"
    return text(markdown)


def _header_cell(name: str) -> str:
    return f'<th scope="col" aria-sort="none"><button type="button">{text(name)}</button></th>'


def paper_columns(table: Table1, stand_ins: dict[str, str]) -> dict[int, list[str]]:
    """Column index → the seed paper's number beside each row, for each structure column that is one of the
    paper's (by its dataset's name, or as ``stand_ins`` map it) and where the paper has a number for some row."""
    found = {}
    for j, column in enumerate(table.columns):
        dataset = stand_ins.get(column.dataset, column.dataset)
        if dataset not in DATASETS:
            continue
        papers = [paper_for_row(row.method, row.labels, TRAINING_FREE if row.training_free else row.shots, dataset,
                                column.task) for row in table.rows]  # fmt: skip
        if any(papers):
            found[j] = [paper.text() if paper else "–" for paper in papers]
    return found


def table_section(table: Table1, stand_ins: dict[str, str] | None = None) -> str:
    """Table 1 as `bench table` renders it, its header cells buttons that sort the rows; beside each of the
    paper's structures, the paper's numbers (``paper_columns``) in a column of their own."""
    header, rows = markdown_cells(table)
    papers = paper_columns(table, stand_ins or {})
    first = len(header) - len(table.columns)  # the structures' columns follow the row's description
    shown = []  # per column of the page: its header, its cells and whether they are the paper's
    for k, name in enumerate(header):
        shown.append((name, [row[k] for row in rows], False))
        if k - first in papers:
            shown.append((f"{name} (paper)", papers[k - first], True))
    body = "".join("<tr>" + "".join(f'<td class="paper">{text(cells[i])}</td>' if paper else
                                    f"<td>{_cell(cells[i])}</td>" for _, cells, paper in shown) + "</tr>\n"
                   for i in range(len(rows)))  # fmt: skip
    header = [name for name, _, _ in shown]
    note = (" (paper): the seed paper's Table 1 (MedSAM ViT-B on a GPU), beside our rows of the same method, labels "
            "and k." if papers else "")  # fmt: skip
    return (f'<section id="table1"><h2>Table 1</h2>\n<table class="sortable" id="table1-rows"><thead><tr>'
            f'{"".join(map(_header_cell, header))}</tr></thead>\n<tbody>\n{body}</tbody></table>\n'
            f'<p class="caption">Table 1. {text(table.caption() + note)}</p>'
            "<p class=\"note\">Click a column's header (or focus it and press Enter) to sort by it; again to reverse."
            "</p></section>")  # fmt: skip


def claims_section(verdicts: list[claims.Verdict], names: Names) -> str:
    """The claims (a)–(d) × structures: each verdict, ‡ where its rows ran at different budgets, its evidence."""
    if not verdicts:
        return '<section id="claims"><h2>Claims of the seed paper</h2><p>No finished runs.</p></section>'
    tasks = list(dict.fromkeys((verdict.dataset, verdict.task) for verdict in verdicts))
    by_key = {(verdict.dataset, verdict.task, verdict.claim): verdict for verdict in verdicts}
    header = "".join(f'<th scope="col">{text(names.task_label(*task))}</th>' for task in tasks)
    rows = []
    for claim, statement in claims.CLAIMS.items():
        cells = []
        for dataset, task in tasks:
            verdict = by_key.get((dataset, task, claim))
            if verdict is None:
                cells.append("<td>–</td>")
                continue
            flag = BUDGETS_DIFFER if verdict.budgets.startswith("differ") else ""
            cells.append(f'<td class="verdict-{VERDICT_CLASS.get(verdict.verdict, "unmeasurable")}"><details>'
                         f"<summary>{text(verdict.verdict)}{flag}</summary>{text(verdict.evidence)} Budgets:"
                         f" {text(verdict.budgets)}.</details></td>")  # fmt: skip
        rule = f'<br><span class="note">{text(claims.CLAIM_RULES[claim])}</span>'
        rows.append(f'<tr><th scope="row">({claim}) {text(statement)}{rule}</th>{"".join(cells)}</tr>')
    return (f'<section id="claims"><h2>Claims of the seed paper</h2>\n<table><thead><tr><th scope="col">Claim'
            f' and when it holds</th>{header}</tr></thead>\n<tbody>{"".join(rows)}</tbody></table>\n'
            f'<p class="note">{BUDGETS_DIFFER}: the rows the verdict compares ran at different budgets. Open a'
            f" verdict for its rows and numbers. {text(claims.ROW_RULE)} {text(claims.BUDGETS_RULE)}</p></section>")


def _png_size(path: Path) -> tuple[int, int]:
    with Image.open(path) as image:  # reads the header only
        return image.size


def plots_section(out: Path) -> str:
    """Every PNG of the report folder, linked by name (the page sits beside them), with its size, so that the page
    is laid out before the plots load (the case rows' thumbnails come as they near the window)."""
    pngs = sorted(out.glob("*.png"))
    if not pngs:
        return '<section id="plots"><h2>Plots</h2><p>No plots in the report folder.</p></section>'
    figures = "".join(
        f'<figure><img src="{text(quote(path.name))}" alt="{text("Plot " + path.stem.replace("_", " "))}"'
        f' width="{size[0]}" height="{size[1]}" loading="lazy"><figcaption>{text(path.name)}</figcaption></figure>\n'
        for path, size in ((path, _png_size(path)) for path in pngs)
    )  # fmt: skip
    return f'<section id="plots"><h2>Plots</h2>\n{figures}</section>'


def _column_header(column: BrowserColumn, method_class: str, index: int) -> str:
    kept = "" if column.kept else ' <span class="none">no predictions kept</span>'
    if column.rerun:
        kept = f' <span class="rerun">{text(column.rerun)}</span>'
    return (f'<th scope="col" class="{method_class}" aria-sort="none" data-column="{index}">'
            f'<span class="swatch" style="background:{text(column.colour)}"></span>{text(column.label)}<br>'
            f'<span class="score">{text(column.run)}, mean Dice {column.mean_dice:.3f}</span>{kept}<br>'
            '<button type="button">sort by Dice</button></th>')  # fmt: skip


def _score(value: float | None, digits: int) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


class ImageIndex:
    """Each distinct case image of the page once, by number: structures of one dataset show the same images, and
    half an ACDC page was the same slices twice."""

    def __init__(self) -> None:
        self.numbers: dict[str, int] = {}

    def __call__(self, uri: str) -> int:
        return self.numbers.setdefault(uri, len(self.numbers))

    @property
    def uris(self) -> list[str]:
        return list(self.numbers)


def _case_row(
    browser_index: int, case_index: int, case: Case, browser: TaskBrowser, classes: list[str], images: ImageIndex
) -> str:
    name = text(case.id)
    # the masks are in the JSON block and come with the row's thumbnail as it nears the window: ACDC's 10,000
    # in the markup made its page take 5 s to open
    size = f'width="{case.thumb_size[0]}" height="{case.thumb_size[1]}"'
    cells = [f"<td>{name}</td>",
             f'<td class="image"><img data-image="{images(case.image_thumb)}" {size} alt="case {name}: image"></td>',
             f'<td><div class="thumb"><img data-mask="truth" {size} alt="case {name}: ground truth"></div></td>']
    for j, (column, cell, method_class) in enumerate(zip(browser.columns, case.cells, classes, strict=True)):
        value = "" if cell.dice is None else f"{cell.dice:.6f}"
        label, dice = text(column.label), _score(cell.dice, 3)
        scores = f'<div class="score">Dice {dice} · HD95 {_score(cell.hd95, 2)}</div>'
        if cell.thumb is None:
            shown = '<div class="none">no predictions kept</div>'
        else:
            shown = (f'<div class="thumb"><img data-mask="{j}" {size}'
                     f' alt="case {name}, {label}: prediction, Dice {dice}"></div>')
        cells.append(f'<td class="{method_class}" data-value="{value}">{shown}{scores}</td>')
    return (f'<tr class="case" tabindex="0" data-browser="{browser_index}" data-case="{case_index}"'
            f' aria-label="case {name}: open its large view">{"".join(cells)}</tr>\n')


def browser_section(browsers: list[TaskBrowser], method_classes: dict[str, str], images: ImageIndex) -> str:
    """A sortable, filterable table of cases per structure; its images go to ``images``."""
    # hidden until the script has given each image a source (laid out as their alt text, ACDC's took 7 s)
    parts = ['<section id="cases" hidden><h2>Cases</h2><p class="note">Every test case of each structure: its'
             " image, the ground truth (yellow) and, per Table 1 row, the prediction its run kept (the row's lowest"
             " draw and seed), in the row's colour from the plots; a row whose run's masks were not kept shows those"
             " of a re-run of it, with the re-run's own scores, and says so. Sort by a row's Dice with its button;"
             " click a case (or focus it and press Enter) for its large view with contours.</p>"]  # fmt: skip
    for b, browser in enumerate(browsers):
        table_id = f"cases-{b}"
        parts.append(f"<h3>{text(browser.label)}</h3>")
        if browser.problem:
            parts.append(f'<p class="none">Cases not shown: {text(browser.problem)}</p>')
            continue
        classes = [method_classes[column.method] for column in browser.columns]
        methods = dict(zip(classes, (column.method_display for column in browser.columns), strict=True))
        boxes = "".join(f'<label><input type="checkbox" checked data-table="{table_id}" data-method="{m}"'
                        f' value="{text(display)}"> {text(display)}</label>' for m, display in methods.items())
        parts.append(f'<p class="filters" id="{table_id}-filters">Methods shown: {boxes}</p>')
        header = ('<th scope="col" aria-sort="none"><button type="button">Case</button></th>'
                  '<th scope="col">Image</th><th scope="col">Ground truth</th>'
                  + "".join(_column_header(c, m, j) for j, (c, m) in enumerate(zip(browser.columns, classes,
                                                                                      strict=True))))  # fmt: skip
        rows = "".join(_case_row(b, i, case, browser, classes, images) for i, case in enumerate(browser.cases))
        parts.append(f'<p class="note">{len(browser.cases)} cases of the {text(browser.split)} split.</p>'
                     f'<table class="sortable cases" id="{table_id}"><thead><tr>{header}</tr></thead>\n'
                     f"<tbody>\n{rows}</tbody></table>")  # fmt: skip
    return "".join(parts) + "</section>"


def _browser_data(browsers: list[TaskBrowser], method_classes: dict[str, str], images: ImageIndex) -> list[dict]:
    """What the script shows, for every case: the masks of its row, and for its large view the large image (its
    number in ``images``) and the contours."""
    return [{
        "label": browser.label,
        "columns": [{"label": c.label, "run": c.run + (f"; {c.rerun}" if c.rerun else ""),
                     "method": method_classes[c.method]} for c in browser.columns],
        "cases": [{"id": case.id, "image": images(case.image_large), "truth": case.truth_contour,
                   "truth_thumb": case.truth_thumb,
                   "cells": [{"dice": cell.dice, "hd95": cell.hd95, "thumb": cell.thumb, "contour": cell.contour}
                             for cell in case.cells]}
                  for case in browser.cases],
    } for browser in browsers]  # fmt: skip


def write_page(
    out: Path, experiment: str, records: list[dict], runs: pd.DataFrame, verdicts: list[claims.Verdict],
    results: Path, data_root: Path | None = None, stand_ins: dict[str, str] | None = None,
) -> Path:
    """Write ``out/index.html`` for the records of one experiment and split; the plots must be in ``out``.
    ``stand_ins``: our datasets that stand in for one of the paper's (``paper_columns``)."""
    names = Names(runs)
    table = build_table(runs, "dice")  # `bench table`'s default, so the page shows what it prints
    rows = [(r.method, r.variant, r.labels, r.shots, r.budget, r.backbone) for r in table.rows]
    columns = [(column.dataset, column.task) for column in table.columns]
    browsers = task_browsers(records, runs, rows, columns, results, names, data_root)
    method_classes = {method: f"m{i}" for i, method in enumerate(dict.fromkeys(row[0] for row in rows))}
    hiding = "".join(f".hide-{m} .{m}{{display:none}}" for m in method_classes.values())
    images = ImageIndex()
    cases = browser_section(browsers, method_classes, images)
    data = {"browsers": _browser_data(browsers, method_classes, images), "images": images.uris}
    title = f"{experiment}: results"
    body = [
        f"<h1>{text(title)}</h1>",
        f'<p class="note">{len(records)} run records, scored on the {text(record_split(records[0]))} split.</p>',
        '<nav><a href="#table1">Table 1</a><a href="#claims">Claims</a><a href="#plots">Plots</a>'
        '<a href="#cases">Cases</a></nav>',
        table_section(table, stand_ins), claims_section(verdicts, names), plots_section(out),
        cases,
        '<dialog id="case-view" aria-label="case view"><button type="button" class="close">Close</button>'
        '<h2></h2><div class="panels"></div></dialog>',
        f'<script type="application/json" id="case-data">{script_json(data)}'
        "</script>",
        f"<script>{SCRIPT}</script>",
    ]
    page = (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1"><title>{text(title)}</title>'
            f"<style>{STYLE}{hiding}</style></head>\n<body>\n" + "\n".join(body) + "\n</body></html>\n")  # fmt: skip
    path = out / PAGE
    path.write_text(page, encoding="utf-8")
    return path

