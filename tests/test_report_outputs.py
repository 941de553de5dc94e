"""`bench report` (time report, run status, plots) and `bench figure`, from hand-written records."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from matplotlib.image import imread
from scipy import ndimage
from typer.testing import CliRunner

from bench.cli import app
from bench.data import load_task
from bench.report import plots
from bench.report.figure import PANEL_INCHES, PREDICTION_COLOUR, TRUTH_COLOUR, load_predictions
from bench.report.names import Names
from bench.runner import SAVED_PREDICTIONS, save_predictions
from tests.report_records import write_predictions, write_record

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
    assert "UNet trains 3.0× longer than Prompt_module & 100% (Synthetic, k = 10, budget quick)" in text
    assert np.isnan(costs.loc[("rep-medsam", "all"), "seconds_per_epoch"])  # training-free: no epochs
    assert "Budget: **quick**" in text

    status = text.split("## Run status")[1]
    # rep-unet expects 2 tasks × k {1, 10} × seeds {0, 1, 2} = 12: 8 ok, 1 failed (seed 2), 3 missing
    unet_row = next(line for line in status.splitlines() if line.startswith("| quick") and "UNet" in line)
    assert [cell.strip() for cell in unet_row.strip("|").split("|")][2:] == ["12", "8", "1", "3"]
    counts = pd.read_csv(out / "run_status.csv")
    assert (counts["status"] == "failed").sum() == 1 and (counts["status"] == "missing").sum() == 4
    assert "RuntimeError: CUDA out of memory" in status and "more detail" not in status


def test_run_status_counts_follow_the_documented_grid(grid) -> None:
    from bench import store
    from bench.report.timing import run_status

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
    configurations = 1 + 3 * 2  # MedSAM, then three trained methods × two k
    sizes = {
        "dice_per_case": (WIDTH, plots.ROW_HEIGHT * configurations + 1.2),
        "dice_vs_shots": (WIDTH, plots.PANEL_HEIGHT),
        "dice_vs_fit_time": (WIDTH, plots.PANEL_HEIGHT),
    }
    for stem, (width, height) in sizes.items():
        png = imread(out / f"{stem}.png")
        assert png.shape[:2] == (round(max(height, plots.PANEL_HEIGHT) * plots.DPI), round(width * plots.DPI))
        assert png[..., :3].std() > 0.05  # not a blank canvas
        assert _colour_pixels(png, unet_colour) > 30, stem  # UNet has the same colour in every figure
        assert (out / f"{stem}.pdf").stat().st_size > 1000
        assert f"![{stem}]({stem}.png)" in (out / "report.md").read_text()
    assert (out / "statistics.csv").exists()


def test_report_without_reference_runs_still_writes_and_says_why(grid, tmp_path) -> None:
    out = tmp_path / "report"
    _report(grid, out)  # the default reference, prompt-module, has no runs here
    text = (out / "report.md").read_text()
    assert "No finished runs of the reference `prompt-module`" in text
    assert (out / "dice_vs_shots.png").exists() and not (out / "statistics.csv").exists()


def test_plots_of_mixed_budgets_show_the_paper_budget_only(tmp_path, monkeypatch) -> None:
    results = tmp_path / "results"
    for budget, dice in (("quick", 0.2), ("paper", 0.9)):
        for seed in (0, 1):
            write_record(results, "rep-unet", dict.fromkeys(IDS, dice), seed=seed, budget=budget)
    plotted: list[set] = []

    def record_budgets(frame, *args, **kwargs):
        plotted.append(set(frame["budget"]))
        return None

    for name in ("per_case_dice", "dice_versus_shots", "dice_versus_fit_time"):
        monkeypatch.setattr(plots, name, record_budgets)
    _report(results, tmp_path / "report")
    assert "The plots show the **paper** budget only." in (tmp_path / "report" / "report.md").read_text()
    assert plotted == [{"paper"}] * 3


def test_pareto_front_keeps_only_undominated_configurations() -> None:
    points = pd.DataFrame({"fit_seconds": [1, 2, 3, 4, 5], "dice": [50, 40, 70, 60, 80]})
    front = plots.pareto_front(points)
    assert front["fit_seconds"].tolist() == [1, 3, 5]


def test_saved_predictions_are_the_first_cases_by_id_binarised(tmp_path) -> None:
    ids = [f"case{i:02d}" for i in (5, 3, 11, 0, 9, 1, 7, 2, 10, 4, 8, 6)]
    rng = np.random.default_rng(0)
    probabilities = [rng.random((6, 7)).astype(np.float32) for _ in ids]
    path = tmp_path / "predictions" / "run.npz"

    save_predictions(path, ids, probabilities, SAVED_PREDICTIONS)

    saved = load_predictions(path)
    assert list(saved) == sorted(ids)[:SAVED_PREDICTIONS]
    for case, mask in saved.items():
        np.testing.assert_array_equal(mask, probabilities[ids.index(case)] > 0.5)
    assert [p.name for p in path.parent.iterdir()] == ["run.npz"]  # no temporary file left behind


@pytest.fixture
def predicted(tmp_path):
    """Records of two methods on synthetic/ellipse with predictions: the truth and the truth dilated."""
    results = tmp_path / "results"
    test = load_task("synthetic", "ellipse").test
    truth = {s.id: s.mask for s in sorted(test, key=lambda s: s.id)[:SAVED_PREDICTIONS]}
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
    options = ["--task", "ellipse", "--images", "3", "--seed", "1", "--out", str(out)]
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
