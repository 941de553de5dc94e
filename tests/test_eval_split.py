"""`--eval-split`: runs scored on val for model development never see the test split, and tables say which."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

from bench.data.dataset import load_task
from bench.errors import BenchError
from bench.method import RunContext
from bench.records import store
from bench.records.spec import RunSpec
from bench.run.runner import run_one
from bench.run.settings import GridSettings
from tests.conftest import expand, registered_methods
from tests.fakes import MeanThreshold
from tests.test_cli import assert_one_line_error, invoke

SPEC = RunSpec(method="fake-threshold", dataset="synthetic", task="blob", labels="mask", shots=5, draw=0, seed=0,
               budget="quick")  # fmt: skip


class SeenImages(MeanThreshold):
    """MeanThreshold that remembers every image it was given, to prove which split a run touched."""

    name = "fake-seen"
    seen: list[np.ndarray] = []

    def fit(self, train, ctx: RunContext) -> None:
        SeenImages.seen += [item.image for item in train]
        super().fit(train, ctx)

    def predict(self, items, ctx: RunContext) -> list[np.ndarray]:
        SeenImages.seen += [item.image for item in items]
        return super().predict(items, ctx)


def test_the_split_keys_the_run_id_and_the_default_keeps_old_ids() -> None:
    val = replace(SPEC, eval_split="val")
    assert "eval_split" not in SPEC.canonical()  # ids of records written before the flag are unchanged
    assert val.canonical()["eval_split"] == "val"
    assert "_val_" in val.run_id and val.run_id != SPEC.run_id and "_val" not in SPEC.run_id
    assert RunSpec.from_dict(val.canonical()) == val and RunSpec.from_dict(SPEC.canonical()) == SPEC
    planned = expand(["unet"], ["synthetic"], None, [5], None, [0], 1, "quick", "litemedsam", eval_split="val")
    assert {p.spec.eval_split for p in planned} == {"val"}
    with pytest.raises(BenchError, match="--eval-split takes test or val"):
        expand(["unet"], ["synthetic"], None, [5], None, [0], 1, "quick", "litemedsam", eval_split="train")


def test_a_val_run_scores_val_and_never_sees_a_test_image(tmp_path) -> None:
    task = load_task("synthetic", "blob")
    SeenImages.seen = []
    with registered_methods({"fake-seen": SeenImages}):
        record = run_one(replace(SPEC, method="fake-seen", eval_split="val"), GridSettings(tmp_path, "exp"))
    assert record["status"] == "ok", record.get("traceback")
    assert [case["id"] for case in record["cases"]] == [sample.id for sample in task.val]
    assert record["spec"]["eval_split"] == "val" and record["run_id"].split("_")[-2] == "val"
    test_images = [sample.image for sample in task.test]
    touched = [image for image in SeenImages.seen if any(np.array_equal(image, t) for t in test_images)]
    assert len(SeenImages.seen) == 5 + len(task.val) and not touched


def test_tables_and_reports_say_the_split_and_never_mix_them(tmp_path, fake_methods) -> None:
    for split in ("test", "val"):
        result = invoke("run", "--methods", "fake-threshold", "--shots", "5", "--tasks", "blob", "--budget", "quick",
                        "--eval-split", split, "--results", str(tmp_path))  # fmt: skip
        assert result.exit_code == 0, result.output
        assert f"scored on {split}" in result.output
    records = store.load_records(tmp_path)
    dice = {store.record_split(r): round(100 * r["mean_dice"], 2) for r in records}
    assert set(dice) == {"test", "val"}

    default = invoke("table", "--results", str(tmp_path))
    assert "scored on the test split" in default.output and f"{dice['test']:.2f}" in default.output
    on_val = invoke("table", "--results", str(tmp_path), "--split", "val", "--format", "latex")
    assert "scored on the val split" in on_val.output and f"{dice['val']:.2f}" in on_val.output
    assert f"{dice['test']:.2f}" not in on_val.output

    report = invoke("report", "--results", str(tmp_path), "--split", "val", "--out", str(tmp_path / "val-report"))
    assert report.exit_code == 0, report.output
    assert "scored on the **val** split" in (tmp_path / "val-report" / "report.md").read_text()
    assert_one_line_error(invoke("table", "--results", str(tmp_path), "--split", "train"), "--split takes test or val")

    only_val = tmp_path / "only-val"
    only_val.mkdir()
    (only_val / "exp" / "runs").mkdir(parents=True)
    val_record = next(r for r in records if store.record_split(r) == "val")
    (only_val / "exp" / "runs" / f"{val_record['run_id']}.json").write_text(json.dumps(val_record))
    assert "scored on the val split" in invoke("table", "--results", str(only_val)).output
    assert_one_line_error(invoke("table", "--results", str(only_val), "--split", "test"), "no run records scored on")
