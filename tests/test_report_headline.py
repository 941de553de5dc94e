"""Table 1's headline row in the report: the statistics test every row against it, the cost ratios compare
only rows of one budget that train, and the qualitative figure shows it by default."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import ndimage
from scipy import stats as scipy_stats

from bench.data.dataset import load_task
from bench.errors import BenchError
from bench.records import store
from bench.records.names import Names
from bench.report import stats, timing
from bench.report.figure import choose_runs, qualitative_figure
from tests.report_records import write_predictions, write_record

FEW_CASES = 8  # test cases with predictions in these records: enough for a figure, quick to write

IDS = [f"syn{140 + i:03d}" for i in range(8)]
BOXES = np.array([0.80, 0.62, 0.91, 0.70, 0.55, 0.84, 0.77, 0.66])  # the headline row: boxes, paper

pytestmark = pytest.mark.usefixtures("report_methods")


def _dice(values: np.ndarray) -> dict[str, float]:
    return dict(zip(IDS, values.tolist(), strict=True))


@pytest.fixture
def grid(tmp_path):
    """The prompt module on boxes at paper (the headline) and on masks at quick; baselines at quick."""
    write_record(tmp_path, "rep-ours", _dice(BOXES), labels="box", budget="paper", fit_seconds=200.0, epochs=100)
    write_record(tmp_path, "rep-ours", _dice(BOXES + 0.1), labels="mask", fit_seconds=100.0, epochs=50)
    write_record(tmp_path, "rep-ours", _dice(BOXES - 0.2), labels="box", budget="paper", fit_seconds=220.0,
                 epochs=100, overrides={"lr": 0.01})  # fmt: skip
    for seed, shift in ((0, 0.04), (1, -0.02)):  # two runs: the test pairs their per-case mean
        write_record(tmp_path, "rep-unet", _dice(BOXES - 0.05 + shift + 0.01 * np.arange(8)), seed=seed,
                     fit_seconds=30.0, epochs=25)  # fmt: skip
    write_record(tmp_path, "rep-autosam", _dice(BOXES - 0.3), fit_seconds=150.0, epochs=10, shots=1)
    write_record(tmp_path, "rep-medsam", _dice(BOXES + 0.05), labels="box", shots=None, fit_seconds=0.0,
                 epochs=None, params_trainable=0)  # fmt: skip
    return tmp_path


def test_every_row_is_tested_against_the_box_trained_paper_row(grid) -> None:
    cases = store.cases_frame(store.load_records(grid))

    tests = stats.headline_tests(cases, "rep-ours", Names(cases).default_labels("rep-ours"), intervals=False)

    rows = tests.set_index(["method", "labels", "budget", "variant"])
    assert len(tests) == 6 and rows["p"].notna().sum() == 5  # every row but the headline itself
    headline = rows.loc[("rep-ours", "box", "paper", "")]
    assert np.isnan(headline["p"]) and headline["reference_labels"] is None
    unet = rows.loc[("rep-unet", "mask", "quick", "")]
    assert (unet["reference_labels"], unet["reference_budget"], unet["reference_shots"]) == ("box", "paper", "10")
    assert unet["differs"] == "budget, labels"
    unet_cases = BOXES - 0.05 + 0.01 + 0.01 * np.arange(8)  # the two runs' mean per case
    assert unet["p"] == pytest.approx(scipy_stats.wilcoxon(unet_cases, BOXES).pvalue)
    assert rows.loc[("rep-ours", "mask", "quick", ""), "differs"] == "budget, labels"
    assert rows.loc[("rep-ours", "box", "paper", "lr=0.01"), "differs"] == "--set"
    # AutoSAM has k = 1, where the reference has no row: it meets the reference's fewest k, and says so
    autosam = rows.loc[("rep-autosam", "mask", "quick", "")]
    assert autosam["reference_shots"] == "10" and autosam["differs"] == "budget, labels, k"
    # a training-free method has no budget or k to differ in
    assert rows.loc[("rep-medsam", "box", "quick", ""), "differs"] == ""
    # Holm over the five tests of the task
    tested = tests[tests["p"].notna()]
    np.testing.assert_allclose(tested["p_holm"], stats.holm(tested["p"].to_numpy()))


def test_cost_ratios_compare_rows_of_one_budget_that_train(grid) -> None:
    records = store.load_records(grid)
    costs = timing.cost_table(store.runs_frame(records), "rep-ours", timing.training_images(records))
    rows = costs.set_index(["method", "labels", "budget", "variant"])

    # quick: the reference has no box row there, so its mask row is the one compared with
    unet = rows.loc[("rep-unet", "mask", "quick", "")]
    assert unet["reference_row"] == "Prompt_module & 100% · mask · k=10 · quick"
    assert unet["fit_ratio"] == pytest.approx(30.0 / 100.0)
    assert unet["epoch_ratio"] == pytest.approx((30.0 / 25) / (100.0 / 50))
    assert unet["ms_per_image_step"] == pytest.approx(1000 * 30.0 / 25 / 10)
    # paper: the --set variant against the headline row of its own budget
    variant = rows.loc[("rep-ours", "box", "paper", "lr=0.01")]
    assert variant["fit_ratio"] == pytest.approx(1.1)
    assert rows.loc[("rep-ours", "box", "paper", ""), "fit_ratio"] == pytest.approx(1.0)
    # a row whose k the reference lacks at its budget, and a method that does not train: no ratio
    assert np.isnan(rows.loc[("rep-autosam", "mask", "quick", ""), "fit_ratio"])
    medsam = rows.loc[("rep-medsam", "box", "quick", "")]
    assert np.isnan(medsam["fit_ratio"]) and np.isnan(medsam["epoch_ratio"]) and not medsam["trains"]

    sentences = timing.ratio_sentences(costs)
    assert not any("MedSAM" in sentence or "AutoSAM" in sentence for sentence in sentences)
    for sentence in sentences:  # never across budgets
        row, reference = sentence.split(" against ")
        assert row.split(" · ")[-1].split(" ")[0] == reference.split(" (")[0].split(" · ")[-1]


def test_cost_ratio_of_a_method_without_trainable_parameters_is_left_out(tmp_path) -> None:
    write_record(tmp_path, "rep-ours", _dice(BOXES), labels="box", fit_seconds=100.0)
    write_record(tmp_path, "rep-autosam", _dice(BOXES), fit_seconds=0.04, epochs=None, params_trainable=0)
    costs = timing.cost_table(store.runs_frame(store.load_records(tmp_path)), "rep-ours")
    assert costs.set_index("method")["fit_ratio"].isna().to_dict() == {"rep-ours": False, "rep-autosam": True}
    assert timing.ratio_sentences(costs) == []


@pytest.fixture
def predicted(tmp_path):
    """The prompt module trained on masks (quick) and on boxes (paper), with predictions."""
    test = load_task("synthetic", "ellipse").test
    truth = {s.id: s.mask for s in sorted(test, key=lambda s: s.id)[:FEW_CASES]}
    dilated = {case: ndimage.binary_dilation(mask, iterations=4) for case, mask in truth.items()}
    for labels, budget, masks in (("mask", "quick", truth), ("box", "paper", dilated)):
        for draw in (1, 0):
            record = write_record(tmp_path, "rep-ours", dict.fromkeys(masks, 0.9), labels=labels, budget=budget,
                                  draw=draw, seed=2)  # fmt: skip
            write_predictions(tmp_path, record, masks)
    record = write_record(tmp_path, "rep-unet", dict.fromkeys(truth, 0.8))
    write_predictions(tmp_path, record, truth)
    return tmp_path


def test_qualitative_figure_shows_the_headline_run_and_names_it(predicted) -> None:
    records = store.load_records(predicted)
    chosen = choose_runs(records, predicted, "ellipse")
    assert chosen.left_out == []
    ours = next(run for run in chosen.runs if run["spec"]["method"] == "rep-ours")
    assert (ours["spec"]["labels"], ours["spec"]["budget"], ours["spec"]["draw"]) == ("box", "paper", 0)

    drawn = qualitative_figure(records, predicted, "ellipse", images=1)
    titles = [ax.get_title() for ax in drawn.axes if ax.get_title()]
    # each column's mean Dice over all its test cases, against which the cases shown can be read
    assert titles[1:] == ["UNet\nmask, k=10, quick\nseed 0, draw 0\nmean Dice 0.80 over 8 cases",
                          "Prompt_module & 100%\nbox, k=10, paper\nseed 2, draw 0\n"
                          "mean Dice 0.90 over 8 cases"]  # fmt: skip
    # --labels still narrows the choice to the mask-trained runs
    masks = choose_runs(records, predicted, "ellipse", labels="mask").runs
    assert {run["spec"]["labels"] for run in masks} == {"mask"}


def test_qualitative_figure_with_all_rows_shows_every_table_row_in_order(predicted) -> None:
    variant = {"tightness_weight": 0.0001, "size_barrier_on": "pixels"}
    test = sorted(load_task("synthetic", "ellipse").test, key=lambda s: s.id)[:FEW_CASES]
    record = write_record(predicted, "rep-ours", {s.id: 0.5 for s in test}, labels="box", budget="paper", seed=1,
                          overrides=variant)  # fmt: skip
    write_predictions(predicted, record, {s.id: s.mask for s in test})
    records = store.load_records(predicted)
    drawn = qualitative_figure(records, predicted, "ellipse", images=1, rows="all")
    titles = [ax.get_title() for ax in drawn.axes if ax.get_title()]
    assert titles[1:] == ["UNet\nmask, k=10, quick\nseed 0, draw 0\nmean Dice 0.80 over 8 cases",
                          "Prompt_module & 100%\nmask, k=10, quick\nseed 2, draw 0\nmean Dice 0.90 over 8 cases",
                          "Prompt_module & 100%\nbox, k=10, paper\nseed 2, draw 0\nmean Dice 0.90 over 8 cases",
                          "Prompt_module & 100%\nbox, k=10, paper\nseed 1, draw 0\nmean Dice 0.50 over 8 cases\n"
                          "[size_barrier_on=pixels,\ntightness_weight=0.0001]"]  # fmt: skip
    with pytest.raises(BenchError, match="unknown --rows 'every'"):
        choose_runs(records, predicted, "ellipse", rows="every")


def test_rows_without_a_predictions_file_are_named_not_dropped(predicted) -> None:
    # an all-data run made elsewhere (its predictions stayed there) and a method with no predictions at all
    test = sorted(load_task("synthetic", "ellipse").test, key=lambda s: s.id)[:FEW_CASES]
    write_record(predicted, "rep-ours", {s.id: 0.95 for s in test}, labels="box", budget="paper", shots=None)
    write_record(predicted, "rep-autosam", {s.id: 0.7 for s in test})
    records = store.load_records(predicted)

    headline = choose_runs(records, predicted, "ellipse")
    ours = next(run for run in headline.runs if run["spec"]["method"] == "rep-ours")
    assert ours["spec"]["shots"] == 10  # the headline's all-data run has nothing to draw: its k=10 run stands in
    assert headline.left_out == [
        "AutoSAM (mask, k=10, quick) (no predictions file)",
        "Prompt_module & 100% (box, k=All, paper) (no predictions file; "
        "Prompt_module & 100% (box, k=10, paper) shown)",
    ]
    every = choose_runs(records, predicted, "ellipse", rows="all")
    assert len(every.runs) == 3 and every.left_out == [
        "AutoSAM (mask, k=10, quick) (no predictions file)",
        "Prompt_module & 100% (box, k=All, paper) (no predictions file)",
    ]
    drawn = qualitative_figure(records, predicted, "ellipse", images=1, rows="all")
    # the rule that chose the cases (no reference method here: the first column's Dice), then what is missing
    note = drawn.legends[0].get_title().get_text()
    assert note.startswith("Cases: the 8 test cases with saved predictions ranked by UNet (mask, k=10, quick)'s")
    assert "\nNot shown: AutoSAM (mask, k=10, quick)" in note


def test_statistics_markdown_lists_the_reference_row_and_differences(grid) -> None:
    from bench.report.build import write_report

    write_report(grid, grid / "report", reference="rep-ours")
    text = (grid / "report" / "report.md").read_text()
    section = text.split("## Statistics against")[1]
    unet = next(line for line in section.splitlines() if line.startswith("| Synthetic Ellipse | UNet"))
    cells = [cell.strip() for cell in unet.strip("|").split("|")]
    assert cells[8:10] == ["box · k=10 · paper", "budget, labels"]
    assert "### Same budget" in section
    saved = pd.read_csv(grid / "report" / "statistics.csv")
    assert len(saved) == 6


def test_a_run_that_kept_every_case_goes_before_one_that_kept_a_few(predicted) -> None:
    # an all-data UNet run of the older predictions layout, which kept its first cases only
    test = sorted(load_task("synthetic", "ellipse").test, key=lambda s: s.id)[:FEW_CASES]
    record = write_record(predicted, "rep-unet", {s.id: 0.9 for s in test}, shots=None)
    write_predictions(predicted, record, {s.id: s.mask for s in test[:3]})
    headline = choose_runs(store.load_records(predicted), predicted, "ellipse")
    unet = next(run for run in headline.runs if run["spec"]["method"] == "rep-unet")
    assert unet["spec"]["shots"] == 10  # its k=10 run kept every case: the figure's cases span the split
    assert "UNet (mask, k=All, quick) (some cases kept; UNet (mask, k=10, quick) shown)" in headline.left_out
