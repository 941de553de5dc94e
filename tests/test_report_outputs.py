"""`bench report` (time report, run status, plots) and `bench figure`, from hand-written records."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from matplotlib.image import imread
from scipy import ndimage
from typer.testing import CliRunner

from bench.cli import app
from bench.data.dataset import load_task
from bench.records.names import Names
from bench.records.predictions import load_predictions, save_predictions
from bench.report import plots
from bench.report.figure import PANEL_INCHES, PREDICTION_COLOUR, TRUTH_COLOUR
from tests.report_records import write_predictions, write_record

FEW_CASES = 8  # test cases with predictions in these records: enough for a figure, quick to write

IDS = [f"syn{140 + i:03d}" for i in range(8)]
TRAINED = (("rep-unet", "mask", 0.6), ("rep-autosam", "mask", 0.7), ("rep-ours", "box", 0.8))
WIDTH = 2 * plots.PANEL_WIDTH + plots.LEGEND_WIDTH  # inches of every report plot: two tasks and a legend
FIT_SECONDS = {"rep-unet": 30.0, "rep-autosam": 50.0, "rep-ours": 10.0}
EPOCHS = {"rep-unet": 60, "rep-autosam": 25, "rep-ours": 20}


pytestmark = pytest.mark.usefixtures("report_methods")


@pytest.fixture
def grid(tmp_path):
    """Two tasks × three trained methods × k ∈ {1, 10} × 2 seeds, plus MedSAM; one failure, one missing."""
    rng = np.random.default_rng(1)
    results = tmp_path / "results"
    for task in ("ellipse", "blob"):
        for method, labels, base in TRAINED:
            for shots in (1, 10):
                for seed in (0, 1):
                    if (task, method, shots, seed) == ("blob", "rep-autosam", 10, 1):
                        continue  # never ran: "missing"
                    dice = np.clip(base + 0.01 * shots + rng.normal(0, 0.05, len(IDS)), 0, 1)
                    fit = FIT_SECONDS[method] * shots * (1 + 0.1 * seed)
                    write_record(results, method, dict(zip(IDS, dice.tolist(), strict=True)), task=task,
                                 labels=labels, shots=shots, seed=seed, fit_seconds=fit,
                                 epochs=EPOCHS[method])  # fmt: skip
        write_record(results, "rep-medsam", dict.fromkeys(IDS, 0.9), task=task, labels="box", shots=None,
                     fit_seconds=0.0, epochs=None)  # fmt: skip
    write_record(results, "rep-unet", {}, task="blob", shots=10, seed=2, status="failed",
                 error="RuntimeError: CUDA out of memory\nmore detail")  # fmt: skip
    return results


def _report(results, out, *options: str) -> None:
    outcome = CliRunner().invoke(app, ["report", "--results", str(results), "--out", str(out), *options])
    assert outcome.exit_code == 0, outcome.output


def _colour_pixels(png: np.ndarray, colour: tuple[float, float, float]) -> int:
    return int((np.abs(png[..., :3] - np.asarray(colour)) < 2.5 / 255).all(axis=-1).sum())


def test_time_report_has_costs_ratios_and_run_status(grid, tmp_path) -> None:
    out = tmp_path / "report"
    _report(grid, out, "--reference", "rep-ours")
    text = (out / "report.md").read_text()
    costs = pd.read_csv(out / "time_report.csv", dtype={"shots": str}).set_index(["method", "shots"])

    # fit time 30 s × k for UNet (seeds × 1.0 and 1.1) against 10 s × k for the prompt module: 3.0×
    unet = costs.loc[("rep-unet", "10")]
    assert unet["fit_seconds_mean"] == pytest.approx(np.mean([300.0, 330.0]))
    assert unet["fit_seconds_std"] == pytest.approx(np.std([300.0, 330.0]))
    assert unet["fit_ratio"] == pytest.approx(3.0)
    assert unet["seconds_per_epoch"] == pytest.approx(np.mean([300.0, 330.0]) / 60)
    assert unet["params_trainable"] == 250_000 and unet["infer_ms_per_image"] == pytest.approx(20.0)
    # 60 epochs against 20: the same time per epoch, 5.25 s, over 10 training images
    assert unet["epoch_ratio"] == pytest.approx(1.0)
    assert unet["ms_per_image_step"] == pytest.approx(1000 * np.mean([300.0, 330.0]) / 60 / 10)
    assert ("UNet · mask · k=10 · quick against Prompt_module & 100% · box · k=10 · quick (Synthetic):"
            " fit time 3.00×, time per epoch 1.00×.") in text  # fmt: skip
    medsam = costs.loc[("rep-medsam", "all")]
    assert np.isnan(medsam["seconds_per_epoch"]) and np.isnan(medsam["fit_ratio"])  # training-free: no ratio
    assert not any(line.startswith("- MedSAM") for line in text.splitlines())
    assert "Budget: **quick**" in text

    status = text.split("## Run status")[1]
    # rep-unet expects 2 tasks × k {1, 10} × seeds {0, 1, 2} = 12: 8 ok, 1 failed (seed 2), 3 missing
    unet_row = next(line for line in status.splitlines() if line.startswith("| quick") and "UNet" in line)
    assert [cell.strip() for cell in unet_row.strip("|").split("|")][2:] == ["12", "8", "1", "3"]
    counts = pd.read_csv(out / "run_status.csv")
    assert (counts["status"] == "failed").sum() == 1 and (counts["status"] == "missing").sum() == 4
    assert "RuntimeError: CUDA out of memory" in status and "more detail" not in status


def test_run_status_counts_follow_the_documented_grid(grid) -> None:
    from bench.records import store
    from bench.records.run_status import run_status

    counts, failures, missing = run_status(store.runs_frame(store.load_records(grid)))
    counts = counts.set_index("method")
    # seeds seen for rep-unet: 0, 1, 2 (the failed one) → 2 tasks × 2 k × 3 seeds
    assert counts.loc["rep-unet", ["expected", "ok", "failed", "missing"]].tolist() == [12, 8, 1, 3]
    # rep-autosam: seeds 0, 1 → 8 expected, one never ran
    assert counts.loc["rep-autosam", ["expected", "ok", "failed", "missing"]].tolist() == [8, 7, 0, 1]
    assert counts.loc["rep-medsam", ["expected", "ok"]].tolist() == [2, 2]  # training-free: one per task
    assert ("rep-autosam", "synthetic", "blob", "mask", "10", 0, 1, "quick") in missing
    assert failures["error"].tolist() == ["RuntimeError: CUDA out of memory"]


def test_report_plots_are_images_of_the_expected_size_in_consistent_colours(grid, tmp_path) -> None:
    out = tmp_path / "report"
    _report(grid, out, "--reference", "rep-ours")
    unet_colour = Names().palette(["rep-unet"])["UNet"]
    rows = 1 + 3 * 2  # MedSAM, then three trained methods × two k: Table 1's rows, one line each
    legend = max(plots.PANEL_HEIGHT, plots.LEGEND_LINE * (rows + 3 + 1) + 0.5)  # the rows, a gap, the budget
    sizes = {
        "dice_per_case": (plots.LABELS_WIDTH + 2 * plots.PANEL_WIDTH + plots.BUDGET_LEGEND_WIDTH,
                          plots.ROW_HEIGHT * rows + 1.2),
        "dice_vs_shots": (WIDTH, legend),
        "dice_vs_fit_time": (WIDTH, legend),
    }  # fmt: skip
    for stem, (width, height) in sizes.items():
        png = imread(out / f"{stem}.png")
        assert png.shape[:2] == (round(max(height, plots.PANEL_HEIGHT) * plots.DPI), round(width * plots.DPI))
        assert png[..., :3].std() > 0.05  # not a blank canvas
        assert _colour_pixels(png, unet_colour) > 30, stem  # UNet has the same colour in every figure
        assert (out / f"{stem}.pdf").stat().st_size > 1000
        assert f"![{stem}]({stem}.png)" in (out / "report.md").read_text()
    assert (out / "statistics.csv").exists()


def test_plots_show_every_table_row_each_marked_with_its_budget(tmp_path) -> None:
    """UNet at two budgets and the prompt module at one: three rows in every plot, paper filled, quick hollow."""
    results = tmp_path / "results"
    rng = np.random.default_rng(0)
    for method, labels, budget, dice in (("rep-unet", "mask", "quick", 0.2), ("rep-unet", "mask", "paper", 0.9),
                                         ("rep-ours", "box", "paper", 0.8)):  # fmt: skip
        for shots in (1, 10):
            for seed in (0, 1):
                values = np.clip(dice + rng.normal(0, 0.03, len(IDS)), 0, 1)
                write_record(results, method, dict(zip(IDS, values.tolist(), strict=True)), labels=labels,
                             shots=shots, seed=seed, budget=budget, fit_seconds=10.0 * shots)  # fmt: skip
    from bench.records import store

    records = store.load_records(results)
    runs, cases = store.runs_frame(records), store.cases_frame(records)
    expected = {"UNet · mask · k=10 · paper": True, "UNet · mask · k=10 · quick": False,
                "Prompt_module & 100% · box · k=10 · paper": True}  # fmt: skip

    scatter = plots.dice_versus_fit_time(runs[runs["shots"] == "10"])
    drawn = [line for line in scatter.axes[0].lines if line.get_marker() not in (None, "None", "")]
    assert len(drawn) == 3  # a point per row: the quick UNet row is not dropped for the paper one
    faces = sorted(line.get_markerfacecolor() == "white" for line in drawn)
    assert faces == [False, False, True]  # one hollow row: the quick one
    legend = {text.get_text(): handle for text, handle in zip(scatter.legends[0].get_texts(),
                                                              scatter.legends[0].legend_handles, strict=True)}
    for label, filled in expected.items():
        assert (legend[label].get_markerfacecolor() != "white") == filled, label
    assert "Budget (differs between rows)" in legend
    assert "cost–quality frontier\n(automatic rows)" not in legend  # one point per k: no frontier drawn

    shots = plots.dice_versus_shots(runs)  # k is its x axis: a line per row without k, joining k = 1 and 10
    labels = [text.get_text() for text in shots.legends[0].get_texts()]
    assert {label.replace(" · k=10", "") for label in expected} <= set(labels)
    joined = [line for line in shots.axes[0].lines if len(line.get_xdata()) == 2 and line.get_marker() != "None"]
    assert sorted(line.get_markerfacecolor() == "white" for line in joined) == [False, False, True]

    boxes = plots.per_case_dice(cases)
    ticks = [tick.get_text() for tick in boxes.axes[0].get_yticklabels()]
    assert len(ticks) == 6 and all(tick.endswith(("· paper", "· quick")) for tick in ticks)
    hollow = [patch for patch in boxes.axes[0].patches if patch.get_facecolor()[:3] == (1.0, 1.0, 1.0)]
    assert len(hollow) == 2  # UNet quick at k = 1 and 10
    assert boxes.axes[0].get_xlabel() == "Dice × 100 per test case"
    on_val = plots.per_case_dice(cases.assign(eval_split="val"))  # a val report's cases are val cases
    assert on_val.axes[0].get_xlabel() == "Dice × 100 per val case"

    _report(results, tmp_path / "report")
    text = (tmp_path / "report" / "report.md").read_text()
    assert "budgets differ between rows (paper, quick)" in text


def test_pareto_front_keeps_only_undominated_configurations() -> None:
    points = pd.DataFrame({"fit_seconds": [1, 2, 3, 4, 5], "dice": [50, 40, 70, 60, 80]})
    front = plots.pareto_front(points)
    assert front["fit_seconds"].tolist() == [1, 3, 5]


def test_every_case_is_kept_binarised_and_bit_packed(tmp_path) -> None:
    ids = [f"case{i:02d}" for i in (5, 3, 11, 0, 9, 1, 7, 2, 10, 4, 8, 6)]
    rng = np.random.default_rng(0)
    # shapes differ per case, and 6 × 7 is no multiple of 8: the packed bits of one case run into the next's
    probabilities = [rng.random((6 + i % 3, 7)).astype(np.float32) for i in range(len(ids))]
    path = tmp_path / "predictions" / "run.npz"

    save_predictions(path, ids, probabilities)

    saved = load_predictions(path)
    assert list(saved) == sorted(ids)
    for case, mask in saved.items():
        np.testing.assert_array_equal(mask, probabilities[ids.index(case)] > 0.5)
    assert [p.name for p in path.parent.iterdir()] == ["run.npz"]  # no temporary file left behind
    with np.load(path) as stored:  # one bit per pixel, not one byte
        assert stored["bits"].nbytes == -(-sum(p.size for p in probabilities) // 8)


def test_predictions_files_of_the_first_layout_still_read(tmp_path) -> None:
    masks = {"b": np.eye(4, dtype=bool), "a": np.ones((2, 3), bool)}
    path = tmp_path / "old.npz"
    np.savez_compressed(path, ids=np.array(list(masks)), **{f"mask_{i}": m for i, m in enumerate(masks.values())})
    saved = load_predictions(path)
    assert list(saved) == ["b", "a"]
    for case, mask in masks.items():
        np.testing.assert_array_equal(saved[case], mask)


@pytest.fixture
def predicted(tmp_path):
    """Records of two methods on synthetic/ellipse with predictions: the truth and the truth dilated."""
    results = tmp_path / "results"
    test = load_task("synthetic", "ellipse").test
    truth = {s.id: s.mask for s in sorted(test, key=lambda s: s.id)[:FEW_CASES]}
    dilated = {case: ndimage.binary_dilation(mask, iterations=4) for case, mask in truth.items()}
    for method, labels, masks in (("rep-unet", "mask", dilated), ("rep-ours", "box", truth)):
        dice = {case: 0.9 for case in masks}
        record = write_record(results, method, dice, labels=labels)
        write_predictions(results, record, masks, experiment="exp")
    # a run without a predictions file (recorded before predictions were saved) is passed over
    write_record(results, "rep-autosam", dict.fromkeys(truth, 0.5))
    return results, sorted(truth)


def test_figure_shows_chosen_images_for_each_method(predicted, tmp_path) -> None:
    results, _ = predicted
    out = tmp_path / "figures"
    options = ["--task", "ellipse", "--images", "3", "--out", str(out)]
    outcome = CliRunner().invoke(app, ["figure", "--results", str(results), *options])
    assert outcome.exit_code == 0, outcome.output
    png = imread(out / "qualitative_ellipse.png")
    columns, rows = 1 + 2, 3  # image + ground truth, then UNet and the prompt module; AutoSAM has no file
    height, width = PANEL_INCHES * rows + 0.6, PANEL_INCHES * columns  # 0.6: the legend's strip
    assert png.shape[:2] == (round(height * plots.DPI), round(width * plots.DPI))
    assert _colour_pixels(png, _rgb(PREDICTION_COLOUR)) > 200
    assert _colour_pixels(png, _rgb(TRUTH_COLOUR)) > 200
    assert (out / "qualitative_ellipse.pdf").exists()


def test_figure_rejects_ids_without_saved_predictions(predicted) -> None:
    results, ids = predicted
    outcome = CliRunner().invoke(app, ["figure", "--results", str(results), "--task", "ellipse",
                                       "--ids", f"{ids[0]},syn999"])  # fmt: skip
    assert outcome.exit_code == 2
    assert "syn999" in outcome.output and "Traceback" not in outcome.output


def test_figure_of_a_task_without_runs_is_a_user_error(predicted) -> None:
    results, _ = predicted
    outcome = CliRunner().invoke(app, ["figure", "--results", str(results), "--task", "blob"])
    assert outcome.exit_code == 2 and "no finished runs of task 'blob'" in outcome.output


def _rgb(hex_colour: str) -> tuple[float, float, float]:
    return tuple(int(hex_colour[i : i + 2], 16) / 255 for i in (1, 3, 5))
