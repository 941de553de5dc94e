"""The report's Claims section, built from synthetic records of the built-in methods for every verdict."""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats as scipy_stats

from bench.records import store
from bench.report import claims
from bench.report.build import write_report
from tests.report_records import write_record

IDS = [f"syn{140 + i:03d}" for i in range(8)]
OFFSETS = 0.005 * np.arange(len(IDS))  # distinct per case (mean 1.75 points), so paired differences never tie


def _write(results, method: str, labels: str, dice: float, *, shots: int | None = 10, budget: str = "quick",
           seeds=(0, 1), fit_seconds: float = 50.0, epochs: int | None = 50, params_trainable: int = 250_000,
           step: float = 0.0, overrides: dict | None = None) -> np.ndarray:  # fmt: skip
    """Runs of one Table 1 row whose per-case Dice, averaged over seeds, is ``dice + OFFSETS + step × i``."""
    values = dice + OFFSETS + step * np.arange(len(IDS))
    for seed in seeds:
        shift = 0.01 * (seed - (len(seeds) - 1) / 2)  # seeds differ, their mean does not
        write_record(results, method, dict(zip(IDS, (values + shift).tolist(), strict=True)), labels=labels,
                     shots=shots, seed=seed, budget=budget, fit_seconds=fit_seconds, epochs=epochs,
                     params_trainable=params_trainable, overrides=overrides)  # fmt: skip
    return values


def _verdicts(results) -> dict[str, claims.Verdict]:
    records = store.load_records(results)
    found = claims.check_claims(store.runs_frame(records), store.cases_frame(records))
    assert {(verdict.dataset, verdict.task) for verdict in found} == {("synthetic", "ellipse")}
    return {verdict.claim: verdict for verdict in found}


def test_every_claim_holds_where_the_records_say_so(tmp_path) -> None:
    ours = _write(tmp_path, "prompt-module", "box", 0.80, budget="paper", fit_seconds=100.0, epochs=100)
    unet = _write(tmp_path, "unet", "mask", 0.60)
    _write(tmp_path, "transunet", "mask", 0.70)
    _write(tmp_path, "autosam", "mask", 0.84, budget="paper", fit_seconds=600.0, epochs=200)  # 3 s vs 1 s per epoch
    _write(tmp_path, "persam", "mask", 0.40, shots=1, seeds=(0,), fit_seconds=0.0, epochs=None, params_trainable=0)
    # all data: ours loses 0.05, UNet 0.25, TransUNet 0.20
    _write(tmp_path, "prompt-module", "box", 0.85, shots=None, budget="paper", seeds=(0,))
    _write(tmp_path, "unet", "mask", 0.85, shots=None, seeds=(0,))
    _write(tmp_path, "transunet", "mask", 0.90, shots=None, seeds=(0,))

    verdicts = _verdicts(tmp_path)

    assert {claim: verdict.verdict for claim, verdict in verdicts.items()} == dict.fromkeys("abcd", claims.HOLDS)
    p = scipy_stats.wilcoxon(ours, unet).pvalue  # ours is above UNet on every case
    assert "+20.00 points" in verdicts["a"].evidence and f"p = {p:.3g}" in verdicts["a"].evidence
    assert verdicts["a"].budgets == "differ (paper, quick)"
    assert "3.00 s against 1.00 s, 3.0×" in verdicts["b"].evidence
    assert verdicts["b"].budgets == "same (paper)"
    # PerSAM trains nothing, so only the other rows' budgets count; the closest is UNet, 20 points above
    assert "UNet · mask · k=10 · quick 61.75, 20.00 points above" in verdicts["c"].evidence
    assert verdicts["c"].budgets == "differ (paper, quick)"
    assert "Prompt module (ours) 5.00 points (86.75 → 81.75)" in verdicts["d"].evidence


def test_claims_do_not_hold_where_the_records_contradict_them(tmp_path) -> None:
    _write(tmp_path, "prompt-module", "box", 0.60, budget="paper", fit_seconds=100.0, epochs=100)
    _write(tmp_path, "unet", "mask", 0.70)  # above ours on every case: significant
    _write(tmp_path, "transunet", "mask", 0.80)
    _write(tmp_path, "autosam", "mask", 0.55, budget="paper", fit_seconds=300.0, epochs=100)  # below ours
    _write(tmp_path, "persam", "mask", 0.52, shots=1, seeds=(0,), params_trainable=0)  # 3 below AutoSAM
    _write(tmp_path, "prompt-module", "box", 0.90, shots=None, budget="paper", seeds=(0,))  # ours loses 30
    _write(tmp_path, "unet", "mask", 0.80, shots=None, seeds=(0,))
    _write(tmp_path, "transunet", "mask", 0.90, shots=None, seeds=(0,))

    verdicts = _verdicts(tmp_path)

    assert {claim: verdict.verdict for claim, verdict in verdicts.items()} == dict.fromkeys("abcd", claims.FAILS)
    assert "-10.00 points, paired p = 0.00781" in verdicts["a"].evidence  # 2 / 2^8: every case one way
    assert "-5.00 points" in verdicts["b"].evidence and "3.0×" in verdicts["b"].evidence
    assert "AutoSAM · mask · k=10 · paper 56.75, 3.00 points above" in verdicts["c"].evidence


def test_claims_compare_rows_of_one_budget_wherever_both_methods_ran_at_it(tmp_path) -> None:
    _write(tmp_path, "prompt-module", "box", 0.70, budget="paper", fit_seconds=100.0, epochs=100)
    _write(tmp_path, "prompt-module", "box", 0.50, budget="quick")  # the budget UNet ran at: this one is compared
    _write(tmp_path, "unet", "mask", 0.60)
    _write(tmp_path, "autosam", "mask", 0.90)  # quick only: set against ours at quick too
    # all data: UNet at both budgets, so its quick pair is used; TransUNet's pair shares no budget: its best each
    _write(tmp_path, "unet", "mask", 0.95, shots=None, budget="paper", seeds=(0,))
    _write(tmp_path, "unet", "mask", 0.80, shots=None, seeds=(0,))
    _write(tmp_path, "transunet", "mask", 0.90, shots=None, budget="paper", seeds=(0,))
    _write(tmp_path, "transunet", "mask", 0.70)
    _write(tmp_path, "prompt-module", "box", 0.80, shots=None, budget="paper", seeds=(0,))  # its pair: paper

    verdicts = _verdicts(tmp_path)

    assert verdicts["a"].verdict == claims.FAILS  # 10 points below UNet at quick; the paper row would have held
    assert "Prompt module (ours) · box · k=10 · quick 51.75 against UNet · mask · k=10 · quick 61.75" in (
        verdicts["a"].evidence)
    assert verdicts["a"].budgets == "same (quick)"
    assert verdicts["b"].budgets == "same (quick)" and "against Prompt module (ours) · box · k=10 · quick" in (
        verdicts["b"].evidence)
    assert "Prompt module (ours) 10.00 points (81.75 → 71.75)" in verdicts["d"].evidence
    assert "UNet 20.00 points (81.75 → 61.75)" in verdicts["d"].evidence
    assert "TransUNet 20.00 points (91.75 → 71.75)" in verdicts["d"].evidence
    assert verdicts["d"].budgets == ("Prompt module (ours) same (paper), UNet same (quick), TransUNet differ (paper,"
                                     " quick)")


def test_claims_without_the_rows_they_need_are_not_measurable_here(tmp_path) -> None:
    _write(tmp_path, "prompt-module", "box", 0.80, budget="paper")
    _write(tmp_path, "prompt-module", "mask", 0.90)  # not the boxes claim (a) is about, nor a UNet
    _write(tmp_path, "autosam", "mask", 0.85)  # better than ours, but only at the quick budget: no time ratio
    _write(tmp_path, "unet", "box", 0.70)  # UNet on boxes is not UNet on masks

    verdicts = _verdicts(tmp_path)

    assert {claim: verdict.verdict for claim, verdict in verdicts.items()} == dict.fromkeys("abcd", claims.UNMEASURABLE)
    assert verdicts["a"].evidence == "No finished row of UNet with masks at k = 10."
    assert "Dice: AutoSAM · mask · k=10 · quick 86.75" in verdicts["b"].evidence
    assert "not measurable from the records (no finished row of AutoSAM with masks there)" in verdicts["b"].evidence
    assert verdicts["c"].evidence == "No finished row of PerSAM with 1 mask."
    assert verdicts["d"].evidence.startswith("No finished row of Prompt module (ours) (box, all data), UNet (mask,"
                                             " all data), UNet (mask, k = 10), TransUNet (mask, all data)")


def test_the_report_has_a_claims_section_and_csv(tmp_path) -> None:
    _write(tmp_path, "prompt-module", "box", 0.80, budget="paper")
    _write(tmp_path, "unet", "mask", 0.60)

    write_report(tmp_path, tmp_path / "report")

    text = (tmp_path / "report" / "report.md").read_text()
    section = text.split("## Claims of the seed paper")[1].split("\n## ")[0]
    assert "### Synthetic Ellipse" in section
    assert f"**(a) {claims.CLAIMS['a']}** Holds." in section
    assert f"**(d) {claims.CLAIMS['d']}** Not measurable here." in section
    saved = pd.read_csv(tmp_path / "report" / "claims.csv")
    assert saved["verdict"].tolist() == [claims.HOLDS] + [claims.UNMEASURABLE] * 3



def test_a_verdict_resting_on_a_set_override_row_says_so(tmp_path) -> None:
    """A smoke run (``--set epochs=2``) is the only UNet row: claim (a) may use it, but must name it as such."""
    _write(tmp_path, "prompt-module", "box", 0.80, budget="paper")
    _write(tmp_path, "unet", "mask", 0.60, overrides={"epochs": 2})
    verdicts = _verdicts(tmp_path)
    evidence = verdicts["a"].evidence
    assert "UNet · mask · k=10 · quick [epochs=2] 61.75" in evidence
    assert "Rests on rows with --set overrides (no row without them ran): UNet" in evidence
    assert "(--set epochs=2)" in evidence and "Prompt module (ours) · box" not in evidence.split("Rests on")[1]
    # a claim on rows without overrides says nothing of the kind
    _write(tmp_path, "unet", "mask", 0.60)
    assert "Rests on" not in _verdicts(tmp_path)["a"].evidence
