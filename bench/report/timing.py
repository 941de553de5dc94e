"""The training-time report (cost per method and dataset) and the run-status summary, from the records."""

from __future__ import annotations

import pandas as pd

from bench.report.names import GROUP_ORDER, Names, shots_sort_key, shots_text
from bench.spec import PAPER_DRAWS, PAPER_SEEDS

COST_KEYS = ["budget", "dataset", "method", "shots", "backbone"]
COST_NOTES = (
    "Tasks and label regimes of a dataset are pooled. Fit time: mean ± std over runs; time per epoch: fit"
    " time over the run's `epochs` hyper-parameter (– for methods without epochs); inference: per test"
    " image; parameters: total and trainable; peak memory: each run's own peak, largest over the runs, and"
    " the measure it is (memory measure): the CUDA allocator's peak allocation on a GPU (cuda-allocator); on a"
    " CPU the highest resident set size sampled during fit and prediction minus the resident set at the run's"
    " start (cpu-rss-increase; it excludes the data and the backbone loaded before the run). Older records give"
    " no measure: there a CPU figure is the process-wide peak resident set."
)
SPEC_KEYS = ["method", "dataset", "task", "labels", "shots", "draw", "seed", "budget"]


def cost_table(runs: pd.DataFrame, reference: str) -> pd.DataFrame:
    """Per (budget, dataset, method, training samples, backbone), pooling tasks and label regimes: costs.

    ``fit_ratio`` is the mean fit time over the mean fit time of the reference method's runs at the same
    budget, dataset and training samples (NaN without such reference runs). Time per epoch is each run's fit time
    over its ``hparams["epochs"]``, averaged; NaN for methods without epochs (training-free ones).
    """
    finished = runs[runs["status"] == "ok"].copy()
    if finished.empty:
        return pd.DataFrame()
    epochs = pd.to_numeric(finished["epochs"], errors="coerce")
    finished["seconds_per_epoch"] = finished["fit_seconds"] / epochs.where(epochs > 0)
    finished["infer_ms_per_image"] = finished["infer_seconds_per_image"] * 1000.0
    grouped = finished.groupby(COST_KEYS, dropna=False)
    table = grouped.agg(
        runs=("run_id", "count"),
        params_total=("params_total", "max"),
        params_trainable=("params_trainable", "max"),
        fit_seconds_mean=("fit_seconds", "mean"),
        fit_seconds_std=("fit_seconds", lambda v: v.std(ddof=0)),
        seconds_per_epoch=("seconds_per_epoch", "mean"),
        infer_ms_per_image=("infer_ms_per_image", "mean"),
        peak_memory_mb=("peak_memory_mb", "max"),
        peak_memory_kind=("peak_memory_kind", lambda v: "; ".join(sorted({str(k) for k in v.dropna()}))),
        device=("device", lambda v: "; ".join(sorted({str(d) for d in v.dropna()}))),
    ).reset_index()
    same = ["budget", "dataset", "shots"]
    reference_runs = finished[finished["method"] == reference]
    reference_fit = reference_runs.groupby(same)["fit_seconds"].mean().rename("reference_fit").reset_index()
    table = table.merge(reference_fit, on=same, how="left")
    table["fit_ratio"] = table["fit_seconds_mean"] / table["reference_fit"].where(table["reference_fit"] > 0)
    table = Names(runs).annotate(table.drop(columns="reference_fit"))
    table["_shots"] = table["shots"].map(shots_sort_key)
    table["_group"] = table["group"].map(GROUP_ORDER.index)
    table = table.sort_values(["budget", "dataset_display", "_shots", "_group", "method_display"])
    return table.drop(columns=["_shots", "_group"]).reset_index(drop=True)


def _number(value: float, spec: str) -> str:
    return "–" if value is None or pd.isna(value) else format(value, spec)


def cost_markdown(table: pd.DataFrame, reference_display: str) -> str:
    ratio_column = f"Fit time vs {reference_display}"
    rows = [
        {
            "Method": row.method_display,
            "Dataset": row.dataset_display,
            "Training samples": shots_text(row.shots, row.training_free),
            "Backbone": row.backbone or "–",
            "Budget": row.budget,
            "Runs": str(row.runs),
            "Params (total)": _number(row.params_total, ",.0f"),
            "Params (trainable)": _number(row.params_trainable, ",.0f"),
            "Fit time [s]": f"{_number(row.fit_seconds_mean, '.1f')} ± {_number(row.fit_seconds_std, '.1f')}",
            "Time per epoch [s]": _number(row.seconds_per_epoch, ".2f"),
            "Inference [ms/image]": _number(row.infer_ms_per_image, ".1f"),
            "Peak memory [MB]": _number(row.peak_memory_mb, ",.0f"),
            "Memory measure": row.peak_memory_kind or "–",
            "Device": row.device or "–",
            ratio_column: _number(row.fit_ratio, ".1f") + ("×" if not pd.isna(row.fit_ratio) else ""),
        }
        for row in table.itertuples()
    ]
    return pd.DataFrame(rows).to_markdown(index=False, disable_numparse=True)


def ratio_sentences(table: pd.DataFrame, reference: str, reference_display: str) -> list[str]:
    """"AutoSAM trains 3.1× longer than Prompt module (CAMUS, 10 training samples)" for each compared row."""
    sentences = []
    for row in table[(table["method"] != reference) & table["fit_ratio"].notna()].itertuples():
        samples = "all training data" if row.shots == "all" else f"k = {row.shots}"
        where = f"({row.dataset_display}, {samples}, budget {row.budget})"
        if row.fit_ratio >= 1:
            how = f"{row.fit_ratio:.1f}× longer than"
        else:
            how = f"{1 / row.fit_ratio:.1f}× shorter than"
        sentences.append(f"{row.method_display} trains {how} {reference_display} {where}.")
    return sentences


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
