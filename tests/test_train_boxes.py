"""Datasets whose training images carry boxes only, `bench train` (no test split needed) and `bench predict` on a
colour image, with the tiny random-weight SAM; and, where the shared data is present, HC18's support boxes."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from bench.cli import app
from bench.data.dataset import dataset_class, load_task
from bench.data.samples import support_ids, tight_box
from bench.errors import BenchError
from tests.conftest import SHARED_DATA
from tests.own_data_fixtures import labelled_image

TINY = ("--backbone", "tiny-sam-test", "--device", "cpu", "--budget", "quick", "--set", "epochs=1")


def invoke(*args: object, code: int = 0) -> str:
    outcome = CliRunner().invoke(app, [str(arg) for arg in args])
    assert outcome.exit_code == code, outcome.output
    return outcome.output


def coco(boxes: dict[str, tuple[int, int, int, int]], size: tuple[int, int]) -> str:
    """A COCO file of one category, ``disc``, from inclusive pixel boxes."""
    names = sorted(boxes)
    return json.dumps({
        "categories": [{"id": 1, "name": "disc"}],
        "images": [{"id": n, "file_name": f"{name}.png", "height": size[0], "width": size[1]}
                   for n, name in enumerate(names)],
        "annotations": [{"id": n, "image_id": n, "category_id": 1,
                         "bbox": [boxes[name][0], boxes[name][1], boxes[name][2] - boxes[name][0] + 1,
                                  boxes[name][3] - boxes[name][1] + 1]} for n, name in enumerate(names)],
    })  # fmt: skip


def disc_folder(root: Path, with_masks: int, boxes_only: int) -> tuple[Path, dict]:
    """An image folder of discs: the first ``with_masks`` images have masks, the next ``boxes_only`` only a box
    in boxes.json (the tight box of the disc they hide). Returns the folder and the hidden boxes."""
    folder = root / "discs"
    (folder / "images").mkdir(parents=True)
    if with_masks:
        (folder / "masks").mkdir()
    hidden = {}
    for index in range(with_masks + boxes_only):
        image, labels = labelled_image(index)
        name = f"img{index:02d}"
        cv2.imwrite(str(folder / "images" / f"{name}.png"), image)
        if index < with_masks:
            cv2.imwrite(str(folder / "masks" / f"{name}.png"), (labels == 1).astype(np.uint8))
        else:
            hidden[name] = tight_box(labels == 1).as_xyxy()
    (folder / "labels.json").write_text(json.dumps({"background": 0, "disc": 1}))
    (folder / "boxes.json").write_text(coco(hidden, image.shape))
    return folder, hidden


def test_images_with_boxes_only_train_and_are_never_scored(tmp_path: Path) -> None:
    folder, hidden = disc_folder(tmp_path, with_masks=10, boxes_only=4)
    task = load_task(f"folder:{folder}", "disc")
    boxed = {sample.id: sample for sample in task.train if not sample.mask_known}
    assert set(boxed) == set(hidden)
    assert {sample.id: sample.box.as_xyxy() for sample in boxed.values()} == hidden
    assert all(not sample.mask.any() for sample in boxed.values())
    scored = [*task.val, *task.test]
    assert scored and all(sample.mask_known and sample.mask.any() for sample in scored)
    assert len(task.train) + len(scored) == 14
    # the box-only images can be drawn into a support set: they are labelled
    assert set(support_ids(task, len(task.train), 0)) >= set(hidden)
    # the box file is part of the dataset's identity: another box, another identity (and split, and draws)
    before = task.identity
    edited = dict(hidden, img10=(0, 0, 5, 5))
    (folder / "boxes.json").write_text(coco(edited, labelled_image(0)[0].shape))
    assert dataset_class(f"folder:{folder}")(None).identity() != before


def test_mask_methods_are_skipped_with_the_reason_not_failed(tmp_path: Path) -> None:
    folder, _ = disc_folder(tmp_path, with_masks=10, boxes_only=4)
    output = invoke("run", "--methods", "unet,transunet", "--datasets", f"folder:{folder}", "--labels", "mask",
                    "--shots", "2", "--results", tmp_path / "r", *TINY)  # fmt: skip
    reason = "mask labels need a mask on every training image; 4 images of folder:discs have boxes only"
    assert f"skipped 2: {reason}" in " ".join(output.split()) and "Nothing left to run" in output
    code_output = invoke("train", "unet", f"folder:{folder}", "--labels", "mask", "--results", tmp_path / "r",
                         code=2)  # fmt: skip
    assert "cannot train on folder:discs as asked: mask labels need a mask" in code_output
    assert not (tmp_path / "r").exists()


def test_train_on_boxes_only_then_predict_a_colour_image(tmp_path: Path) -> None:
    folder, hidden = disc_folder(tmp_path, with_masks=0, boxes_only=4)
    results = tmp_path / "results"
    output = invoke("train", "prompt-module", f"folder:{folder}", "--labels", "box", "--results", results, *TINY)
    assert "no test images with masks: nothing scored" in output
    (record_file,) = (results / "trained" / "runs").glob("*.json")
    record = json.loads(record_file.read_text())
    assert record["status"] == "ok" and record["cases"] == [] and record["mean_dice"] is None
    assert record["trained_on"] == {"images": 4, "labels": "box", "drawn_boxes": 4, "box_file": "boxes.json"}
    assert sorted(record["support_ids"]) == sorted(hidden)
    assert (results / "trained" / record["saved_model"]["file"]).is_file()
    # the same command again finds the model trained
    assert "is trained already" in invoke("train", "prompt-module", f"folder:{folder}", "--labels", "box",
                                          "--results", results, *TINY)  # fmt: skip

    grey, _ = labelled_image(20)
    colour = np.stack([grey, np.roll(grey, 3, axis=1), 255 - grey], axis=-1)  # B, G, R channels that differ
    new = tmp_path / "new"
    new.mkdir()
    cv2.imwrite(str(new / "colour.png"), colour)
    out = tmp_path / "masks"
    output = invoke("predict", record["run_id"], new, "--output", out, "--results", results, "--device", "cpu",
                    "--data-root", folder.parent)  # fmt: skip
    assert "1 colour image read as luminance, as folder:discs reads its own images" in " ".join(output.split())
    mask = cv2.imread(str(out / "colour.png"), cv2.IMREAD_UNCHANGED)
    assert mask.shape == grey.shape and set(np.unique(mask)) <= {0, 255}


def test_a_box_run_on_a_dataset_with_masked_test_images_is_scored(tmp_path: Path) -> None:
    folder, _ = disc_folder(tmp_path, with_masks=10, boxes_only=4)
    results = tmp_path / "results"
    output = invoke("train", "prompt-module", f"folder:{folder}", "--labels", "box", "--results", results, *TINY)
    record = json.loads(next((results / "trained" / "runs").glob("*.json")).read_text())
    task = load_task(f"folder:{folder}", "disc")
    assert len(record["cases"]) == len(task.test) > 0 and "mean Dice" in output
    assert record["trained_on"]["images"] == len(task.train) and record["trained_on"]["drawn_boxes"] == 4


@pytest.mark.skipif(not (SHARED_DATA / "hc18").is_dir(), reason="needs the HC18 release in ../shared/data")
def test_hc18_example_writes_the_support_boxes_of_draw_0(tmp_path: Path) -> None:
    """The worked example of docs/own-data.md: the COCO and VOC box files of examples/hc18_boxes.py read back
    into the tight boxes of the HC18 support masks they were written from."""
    from bench.data.box_files import read_drawn_boxes
    from examples.hc18_boxes import write_example

    task = load_task("hc18", "head", SHARED_DATA)
    support = support_ids(task, 10, 0)
    truth = {sample.id: sample.box for sample in task.train if sample.id in support}
    for box_format in ("coco", "voc"):
        write_example(SHARED_DATA, tmp_path, box_format, box_format)
        folder = tmp_path / box_format
        box_file = folder / ("boxes.json" if box_format == "coco" else "boxes")
        drawn = read_drawn_boxes(box_file, folder / "images", ["head"])
        assert {path.stem: boxes["head"] for path, boxes in drawn.boxes.items()} == truth
    assert len(list((tmp_path / "new").iterdir())) == len(task.test) == 139


def test_an_nnunet_dataset_takes_a_box_file_for_cases_without_labels(tmp_path: Path) -> None:
    from tests.own_data_fixtures import write_nnunet_2d

    folder = write_nnunet_2d(tmp_path, cases=12)
    rows = ["image,x_min,y_min,x_max,y_max,label"]
    for index in (0, 1, 2):  # their label files go; a box of the disc stays
        label_file = folder / "labelsTr" / f"case{index:03d}.png"
        x0, y0, x1, y1 = tight_box(cv2.imread(str(label_file), cv2.IMREAD_UNCHANGED) == 1).as_xyxy()
        rows.append(f"case{index:03d}_0000.png,{x0},{y0},{x1},{y1},disc")
        label_file.unlink()
    (folder / "boxes.csv").write_text("\n".join(rows) + "\n")
    task = load_task(f"nnunet:{folder}", "disc")
    assert {sample.id for sample in task.train if not sample.mask_known} == {"case000", "case001", "case002"}
    assert all(sample.mask_known for sample in [*task.val, *task.test])
    with pytest.raises(BenchError, match="no label file labelsTr/case003.png nor a box"):
        (folder / "labelsTr" / "case003.png").unlink()
        dataset_class(f"nnunet:{folder}")(None).find_cases()
