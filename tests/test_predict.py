"""`bench predict` and `bench evaluate` end to end on synthetic images with the tiny backbone, and every kind
of bad input ending in one line, exit code 2 and nothing written."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from bench import load_task
from bench.cli import app
from bench.metrics import dice_from_counts

TINY = "tiny-sam-test"
RUN_FLAGS = ("--datasets", "synthetic", "--tasks", "ellipse", "--labels", "box", "--shots", "2", "--seeds", "0",
             "--draws", "1", "--budget", "quick", "--backbone", TINY, "--device", "cpu")  # fmt: skip


def invoke(*args: object, code: int = 0) -> str:
    outcome = CliRunner().invoke(app, [str(arg) for arg in args])
    assert outcome.exit_code == code, outcome.output
    return outcome.output


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """One results folder with a prompt-module run (saved model) and a MedSAM-box run (training-free)."""
    root = tmp_path_factory.mktemp("trained")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("BENCH_CACHE", str(root / "cache"))
        patch.setenv("BENCH_DATA", str(root / "cache" / "data"))
        results = root / "results"
        invoke("run", "--methods", "prompt-module", *RUN_FLAGS, "--set", "epochs=1", "--results", results,
               "--save-models")  # fmt: skip
        invoke("run", "--methods", "medsam-box", *RUN_FLAGS, "--results", results)
        samples = load_task("synthetic", "ellipse").test[:3]
    records = {json.loads(p.read_text())["spec"]["method"]: json.loads(p.read_text())
               for p in (results / "default" / "runs").glob("*.json")}  # fmt: skip
    images, truths = root / "images", root / "truth"
    images.mkdir()
    truths.mkdir()
    for index, sample in enumerate(samples):
        # sizes of their own: synthetic frames an image as it is, so each mask must come back at its size
        shape = (256 - 20 * index, 256 + 12 * index)
        cv2.imwrite(str(images / f"{sample.id}.png"), cv2.resize(sample.image, shape[::-1]))
        mask = cv2.resize(sample.mask.astype(np.uint8), shape[::-1], interpolation=cv2.INTER_NEAREST)
        cv2.imwrite(str(truths / f"{sample.id}.png"), mask * 255)
    return {"results": results, "records": records, "images": images, "truth": truths}


def test_predict_writes_each_mask_at_its_inputs_size_and_evaluate_scores_them(trained, tmp_path) -> None:
    run_id = trained["records"]["prompt-module"]["run_id"]
    out = tmp_path / "masks"
    invoke("predict", run_id, trained["images"], "--output", out, "--results", trained["results"], "--device", "cpu")
    written = sorted(out.iterdir())
    assert [p.name for p in written] == sorted(p.name for p in trained["images"].iterdir())
    expected = {}
    for path in written:
        mask = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        image = cv2.imread(str(trained["images"] / path.name), cv2.IMREAD_UNCHANGED)
        assert mask.shape == image.shape and set(np.unique(mask)) <= {0, 255}
        truth = cv2.imread(str(trained["truth"] / path.name), cv2.IMREAD_UNCHANGED) > 0
        predicted = mask > 0
        counts = (predicted & truth).sum(), (predicted & ~truth).sum(), (~predicted & truth).sum()
        expected[path.name] = dice_from_counts(*(int(c) for c in counts))

    output = invoke("evaluate", "prompt-module", trained["images"], "--truth", trained["truth"],
                    "--results", trained["results"], "--device", "cpu")  # fmt: skip
    record = json.loads(Path(output.split("record ")[-1].strip()).read_text())
    assert record["eval_of"] == run_id and record["evaluated_on"]["images"] == 3
    assert {case["id"]: case["dice"] for case in record["cases"]} == pytest.approx(expected, abs=1e-12)


def test_evaluate_on_the_runs_own_split_reproduces_its_score_and_shows_in_the_table(trained, tmp_path) -> None:
    results = tmp_path / "results"
    shutil.copytree(trained["results"], results)
    run = trained["records"]["prompt-module"]
    invoke("evaluate", run["run_id"], "--dataset", "synthetic", "--results", results, "--device", "cpu")
    record = json.loads(next((results / "default" / "runs").glob("*_on_synthetic-ellipse.json")).read_text())
    assert record["mean_dice"] == pytest.approx(run["mean_dice"], abs=1e-9)
    assert record["evaluated_on"] == {"dataset": "synthetic", "split": "test"}
    table = invoke("table", "--results", results)
    assert "trained on Synthetic Ellipse" in table


def test_evaluate_on_val_is_the_runs_own_row_of_the_val_table(trained, tmp_path) -> None:
    results = tmp_path / "results"
    shutil.copytree(trained["results"], results)
    run = trained["records"]["prompt-module"]
    test_table = invoke("table", "--results", results, "--format", "csv")
    invoke("evaluate", run["run_id"], "--dataset", "synthetic", "--split", "val", "--results", results,
           "--device", "cpu")  # fmt: skip
    record = json.loads(next((results / "default" / "runs").glob("*_on_synthetic-ellipse_val.json")).read_text())
    assert record["trained_on"]["split"] == "test" and record["spec"]["eval_split"] == "val"
    val_table = invoke("table", "--results", results, "--split", "val", "--format", "csv")
    assert "trained on" not in val_table
    assert f"{100 * record['mean_dice']:.2f}" in val_table
    # the val score is not mixed into the run's row of the test table
    assert invoke("table", "--results", results, "--format", "csv") == test_table
    # the val report reads records without a fit time (an evaluation trains nothing)
    invoke("report", "--results", results, "--split", "val", "--out", tmp_path / "report")
    report = (tmp_path / "report" / "report.md").read_text()
    assert "val" in report and f"{100 * record['mean_dice']:.2f}" in report


def test_a_prompted_method_predicts_from_the_boxes_file(trained, tmp_path) -> None:
    run_id = trained["records"]["medsam-box"]["run_id"]
    image = next(trained["images"].iterdir())
    boxes = tmp_path / "boxes.csv"
    with boxes.open("w", newline="") as stream:
        csv.writer(stream).writerows([("image", "x0", "y0", "x1", "y1"), (image.name, 40, 50, 120, 110)])
    out = tmp_path / "masks"
    common = ("--output", out, "--results", trained["results"], "--device", "cpu")
    missing = invoke("predict", run_id, image, *common, code=2)
    assert "--boxes" in missing and not out.exists()
    invoke("predict", run_id, image, *common, "--boxes", boxes)
    assert cv2.imread(str(out / image.name), cv2.IMREAD_UNCHANGED).shape == cv2.imread(str(image)).shape[:2]


def _damage(results: Path, record: dict, how: str) -> list[str]:
    """Spoil a copy of the trained results as ``how`` says; returns the extra command-line options needed."""
    record_file = results / "default" / "runs" / f"{record['run_id']}.json"
    model_file = results / "default" / record["saved_model"]["file"]
    if how == "no-model":
        edited = {key: value for key, value in record.items() if key != "saved_model"}
        record_file.write_text(json.dumps(edited))
    elif how == "truncated":
        model_file.write_bytes(model_file.read_bytes()[:1000])
    elif how == "other-checkpoint":
        from bench.sam.tiny_backbone import tiny_sam

        weights = tiny_sam().state_dict()
        weights["mask_decoder.iou_token.weight"] += 1.0
        checkpoint = results / "other-tiny.pt"
        torch.save(weights, checkpoint)
        return ["--checkpoint", str(checkpoint)]
    return []


@pytest.mark.parametrize(
    ("how", "message"),
    [
        ("no-model", "has no saved model: run it again with --save-models"),
        ("truncated", "is damaged or was replaced"),
        ("other-checkpoint", "was trained with another tiny-sam-test checkpoint"),
        ("empty", "no images"),
        ("unwritable", "is not writable"),
    ],
)
def test_bad_input_ends_in_one_line_and_writes_nothing(trained, tmp_path, how: str, message: str) -> None:
    results = tmp_path / "results"
    shutil.copytree(trained["results"], results)
    record = trained["records"]["prompt-module"]
    extra = _damage(results, record, how)
    inputs, out = trained["images"], tmp_path / "masks"
    if how == "empty":
        inputs = tmp_path / "empty"
        inputs.mkdir()
    elif how == "unwritable":
        blocker = tmp_path / "a-file"
        blocker.write_text("")
        out = blocker / "masks"  # a folder that cannot be made, whoever runs the test (root ignores chmod)
    output = invoke("predict", record["run_id"], inputs, "--output", out, "--results", results, "--device", "cpu",
                    *extra, code=2)  # fmt: skip
    assert message in output and len(output.strip().splitlines()) == 1, output
    assert not out.exists() or not any(out.iterdir())
