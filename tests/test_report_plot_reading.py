"""Plots a reviewer reads without the code: one colour per method, structures named on every panel, training-
free rows without a budget and at 0 s, k written where rows differ only in k, size thirds per structure, and
qualitative cases chosen by a stated rule."""

from __future__ import annotations

import colorsys
import json

import numpy as np
import pytest
from scipy import ndimage

from bench.data.dataset import load_task
from bench.records import store
from bench.records.names import Names
from bench.records.store import record_path
from bench.report import diagnosis, plots, training_plots
from bench.report.figure import choose_cases, qualitative_figure
from tests.report_records import write_predictions, write_record

FEW_CASES = 8  # test cases with predictions in these records: enough for a figure, quick to write

pytestmark = pytest.mark.usefixtures("report_methods")
IDS = [f"syn{140 + i:03d}" for i in range(6)]
TASKS = {"ellipse": (0.02, 0.05, 0.10, 0.20, 0.30, 0.40), "blob": (0.30, 0.40, 0.50, 0.60, 0.70, 0.80)}
VARIANT = {"tightness_weight": 0.0001}


@pytest.fixture
def logged(tmp_path):
    """Two structures of different sizes; UNet at k = 1 and all data; MedSAM (training-free, ~0 s fit); the
    prompt module and a --set variant of it, both logging their training over two draws."""
    rng = np.random.default_rng(0)
    for task, areas in TASKS.items():
        for shots in (1, None):
            write_record(tmp_path, "rep-unet", dict(zip(IDS, rng.uniform(0.5, 0.9, 6).tolist(), strict=True)),
                         task=task, shots=shots, fit_seconds=20.0 if shots else 200.0)  # fmt: skip
        write_record(tmp_path, "rep-medsam", dict.fromkeys(IDS, 0.9), task=task, labels="box", shots=None,
                     fit_seconds=6e-6, epochs=None)  # fmt: skip
        for overrides in (None, VARIANT):
            for draw in (0, 1):
                record = write_record(tmp_path, "rep-ours", dict(zip(IDS, rng.uniform(0.6, 0.9, 6).tolist(),
                                      strict=True)), task=task, labels="box", draw=draw, budget="paper",
                                      overrides=overrides)  # fmt: skip
                for case, area in zip(record["cases"], areas, strict=True):
                    case["truth_box_area"] = area
                record["training_log"] = [{"support_box_area": [0.1, 0.2]}] + [
                    {"epoch": epoch, "loss": 1.0 / (epoch + 1), "tightness": 0.1, "size_over_box_area": [0.6, 0.7]}
                    for epoch in range(5)
                ]  # fmt: skip
                record_path(tmp_path, "exp", record["run_id"]).write_text(json.dumps(record))
    records = store.load_records(tmp_path)
    return records, store.runs_frame(records), store.cases_frame(records)


def _hue(colour) -> float:
    return colorsys.rgb_to_hls(*colour[:3])[0]


def test_every_plot_gives_a_method_its_one_colour(logged) -> None:
    records, runs, cases = logged
    palette = Names().palette(["rep-unet", "rep-ours"])
    figures = {
        "dice_vs_fit_time": plots.dice_versus_fit_time(runs),
        "dice_vs_size": diagnosis.dice_versus_size(cases),
        "training_curves": training_plots.training_curves(training_plots.training_frame(records)),
        "support_sizes": training_plots.support_sizes_figure(training_plots.support_sizes(records)),
    }
    for stem, figure in figures.items():
        legend = figure.legends[0]
        colours = {text.get_text(): handle.get_color() for text, handle in
                   zip(legend.get_texts(), legend.legend_handles, strict=True)}  # fmt: skip
        ours = [colour for label, colour in colours.items() if label.startswith("Prompt_module")]
        assert len(ours) == 2, stem  # the recipe and its --set variant: two shades of one hue
        hue = _hue(palette["Prompt_module & 100%"])
        assert ours[0] != ours[1] and all(_hue(colour) == pytest.approx(hue, abs=0.01) for colour in ours), stem
        if stem in ("dice_vs_fit_time", "dice_vs_size"):  # the figures that show UNet (it logs no training)
            unet = [colour for label, colour in colours.items() if label.startswith("UNet")]
            assert unet and all(tuple(colour) == tuple(palette["UNet"]) for colour in unet), stem


def test_training_free_rows_have_no_budget_and_sit_at_zero_seconds(logged) -> None:
    _, runs, _ = logged
    figure = plots.dice_versus_fit_time(runs[runs["task"] == "ellipse"])
    legend = [text.get_text() for text in figure.legends[0].get_texts()]
    assert "MedSAM · box · –" in legend and "– training-free (no budget)" in legend
    assert not any(label.startswith("MedSAM") and label.endswith(("quick", "paper")) for label in legend)
    ax = figure.axes[0]
    points = [(line.get_xdata()[0], line.get_ydata()[0]) for line in ax.lines if line.get_marker() == "s"]
    # MedSAM's microseconds of bookkeeping drawn as what they are; the trained rows' seconds as they are
    assert [y for x, y in points if x == 0.0] == [pytest.approx(90.0)]
    assert sorted(x for x, _ in points if x > 0) == [10.0, 10.0]  # the prompt module and its variant
    assert ax.get_xscale() == "symlog" and "training-free rows at 0 s" in ax.get_xlabel()
    # UNet at k=1 and at all data share a style: their k is written beside each point
    assert {"k=1", "k=All"} <= {text.get_text() for text in ax.texts}


def test_size_and_training_panels_name_their_structure_and_draw(logged) -> None:
    records, _, cases = logged
    size = diagnosis.dice_versus_size(cases)
    titles = [ax.get_title() for ax in size.axes]
    assert titles == [f"Synthetic {task}\nsupport draw {draw}" for task in ("Blob", "Ellipse") for draw in (0, 1)]

    curves = training_plots.training_curves(training_plots.training_frame(records))
    shown = [ax.get_title() for ax in curves.axes if ax.axison]
    assert shown == [f"Synthetic {task}\n{title}" for task in ("Blob", "Ellipse")
                     for title in ("Total loss", "Tightness loss",
                                   "Predicted size / box area\n(soft; median over support images)")]  # fmt: skip
    width, _ = curves.get_size_inches()
    assert width <= training_plots.CURVE_COLUMNS * training_plots.CURVE_PANEL[0]  # a grid at page width


def test_size_thirds_are_each_structures_own(logged) -> None:
    _, _, cases = logged
    table = diagnosis.dice_by_size_table(cases)
    assert list(table.columns[-4:]) == [diagnosis.SIZE_EDGES, "small", "medium", "large"]
    assert not table[["small", "medium", "large"]].isna().any().any()  # six cases per structure: two per third
    edges = dict(zip(table["task"], table[diagnosis.SIZE_EDGES], strict=False))
    assert edges == {"blob": "30.0 / 46.7 / 63.3 / 80.0", "ellipse": "2.0 / 8.3 / 23.3 / 40.0"}
    ours = cases[(cases["method"] == "rep-ours") & (cases["task"] == "ellipse") & (cases["draw"] == 0)
                 & (cases["variant"] == "")]  # fmt: skip
    smallest = ours.sort_values("truth_box_area")["dice"].iloc[:2].mean() * 100
    row = table[(table["task"] == "ellipse") & (table["draw"] == 0)
                & (table["configuration"] == "Prompt_module & 100% · box · k=10 · paper")]  # fmt: skip
    assert row["small"].iloc[0] == pytest.approx(smallest, abs=0.01)


def test_qualitative_cases_are_spread_over_the_reference_columns_dice(tmp_path) -> None:
    test = sorted(load_task("synthetic", "ellipse").test, key=lambda s: s.id)[:FEW_CASES]
    truth = {s.id: s.mask for s in test}
    # the prompt module's Dice ranks the cases: the reverse of their ids
    ours_dice = {case: 0.9 - 0.1 * i for i, case in enumerate(truth)}
    record = write_record(tmp_path, "rep-ours", ours_dice, labels="box")
    write_predictions(tmp_path, record, truth)
    record = write_record(tmp_path, "rep-unet", dict.fromkeys(truth, 0.5))
    write_predictions(tmp_path, record, {case: ndimage.binary_dilation(mask) for case, mask in truth.items()})

    drawn = qualitative_figure(store.load_records(tmp_path), tmp_path, "ellipse", images=4, reference="rep-ours")
    shown = [ax.get_ylabel() for ax in drawn.axes if ax.get_ylabel()]
    ranked = sorted(truth, key=ours_dice.get)  # worst first
    assert shown == [ranked[1], ranked[3], ranked[5], ranked[7]]  # the middle of each quartile of eight
    note = drawn.legends[0].get_title().get_text().replace("\n", " ")
    assert "ranked by Prompt_module & 100% (box, k=10, quick)'s Dice, one from the middle of each quartile" in note

    cases, rule = choose_cases(list(truth), None, 3, ours_dice, "X")
    assert cases == [ranked[1], ranked[4], ranked[6]] and "tercile" in rule
    assert choose_cases(list(truth), [ranked[0]], 4, ours_dice, "X") == ([ranked[0]], "Cases chosen by id (--ids).")
