"""Where a grid stands, rebuilt from its records: which runs finished, failed or are missing."""

from __future__ import annotations

import pandas as pd

from bench.records.names import Names
from bench.records.spec import PAPER_DRAWS, PAPER_SEEDS

SPEC_KEYS = ["method", "dataset", "task", "labels", "shots", "draw", "seed", "budget"]

STATUS_DEFINITION = (
    "The records do not store the grid that was asked for, so the expected grid is rebuilt from them: for "
    "each method and budget, every (dataset, task) × label regime × training-sample count seen in that "
    "method's records, each with every seed and support draw seen in them (all-data runs: draw 0 only; "
    "training-free methods: one run). The paper budget always expects its protocol's seeds "
    f"{', '.join(map(str, PAPER_SEEDS))} and {PAPER_DRAWS} draws. A run is ok if any record of it finished, "
    "failed if its records all failed, and missing if it has no record."
)


def _expected_runs(records: pd.DataFrame, names: Names) -> set[tuple]:
    expected = set()
    for (method, budget), runs in records.groupby(["method", "budget"]):
        training_free = names.method(method).training_free
        seeds = set(runs["seed"]) | (set(PAPER_SEEDS) if budget == "paper" else set())
        shot_runs = runs[runs["shots"] != "all"]
        draws = set(shot_runs["draw"]) | (set(range(PAPER_DRAWS)) if budget == "paper" else set())
        tasks = set(zip(runs["dataset"], runs["task"], strict=True))
        for dataset, task in tasks:
            for labels in set(runs["labels"]):
                for shots in set(runs["shots"]):
                    if training_free:
                        pairs = {(0, 0)}
                    else:
                        shot_draws = draws if shots != "all" else {0}
                        pairs = {(draw, seed) for draw in shot_draws for seed in seeds}
                    expected |= {(method, dataset, task, labels, shots, d, s, budget) for d, s in pairs}
    return expected


def run_status(runs: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame, list[tuple]]:
    """(ok/failed/missing per budget and method, the failed runs with their error line, missing runs)."""
    keyed = runs.assign(key=[tuple(values) for values in runs[SPEC_KEYS].itertuples(index=False)])
    ok_keys = set(keyed.loc[keyed["status"] == "ok", "key"])
    failed = keyed[(keyed["status"] != "ok") & ~keyed["key"].isin(ok_keys)]
    failed_keys = set(failed["key"])
    names = Names(runs)
    expected = _expected_runs(runs, names) | ok_keys | failed_keys
    missing = sorted(expected - ok_keys - failed_keys, key=str)
    counts = []
    for budget, method in sorted({(key[7], key[0]) for key in expected}):
        mine = {key for key in expected if key[7] == budget and key[0] == method}
        counts.append({
            "budget": budget, "method": method, "method_display": names.method(method).display,
            "expected": len(mine), "ok": len(mine & ok_keys), "failed": len(mine & failed_keys),
            "missing": len(mine - ok_keys - failed_keys),
        })  # fmt: skip
    first_lines = failed["error"].fillna("(no error line)").map(lambda error: str(error).splitlines()[0])
    errors = failed.assign(error=first_lines)
    return pd.DataFrame(counts), errors[["run_id", *SPEC_KEYS, "error"]].reset_index(drop=True), missing
