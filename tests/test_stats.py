"""Statistics against hand-made cases whose answers are known without running the code under test."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats as scipy_stats

from bench.records import store
from bench.report import stats
from tests.report_records import write_record

REFERENCE = [0.2, 0.9, 0.4, 0.7, 0.5, 0.3]
IDS = [f"syn{140 + i:03d}" for i in range(len(REFERENCE))]


pytestmark = pytest.mark.usefixtures("report_methods")


def test_holm_matches_the_hand_computed_step_down() -> None:
    # sorted 0.01, 0.03, 0.04 → ×3, ×2, ×1 = 0.03, 0.06, 0.04 → running maximum 0.03, 0.06, 0.06
    np.testing.assert_allclose(stats.holm(np.array([0.01, 0.04, 0.03])), [0.03, 0.06, 0.06])
    np.testing.assert_allclose(stats.holm(np.array([0.5, 0.9])), [1.0, 1.0])  # capped at 1


def test_wilcoxon_p_value_of_an_all_positive_paired_case_is_exact() -> None:
    # Six distinct positive differences: only 1 of the 2^6 sign patterns is as extreme on each side.
    reference = pd.Series(REFERENCE, index=IDS)
    other = reference + 0.01 * np.arange(1, 7)
    statistic, p, pairs = stats.paired_wilcoxon(reference, other)
    assert pairs == 6 and statistic == 0.0
    assert p == pytest.approx(2 / 2**6)
    assert p == pytest.approx(scipy_stats.wilcoxon(other.to_numpy(), reference.to_numpy()).pvalue)


def test_identical_values_give_p_one_without_a_warning() -> None:
    reference = pd.Series(REFERENCE, index=IDS)
    with np.errstate(all="raise"):
        assert stats.paired_wilcoxon(reference, reference.copy())[1] == 1.0


def test_cases_are_paired_by_id_and_runs_are_averaged(tmp_path) -> None:
    """Records list cases in another order and split the method over two seeds; pairing must undo both."""
    write_record(tmp_path, "rep-ours", dict(zip(IDS, REFERENCE, strict=True)), labels="box")
    offsets = 0.01 * np.arange(1, 7)
    for seed, shift in ((0, 0.05), (1, -0.05)):  # the two runs average to reference + offset
        values = {case: ref + off + shift for case, ref, off in zip(IDS, REFERENCE, offsets, strict=True)}
        write_record(tmp_path, "rep-unet", dict(reversed(list(values.items()))), seed=seed)
    cases = store.cases_frame(store.load_records(tmp_path))

    compared = stats.compare(cases, reference="rep-ours").set_index("method")

    assert compared.loc["rep-unet", "reference_labels"] == "box"  # the reference's only regime at k = 10
    assert compared.loc["rep-unet", "pairs"] == 6
    assert compared.loc["rep-unet", "p"] == pytest.approx(2 / 2**6)
    assert np.isnan(compared.loc["rep-ours", "p"])  # the reference is not tested against itself
    # by position (reversed order) the differences change sign and the test would not be this extreme
    by_position = scipy_stats.wilcoxon(np.array(REFERENCE[::-1]) + offsets[::-1], REFERENCE).pvalue
    assert by_position > 0.1


def test_holm_is_applied_within_a_task_only(tmp_path) -> None:
    write_record(tmp_path, "rep-ours", dict(zip(IDS, REFERENCE, strict=True)), labels="box")
    pairs = list(enumerate(zip(IDS, REFERENCE, strict=True)))
    better = {case: value + 0.01 * (i + 1) for i, (case, value) in pairs}
    worse = {case: value - 0.02 * (i + 1) for i, (case, value) in pairs}
    write_record(tmp_path, "rep-unet", better)
    write_record(tmp_path, "rep-autosam", worse)
    # the same methods on another task, where only one comparison exists
    write_record(tmp_path, "rep-ours", dict(zip(IDS, REFERENCE, strict=True)), labels="box", task="blob")
    write_record(tmp_path, "rep-unet", better, task="blob")
    cases = store.cases_frame(store.load_records(tmp_path))

    compared = stats.compare(cases, reference="rep-ours").set_index(["task", "method"])

    # ellipse: two comparisons with p = 1/32 each → Holm 2 × 1/32 = 1/16, not significant at 0.05
    assert compared.loc[("ellipse", "rep-unet"), "p_holm"] == pytest.approx(2 * 2 / 2**6)
    assert compared.loc[("ellipse", "rep-autosam"), "p_holm"] == pytest.approx(2 * 2 / 2**6)
    assert not compared.loc[("ellipse", "rep-unet"), "significant"]
    # blob: one comparison, left as it is and significant
    assert compared.loc[("blob", "rep-unet"), "p_holm"] == pytest.approx(2 / 2**6)
    assert compared.loc[("blob", "rep-unet"), "significant"]


def test_bootstrap_is_stratified_by_run_and_centred_on_the_mean_of_run_means() -> None:
    # Constant runs: resampling within each run can only give (0.8 + 0.6) / 2, whatever the draw. Pooling
    # the cases (5 × 0.8 and 7 × 0.6) would instead be centred on 0.683 and vary between resamples.
    low, high = stats.bootstrap_ci([np.full(5, 0.8), np.full(7, 0.6)])
    assert low == pytest.approx(0.7) and high == pytest.approx(0.7)


def test_bootstrap_interval_matches_the_normal_approximation_for_a_large_sample() -> None:
    values = np.random.default_rng(3).normal(0.0, 1.0, size=400)
    low, high = stats.bootstrap_ci([values])
    half_width = 1.96 * values.std(ddof=1) / np.sqrt(values.size)
    assert low < values.mean() < high
    assert (high - low) / 2 == pytest.approx(half_width, rel=0.15)


def test_a_run_with_a_single_case_has_no_interval() -> None:
    assert all(np.isnan(stats.bootstrap_ci([np.array([0.5])])))
