"""Per-task statistics on per-case metrics: every Table 1 row against the reference method's headline row
(``headline_tests``), and every configuration against the reference at the same budget (``compare``, which
also gives the table's significance marks).

How cases are paired, corrected and resampled is ``HEADLINE_PROTOCOL`` and ``PROTOCOL`` below; `bench report`
prints them with the results.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from bench.records.names import LABEL_ORDER, Names
from bench.records.rows import headline, nearest_shots

CONFIG = ["dataset", "task", "budget", "method", "labels", "shots", "backbone"]
FAMILY = ["dataset", "task", "budget"]
# a Table 1 row of one task: runs with --set overrides are rows of their own
ROW = [*CONFIG, "variant"]
TASK = ["dataset", "task"]
# what a headline test names when the two rows differ in it, as (column, word)
DIFFERENCES = (("budget", "budget"), ("labels", "labels"), ("shots", "k"), ("backbone", "backbone"),
               ("variant", "--set"))  # fmt: skip
ALPHA = 0.05
DEFAULT_REFERENCE = "prompt-module"
HEADLINE_PROTOCOL = """\
Pairing. Every row of Table 1 (method × labels × k × `--set` variant × budget × backbone) is compared with
the reference method's *headline* row on the same dataset and structure: the row Table 1 puts forward for it,
without `--set` overrides, with its default label regime (boxes for the prompt module), at its best budget
(paper before quick), at the row's k when the reference has it, else at the reference's fewest training
samples, and at the row's backbone when the reference has it. "Differs in" names what the two rows do not
share: a difference there is part of what the test measures. A row's per-case value is the case's metric
averaged over the row's runs (seeds × draws), so every test case counts once; the two rows are paired by
test-case id (only ids present in both count) and tested with SciPy's two-sided Wilcoxon signed-rank test.
The p-values of one dataset and structure are Holm-corrected together. Confidence intervals: as below."""
PROTOCOL = """\
Pairing. A *configuration* is (dataset, task, budget, method, labels, shots, backbone); runs with `--set`
overrides are left out of the tests (they are rows of their own in the table, unmarked). Its per-case
value is the case's metric averaged over the configuration's runs (seeds × draws), so every test case
counts once. A configuration is compared with the reference method's configuration at the same dataset,
task, budget and number of training samples — with the same label regime when the reference has it, else
the reference's first regime in the order mask, box, box-noisy; and with the same backbone when the
reference has it, else its first backbone by name. The two are paired by test-case id (only ids
present in both count) and tested with SciPy's two-sided Wilcoxon signed-rank test. The p-values of one
(dataset, task, budget) are Holm-corrected together. A configuration without a matching reference is
listed with no test.

Confidence intervals. The 95 % interval of a configuration's mean (the mean of its run means, as in the
table) comes from SciPy's bootstrap, stratified by run: cases are resampled within each run, so every run
keeps its weight in the mean. It reflects the test-set sampling, not the spread between seeds and draws
(the table's ± shows that).
"""


def holm(p_values: np.ndarray) -> np.ndarray:
    """Holm's step-down adjusted p-values (SciPy has only the Benjamini–Hochberg/Yekutieli corrections)."""
    p_values = np.asarray(p_values, dtype=float)
    order = np.argsort(p_values)
    factors = len(p_values) - np.arange(len(p_values))
    stepped = np.minimum(np.maximum.accumulate(p_values[order] * factors), 1.0)
    adjusted = np.empty_like(stepped)
    adjusted[order] = stepped
    return adjusted


def per_case(cases: pd.DataFrame, metric: str = "dice") -> pd.Series:
    """The metric per configuration and case id, averaged over the configuration's runs."""
    return cases.groupby([*CONFIG, "case"])[metric].mean()


def paired_wilcoxon(reference: pd.Series, other: pd.Series) -> tuple[float, float, int]:
    """(statistic, two-sided p, pairs) of ``other`` against ``reference``, both indexed by case id."""
    joined = pd.concat({"reference": reference, "other": other}, axis=1, join="inner")
    if len(joined) == 0:
        return float("nan"), float("nan"), 0
    differences = joined["other"] - joined["reference"]
    if np.allclose(differences, 0):  # nothing to rank: SciPy would divide by zero on the way to p = 1
        return 0.0, 1.0, len(joined)
    from scipy import stats  # imported here: `bench table` without --stats never needs SciPy

    result = stats.wilcoxon(joined["other"], joined["reference"])
    return float(result.statistic), float(result.pvalue), len(joined)


def _mean_of_run_means(*runs: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.mean([run.mean(axis=axis) for run in runs], axis=0)


def bootstrap_ci(
    runs: list[np.ndarray], confidence: float = 0.95, resamples: int = 2000, seed: int = 0
) -> tuple[float, float]:
    """CI of the mean of run means, resampling each run's cases within that run (stratified bootstrap)."""
    runs = [np.asarray(run, dtype=float) for run in runs]
    if not runs or any(run.size < 2 for run in runs):
        return float("nan"), float("nan")
    from scipy import stats

    result = stats.bootstrap(
        tuple(runs), _mean_of_run_means, n_resamples=resamples, confidence_level=confidence,
        method="percentile", vectorized=True, rng=np.random.default_rng(seed),
    )  # fmt: skip
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def _reference_config(available: set[tuple[str, str]], labels: str, backbone: str) -> tuple[str, str] | None:
    """The reference's (labels, backbone) to compare with, by the rule in PROTOCOL; None if it has none."""
    regimes = {regime for regime, _ in available}
    chosen = labels if labels in regimes else next((r for r in LABEL_ORDER if r in regimes), None)
    if chosen is None:
        return None
    backbones = sorted(b for r, b in available if r == chosen)
    return chosen, backbone if backbone in backbones else backbones[0]


def _summaries(cases: pd.DataFrame, keys: list[str], metric: str, intervals: bool) -> pd.DataFrame:
    """Per group of ``keys``: runs, cases, the mean of run means and its bootstrap CI (NaN without
    ``intervals``)."""
    rows = []
    for config, group in cases.groupby(keys, sort=True):
        run_values = [run[metric].to_numpy() for _, run in group.groupby("run_id")]
        low, high = bootstrap_ci(run_values) if intervals else (float("nan"), float("nan"))
        mean = float(np.mean([run.mean() for run in run_values]))
        rows.append(
            {**dict(zip(keys, config, strict=True)), "runs": len(run_values),
             "cases": group["case"].nunique(), "mean": mean, "ci_low": low, "ci_high": high}
        )  # fmt: skip
    return pd.DataFrame(rows)


def headline_tests(
    cases: pd.DataFrame,
    reference: str = DEFAULT_REFERENCE,
    default_labels: str | None = None,
    metric: str = "dice",
    intervals: bool = True,
) -> pd.DataFrame:
    """One row per Table 1 row: its mean and bootstrap CI, and the paired test against the reference's
    headline row of its task (``HEADLINE_PROTOCOL``; ``default_labels``: the reference's default regime).

    ``cases`` is ``bench.records.store.cases_frame``. Columns: the ROW keys, runs, cases, mean, ci_low, ci_high,
    reference_labels, reference_shots, reference_budget, reference_backbone (None where untested), differs
    (what the two rows do not share: "budget, labels"), pairs, statistic, p, p_holm, significant. The
    headline row itself is listed untested.
    """
    if cases.empty:
        return pd.DataFrame()
    cases = cases if "variant" in cases else cases.assign(variant="")
    values = cases.groupby([*ROW, "case"])[metric].mean()
    table = _summaries(cases, ROW, metric, intervals)
    names = Names(cases)
    reference_columns = [f"reference_{key}" for key in ("labels", "shots", "budget", "backbone")]
    table[[*reference_columns, "differs"]] = None
    table[["pairs", "statistic", "p", "p_holm"]] = np.nan
    for _, task_rows in table.groupby(TASK):
        mine = task_rows[task_rows["method"] == reference]
        for index, row in task_rows.iterrows():
            shots = nearest_shots(set(mine["shots"]), row["shots"])
            chosen = headline(mine[mine["shots"] == shots], default_labels, row["backbone"])
            if chosen is None or chosen.name == index:
                continue
            statistic, p, pairs = paired_wilcoxon(values.loc[tuple(chosen[ROW])], values.loc[tuple(row[ROW])])
            differs = _differences(row, chosen, names.method(row["method"]).training_free)
            table.loc[index, reference_columns] = [chosen[key] for key in ("labels", "shots", "budget", "backbone")]
            table.loc[index, ["differs", "pairs", "statistic", "p"]] = [differs, pairs, statistic, p]
    has_p = table["p"].notna()
    for _, task_rows in table[has_p].groupby(TASK):
        table.loc[task_rows.index, "p_holm"] = holm(task_rows["p"].to_numpy(dtype=float))
    table["significant"] = table["p_holm"].astype(float) < ALPHA
    return table


def _differences(row: pd.Series, reference: pd.Series, training_free: bool) -> str:
    """What ``row`` does not share with the reference row: "budget, labels". A method that does not train has
    no budget or k to differ in, and a method without a backbone no backbone."""
    ignored = {"budget", "shots"} if training_free else set()
    if not (row["backbone"] and reference["backbone"]):
        ignored.add("backbone")
    return ", ".join(word for key, word in DIFFERENCES if key not in ignored and row[key] != reference[key])


def compare(
    cases: pd.DataFrame, reference: str = DEFAULT_REFERENCE, metric: str = "dice", intervals: bool = True
) -> pd.DataFrame:
    """One row per configuration: its mean and bootstrap CI, and the paired test against the reference.

    ``cases`` is ``bench.records.store.cases_frame``. Columns: the CONFIG keys, runs, cases, mean, ci_low,
    ci_high (NaN without ``intervals``, which the table's marks do not need), reference_labels, pairs,
    statistic, p, p_holm, significant.
    """
    if "variant" in cases:  # runs with --set overrides are explorations, not configurations of the comparison
        cases = cases[cases["variant"] == ""]
    if cases.empty:
        return pd.DataFrame()
    values = per_case(cases, metric)
    table = _summaries(cases, CONFIG, metric, intervals)
    table["reference_labels"] = None
    table[["pairs", "statistic", "p", "p_holm"]] = np.nan
    configs = values.index.droplevel("case").unique()
    for index, row in table.iterrows():
        family, shots = tuple(row[FAMILY]), row["shots"]
        available = {(c[4], c[6]) for c in configs if c[:3] == family and c[3] == reference and c[5] == shots}
        chosen = _reference_config(available, row["labels"], row["backbone"])
        if chosen is None or (row["method"] == reference and chosen == (row["labels"], row["backbone"])):
            continue
        ref_labels, ref_backbone = chosen
        ref_values = values.loc[(*family, reference, ref_labels, shots, ref_backbone)]
        statistic, p, pairs = paired_wilcoxon(ref_values, values.loc[tuple(row[CONFIG])])
        table.loc[index, ["reference_labels", "pairs", "statistic", "p"]] = [ref_labels, pairs, statistic, p]
    has_p = table["p"].notna()
    for _, family_rows in table[has_p].groupby(FAMILY):
        table.loc[family_rows.index, "p_holm"] = holm(family_rows["p"].to_numpy(dtype=float))
    table["significant"] = table["p_holm"].astype(float) < ALPHA
    return table
