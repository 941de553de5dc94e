"""Per-task statistics: every configuration against a reference method, on per-case metrics.

How cases are paired, corrected and resampled is ``PROTOCOL`` below; `bench report` prints it with the
results.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from bench.report.names import LABEL_ORDER

CONFIG = ["dataset", "task", "budget", "method", "labels", "shots", "backbone"]
FAMILY = ["dataset", "task", "budget"]
ALPHA = 0.05
DEFAULT_REFERENCE = "prompt-module"
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


def compare(
    cases: pd.DataFrame, reference: str = DEFAULT_REFERENCE, metric: str = "dice", intervals: bool = True
) -> pd.DataFrame:
    """One row per configuration: its mean and bootstrap CI, and the paired test against the reference.

    ``cases`` is ``bench.store.cases_frame``. Columns: the CONFIG keys, runs, cases, mean, ci_low,
    ci_high (NaN without ``intervals``, which the table's marks do not need), reference_labels, pairs,
    statistic, p, p_holm, significant.
    """
    if "variant" in cases:  # runs with --set overrides are explorations, not configurations of the comparison
        cases = cases[cases["variant"] == ""]
    if cases.empty:
        return pd.DataFrame()
    values = per_case(cases, metric)
    rows = []
    for config, group in cases.groupby(CONFIG, sort=True):
        run_values = [run[metric].to_numpy() for _, run in group.groupby("run_id")]
        low, high = bootstrap_ci(run_values) if intervals else (float("nan"), float("nan"))
        mean = float(np.mean([run.mean() for run in run_values]))
        rows.append(
            {**dict(zip(CONFIG, config, strict=True)), "runs": len(run_values),
             "cases": group["case"].nunique(), "mean": mean, "ci_low": low, "ci_high": high}
        )  # fmt: skip
    table = pd.DataFrame(rows)
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
