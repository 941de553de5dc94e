"""The report's diagnostics: Dice per support draw, by structure size, and the logged training curves."""

from __future__ import annotations

import json

import numpy as np
import pytest

from bench.records import store
from bench.records.store import record_path
from bench.report import diagnosis, training_plots
from bench.report.build import write_report
from bench.report.table import build_table
from tests.report_records import write_record

# (draw, seed) → Dice of the two test cases; draw 1 is the failing one
DICE = {(0, 0): (0.9, 0.8), (0, 1): (0.8, 0.7), (1, 0): (0.5, 0.3), (1, 1): (0.7, 0.5)}
BOX_AREA = {"c0": 0.1, "c1": 0.6}


def _records(tmp_path, report_methods) -> list[dict]:
    for (draw, seed), (first, second) in DICE.items():
        record = write_record(tmp_path, "rep-ours", {"c0": first, "c1": second}, labels="box", draw=draw, seed=seed)
        for case in record["cases"]:
            case["truth_box_area"] = BOX_AREA[case["id"]]
        record["training_log"] = [
            {"support_box_area": [0.1, 0.5]},
            {"epoch": 0, "loss": 1.0 + seed, "size_over_box_area": [0.2, 1.0]},
            {"epoch": 1, "loss": 0.5 + seed, "size_over_box_area": [0.4, 0.8 + draw],
             "hard_size_over_box_area": [0.3, 0.6 + draw]},
        ]
        record_path(tmp_path, "exp", record["run_id"]).write_text(json.dumps(record))
    return store.load_records(tmp_path)


def test_per_draw_table_shows_each_draw_and_the_worst(tmp_path, report_methods) -> None:
    runs = store.runs_frame(_records(tmp_path, report_methods))
    table = diagnosis.per_draw_table(runs)
    assert len(table) == 1
    row = table.iloc[0]
    # draw 0: run means 85 and 75 → 80 ± 5; draw 1: 40 and 60 → 50 ± 10
    assert row["draw 0"] == "80.00 ± 5.00 (2)" and row["draw 1"] == "50.00 ± 10.00 (2)"
    assert row["worst draw"] == "50.00 (draw 1)"
    assert row["all runs"].startswith("65.00 ± ") and row["all runs"].endswith("(4)")


def test_dice_by_size_and_training_frame(tmp_path, report_methods) -> None:
    records = _records(tmp_path, report_methods)
    by_size = diagnosis.dice_by_size_table(store.cases_frame(records))
    draw1 = by_size[by_size["draw"] == 1].iloc[0]
    # two cases: c0 the smaller third, c1 the larger; c0 scored 0.5 and 0.7 over the draw's seeds, c1 0.3, 0.5
    assert (draw1["small"], draw1["large"]) == (pytest.approx(60.0), pytest.approx(40.0))
    assert np.isnan(draw1["medium"]) and draw1[diagnosis.SIZE_EDGES] == "10.0 / 26.7 / 43.3 / 60.0"

    frame = training_plots.training_frame(records)
    assert len(frame) == 8 and set(frame["epoch"]) == {0, 1}
    last = frame[(frame["epoch"] == 1) & (frame["draw"] == 1) & (frame["seed"] == 1)].iloc[0]
    assert last["loss"] == 1.5 and last["size_over_box_area max"] == pytest.approx(1.8)
    assert last["size_over_box_area median"] == pytest.approx(1.1)

    sizes = training_plots.support_sizes(records)
    assert len(sizes) == 8
    assert sorted(sizes.loc[sizes["draw"] == 1, "final_size_over_box_area"].round(3)) == [0.4, 0.4, 1.8, 1.8]
    assert sorted(sizes.loc[sizes["draw"] == 1, "final_hard_size_over_box_area"].round(3)) == [0.3, 0.3, 1.6, 1.6]


def test_the_report_writes_the_diagnostics_and_variants_get_their_own_row(tmp_path, report_methods) -> None:
    records = _records(tmp_path, report_methods)
    # the same spec but for an override: a run of its own in the same experiment
    variant = write_record(tmp_path, "rep-ours", {"c0": 0.2, "c1": 0.2}, labels="box", overrides={"lr": 0.0001})

    written = {path.name for path in write_report(tmp_path, tmp_path / "report")}
    assert {"per_draw.csv", "dice_by_size.csv", "training_curves.png", "support_sizes.png",
            "dice_vs_size.png"} <= written  # fmt: skip
    text = (tmp_path / "report" / "report.md").read_text()
    assert "| 80.00 ± 5.00 (2) | 50.00 ± 10.00 (2) | 50.00 (draw 1)" in text
    assert "| 20.00 ± 0.00 (1) | – " in text  # the variant ran on draw 0 only

    table = build_table(store.runs_frame(records + [variant]))
    shown = {row.display: cell.mean for (i, _), cell in table.cells.items() for row in [table.rows[i]]}
    assert shown["Prompt_module & 100% [lr=0.0001]"] == pytest.approx(20.0)
    assert shown["Prompt_module & 100%"] == pytest.approx(np.mean([85, 75, 40, 60]))
