"""The front page's two generated blocks: the headline table and the claims matrix.

``headline``: one row per method of the seed paper (MedSAM prompted with the true box first, as the upper bound it
is), one column per dataset and structure of the named experiments; a cell is "ours (paper)": the method's
headline row (``rows.headline``: best budget, no ``--set`` variant) at the paper's labels and k, beside the
paper's number. † marks a `quick`-budget cell; * marks the columns of a stand-in dataset (``stand-ins=``, e.g. a
resized copy of the paper's), whose geometry is not the paper's.

``beside-paper``: every Table 1 row of one experiment, each column's cell "ours (runs)" beside the paper's number
where the paper ran that method with those labels and k.

``claims``: the seed paper's claims (a)–(d) × the same columns, read from each experiment's ``report/claims.csv``
(written by ``bench report``), each claim stated once; ‡ marks a verdict whose compared rows ran at different
budgets. ``claim`` (inline): one verdict of one experiment's claims.csv, for prose that names it.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import pandas as pd

from bench.errors import BenchError
from bench.records.names import Names
from bench.records.rows import budget_rank, headline, with_row_names
from bench.report.paper import DATASETS, TRAINING_FREE, paper_for_row, paper_result, parse_stand_ins
from bench.report.table import build_table, summarise

if TYPE_CHECKING:
    from bench.report.doc_blocks import Block, Records

UPPER_BOUND = "medsam-box"
# the paper's methods as its Table 1 trains them: labels, k
METHODS = (
    (UPPER_BOUND, "box", TRAINING_FREE),
    ("unet", "mask", "10"),
    ("transunet", "mask", "10"),
    ("autosam", "mask", "10"),
    ("persam", "mask", "1"),
    ("prompt-module", "box", "10"),
)
LEARNS_FROM = {"box": "boxes", "mask": "masks"}
QUICK_MARK, STAND_IN_MARK, BUDGETS_DIFFER_MARK = "†", "*", "‡"
VERDICTS = {"holds": "holds", "does not hold": "does not hold", "not measurable here": "not measurable"}


def _stand_ins(block: Block) -> dict[str, str]:
    """``stand-ins=our-dataset=paper-dataset,…``: our datasets that stand in for one of the paper's."""
    return parse_stand_ins(block.arguments.get("stand-ins", ""), f"bench:{block.kind} stand-ins=")


def _experiments(block: Block) -> list[str]:
    return [name for name in block.take("experiments").split(",") if name]


def _column(names: Names, dataset: str, task: str, stand_ins: dict[str, str]) -> tuple[str, tuple]:
    """A structure's column name ("ACDC RV", "CAMUS LV*") and its place: the paper's dataset order, then the
    dataset's own task order."""
    paper_dataset = stand_ins.get(dataset, dataset)
    short = task.upper() if len(task) <= 3 else task
    name = f"{paper_dataset.upper()} {short}{STAND_IN_MARK if dataset in stand_ins else ''}"
    tasks = names.task_order(dataset)
    rank = DATASETS.index(paper_dataset) if paper_dataset in DATASETS else len(DATASETS)
    return name, (rank, paper_dataset, tasks.index(task) if task in tasks else len(tasks), task)


def headline_block(block: Block, records: Records) -> str:
    block.unknown(("experiments", "stand-ins"))
    stand_ins = _stand_ins(block)
    places: dict[str, tuple] = {}
    rows: dict[str, list[str]] = {method: [] for method, _, _ in METHODS}
    for experiment in _experiments(block):
        runs = records.runs(experiment)
        names = Names(runs)
        summary = with_row_names(summarise(runs), names)
        # a method without trainable parameters (PerSAM) has no budget, whatever its records name
        trains = runs.groupby("method")["params_trainable"].max().fillna(1) > 0
        for (dataset, task), mine in summary.groupby(["dataset", "task"]):
            paper_dataset = stand_ins.get(dataset, dataset)
            name, place = _column(names, dataset, task, stand_ins)
            if name in places:
                raise BenchError(f"bench:{block.kind}: two of the experiments hold {name}: name one of them")
            places[name] = place
            for method, labels, shots in METHODS:
                candidates = mine[(mine["method"] == method) & (mine["labels"] == labels)]
                if shots != TRAINING_FREE:
                    candidates = candidates[candidates["shots"] == shots]
                chosen = headline(candidates, labels)
                paper = paper_result(method, paper_dataset, task, shots)
                ours = "–" if chosen is None else f"{chosen['mean']:.2f}"
                quick = chosen is not None and chosen["budget"] == "quick" and not chosen["training_free"]
                if quick and trains.get(method, True):
                    ours += QUICK_MARK
                rows[method].append(f"{ours} ({paper.mean:.2f})" if paper else ours)
    if not places:
        raise BenchError(f"bench:{block.kind}: the experiments hold no finished run")
    order = sorted(places, key=places.get)
    names = Names(records.runs(_experiments(block)[0]))
    lines = []
    for method, labels, shots in METHODS:
        display = names.method(method).display
        if method == UPPER_BOUND:
            display += " with the true box: upper bound, needs a box per test image"
            learns = "nothing (prompted)"
        else:
            learns = f"{shots} {LEARNS_FROM[labels] if shots != '1' else labels}"
        cells = dict(zip(places, rows[method], strict=True))
        lines.append([display, learns, *[cells[name] for name in order]])
    frame = pd.DataFrame(lines, columns=["Method", "learns from", *order])
    return "\n" + frame.to_markdown(index=False, disable_numparse=True) + "\n"


def _budgets_differ(budgets: str) -> bool:
    """Whether a claims.csv ``budgets`` text ("differ (paper, quick)", "UNet same (quick), …") names two budgets."""
    named = {budget.strip() for group in re.findall(r"\(([^)]*)\)", budgets) for budget in group.split(",")}
    return len(named) > 1


def claims_block(block: Block, records: Records) -> str:
    block.unknown(("experiments", "stand-ins"))
    stand_ins = _stand_ins(block)
    statements: dict[str, str] = {}
    cells: dict[str, dict[str, str]] = {}
    places: dict[str, tuple] = {}
    for experiment in _experiments(block):
        names = Names(records.runs(experiment))
        for verdict in records.claims(experiment).itertuples():
            column, places[column] = _column(names, verdict.dataset, verdict.task, stand_ins)
            statements.setdefault(verdict.claim, verdict.statement)
            text = VERDICTS.get(verdict.verdict, verdict.verdict)
            cells.setdefault(verdict.claim, {})[column] = text + (
                f" {BUDGETS_DIFFER_MARK}" if _budgets_differ(verdict.budgets) else ""
            )
    if not statements:
        raise BenchError(f"bench:{block.kind}: the experiments' claims.csv hold no verdict")
    order = sorted(places, key=places.get)
    lines = [[f"({claim}) {statements[claim]}", *[cells[claim].get(column, "–") for column in order]]
             for claim in sorted(statements)]  # fmt: skip
    frame = pd.DataFrame(lines, columns=["Claim of the seed paper", *order])
    marked = any(BUDGETS_DIFFER_MARK in cell for row in cells.values() for cell in row.values())
    legend = f"\n{_budgets_legend(_experiments(block), records)}\n" if marked else ""
    return "\n" + frame.to_markdown(index=False, disable_numparse=True) + "\n" + legend


def _budgets_legend(experiments: list[str], records: Records) -> str:
    """The ‡ line: at which budget each compared method's headline rows (the paper's labels and k) ran."""
    budgets: dict[str, set[str]] = {}
    displays: dict[str, str] = {}
    for experiment in experiments:
        runs = records.runs(experiment)
        names = Names(runs)
        summary = summarise(runs)
        trains = runs.groupby("method")["params_trainable"].max().fillna(1) > 0
        for method, labels, shots in METHODS:
            rows = summary[(summary["method"] == method) & (summary["labels"] == labels) & (summary["shots"] == shots)]
            chosen = headline(rows, labels)
            if method != UPPER_BOUND and trains.get(method, False) and chosen is not None:
                budgets.setdefault(method, set()).add(chosen["budget"])
                displays[method] = names.method(method).display
    groups: dict[str, list[str]] = {}
    for method, ran in sorted(budgets.items(), key=lambda item: min(map(budget_rank, item[1]))):
        groups.setdefault(" and ".join(f"`{b}`" for b in sorted(ran, key=budget_rank)), []).append(displays[method])
    described = "; ".join(f"{_listed(methods)} at {ran}" for ran, methods in groups.items())
    return (f"{BUDGETS_DIFFER_MARK} the compared rows ran at different budgets" + (f" ({described})" if described
            else "") + ", so the verdict compares training lengths as much as methods.")  # fmt: skip


def _listed(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def beside_paper_block(block: Block, records: Records) -> str:
    block.unknown(("experiment", "stand-ins"))
    stand_ins = _stand_ins(block)
    runs = records.runs(block.take("experiment"))
    table, names = build_table(runs), Names(runs)
    trains = runs.groupby("method")["params_trainable"].max().fillna(1) > 0
    header = ["Method", "labels", "k", "budget"]
    for column in table.columns:
        name, _ = _column(names, column.dataset, column.task, stand_ins)
        header += [f"{name} ours (runs)", f"{name} paper"]
    lines = []
    for i, row in enumerate(table.rows):
        budget = row.budget_text if trains.get(row.method, True) else "–"
        line = [row.display, row.labels if row.shows_labels else "–", row.shots_text, budget]
        for j, column in enumerate(table.columns):
            cell = table.cells.get((i, j))
            line.append("–" if cell is None else f"{cell.text()} ({cell.runs})")
            shots = TRAINING_FREE if row.training_free else row.shots
            paper = paper_for_row(row.method, row.labels, shots, stand_ins.get(column.dataset, column.dataset),
                                  column.task)  # fmt: skip
            line.append(paper.text() if paper else "–")
        lines.append(line)
    return "\n" + pd.DataFrame(lines, columns=header).to_markdown(index=False, disable_numparse=True) + "\n"


def claim_block(block: Block, records: Records) -> str:
    """One verdict, inline: "holds", "does not hold" or "not measurable" (as the matrix words it)."""
    block.unknown(("experiment", "dataset", "task", "claim"))
    verdicts = records.claims(block.take("experiment"))
    wanted = [block.take(key) for key in ("dataset", "task", "claim")]
    found = verdicts[(verdicts[["dataset", "task", "claim"]] == wanted).all(axis=1)]
    if len(found) != 1:
        raise BenchError(f"bench:{block.kind}: claims.csv has no verdict for {' '.join(wanted)}")
    verdict = found.iloc[0]["verdict"]
    return VERDICTS.get(verdict, verdict)
