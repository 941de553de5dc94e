"""`bench predict` and `bench evaluate` on the real HC18 and ACDC releases in ../shared (each skipped when
absent): runs trained with the tiny backbone for one epoch, so the tests check the plumbing, not the Dice."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import SimpleITK as sitk
from typer.testing import CliRunner

from bench import load_task
from bench.cli import app
from bench.data.framing import frame_source, read_source
from bench.datasets.acdc import read_ed_frame
from bench.datasets.hc18 import CSV_NAME, fill_outline
from bench.metrics import dice_from_counts
from bench.registry import DATASETS
from tests.conftest import SHARED_DATA

TINY_RUN = ("--methods", "prompt-module", "--labels", "box", "--shots", "10", "--seeds", "0", "--draws", "1",
            "--budget", "quick", "--set", "epochs=1", "--backbone", "tiny-sam-test", "--device", "cpu",
            "--save-models", "--data-root", SHARED_DATA, "--eval-split", "val")  # fmt: skip


def invoke(*args: object) -> str:
    outcome = CliRunner().invoke(app, [str(arg) for arg in args])
    assert outcome.exit_code == 0, outcome.output
    return outcome.output


def train(dataset: str, task: str, results: Path) -> dict:
    invoke("run", "--datasets", dataset, "--tasks", task, *TINY_RUN, "--results", results)
    (record_file,) = (results / "default" / "runs").glob("*.json")
    return json.loads(record_file.read_text())


@pytest.mark.skipif(not (SHARED_DATA / "hc18" / CSV_NAME).is_file(), reason="real HC18 data not in ../shared")
def test_hc18_predict_on_ten_unseen_training_images_matches_evaluate(tmp_path) -> None:
    record = train("hc18", "head", tmp_path / "results")
    task = load_task("hc18", "head", SHARED_DATA)
    unseen = [sample for sample in task.train if sample.id not in set(record["support_ids"])][:10]
    folder = SHARED_DATA / "hc18" / "training_set"
    images = [folder / f"{sample.id}.png" for sample in unseen]
    for image, sample in zip(images, unseen, strict=True):  # the hook frames a file as the release's loader does
        (plane,) = frame_source(DATASETS.get("hc18")(SHARED_DATA), read_source(image))
        np.testing.assert_array_equal(plane.image, sample.image)
    out, truth = tmp_path / "masks", tmp_path / "truth"
    invoke("predict", record["run_id"], *images, "--output", out, "--results", tmp_path / "results", "--device", "cpu")
    truth.mkdir()
    dice = {}
    for image in images:
        mask = cv2.imread(str(out / image.name), cv2.IMREAD_UNCHANGED) > 0
        filled = fill_outline(cv2.imread(str(image.with_name(f"{image.stem}_Annotation.png")), cv2.IMREAD_GRAYSCALE))
        assert mask.shape == filled.shape == cv2.imread(str(image), cv2.IMREAD_GRAYSCALE).shape
        cv2.imwrite(str(truth / image.name), filled.astype(np.uint8) * 255)
        counts = (mask & filled).sum(), (mask & ~filled).sum(), (~mask & filled).sum()
        dice[image.name] = dice_from_counts(*(int(c) for c in counts))
    output = invoke("evaluate", record["run_id"], *images, "--truth", truth, "--results", tmp_path / "results",
                    "--device", "cpu")  # fmt: skip
    evaluation = json.loads(Path(output.split("record ")[-1].strip()).read_text())
    assert {case["id"]: case["dice"] for case in evaluation["cases"]} == pytest.approx(dice, abs=1e-12)


@pytest.mark.skipif(not (SHARED_DATA / "acdc" / "testing").is_dir(), reason="real ACDC data not in ../shared")
def test_acdc_predict_on_a_patients_volume_writes_a_volume_with_its_header(tmp_path) -> None:
    record = train("acdc", "lv", tmp_path / "results")
    patient = next(path for path in sorted((SHARED_DATA / "acdc" / "testing").glob("patient*")) if path.is_dir())
    volume = patient / f"{patient.name}_frame{read_ed_frame(patient / 'Info.cfg'):02d}.nii.gz"
    task = load_task("acdc", "lv", SHARED_DATA)
    kept = {s.id: s for s in task.test if s.subject == patient.name}
    planes = frame_source(DATASETS.get("acdc")(SHARED_DATA), read_source(volume))
    for z, plane in enumerate(planes):  # the slices the release keeps are framed exactly as its loader frames them
        if f"{patient.name}_s{z:02d}" in kept:
            np.testing.assert_array_equal(plane.image, kept[f"{patient.name}_s{z:02d}"].image)
    assert kept
    out = tmp_path / "masks"
    invoke("predict", record["run_id"], volume, "--output", out, "--results", tmp_path / "results", "--device", "cpu")
    source, written = sitk.ReadImage(str(volume)), sitk.ReadImage(str(out / volume.name))
    assert written.GetSize() == source.GetSize()
    np.testing.assert_allclose(written.GetSpacing(), source.GetSpacing(), rtol=1e-6)
    np.testing.assert_allclose(written.GetOrigin(), source.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(written.GetDirection(), source.GetDirection(), atol=1e-6)
    assert set(np.unique(sitk.GetArrayFromImage(written))) <= {0, 1}
