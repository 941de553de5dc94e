"""Box files as labels (``bench.data.box_files``): one box in each of the four formats, from files shaped like the
real exports (CVAT COCO 1.0, labelImg Pascal VOC, Ultralytics YOLO, a VinDr-style CSV), read into the same
inclusive pixel box; every bad box file ending in one line, exit code 2 and an unchanged data folder; and each
format fed truncated and shuffled."""

from __future__ import annotations

import json
import os
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from bench.cli import app
from bench.data.box_files import read_drawn_boxes
from bench.data.samples import Box, tight_box
from bench.errors import BenchError

WIDTH, HEIGHT = 64, 48
# the disc's tight box, inclusive: columns 10..29, rows 5..24
TIGHT = Box(10, 5, 29, 24)

CVAT_COCO = {
    "licenses": [{"name": "", "id": 0, "url": ""}],
    "info": {"contributor": "", "date_created": "", "description": "", "url": "", "version": "", "year": ""},
    "categories": [{"id": 1, "name": "disc", "supercategory": ""}],
    "images": [{"id": 1, "width": WIDTH, "height": HEIGHT, "file_name": "scan.png", "license": 0, "flickr_url": "",
                "coco_url": "", "date_captured": 0}],
    "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "segmentation": [], "area": 400.0,
                     "bbox": [10.0, 5.0, 20.0, 20.0], "iscrowd": 0,
                     "attributes": {"occluded": False, "rotation": 0.0}}],
}  # fmt: skip

LABELIMG_VOC = """<annotation>
	<folder>images</folder>
	<filename>scan.png</filename>
	<path>/home/user/disc/images/scan.png</path>
	<source>
		<database>Unknown</database>
	</source>
	<size>
		<width>64</width>
		<height>48</height>
		<depth>1</depth>
	</size>
	<segmented>0</segmented>
	<object>
		<name>disc</name>
		<pose>Unspecified</pose>
		<truncated>0</truncated>
		<difficult>0</difficult>
		<bndbox>
			<xmin>11</xmin>
			<ymin>6</ymin>
			<xmax>30</xmax>
			<ymax>25</ymax>
		</bndbox>
	</object>
</annotation>
"""

# Ultralytics writes centre and size over the image's width and height, six decimals
ULTRALYTICS_YOLO = "0 0.312500 0.312500 0.312500 0.416667\n"
ULTRALYTICS_DATA_YAML = "path: ../datasets/disc\ntrain: images\nval: images\nnames:\n  0: disc\n"

VINDR_CSV = "image_id,class_name,x_min,y_min,x_max,y_max\nscan,disc,10.0,5.0,29.0,24.0\n"


def disc_image() -> tuple[np.ndarray, np.ndarray]:
    rows, columns = np.ogrid[:HEIGHT, :WIDTH]
    # a disc of radius 10 centred between pixels: columns 10..29 and rows 5..24, its tight box TIGHT
    labels = (((columns - 19.5) ** 2 + (rows - 14.5) ** 2) <= 100).astype(np.uint8)
    image = (60 + 150 * labels).astype(np.uint8)
    return image, labels


def write_folder(root: Path, box_format: str, text: str | bytes | None = None, masks: bool = False) -> Path:
    """An image folder with one image, ``scan.png``, labelled by a box file in ``box_format`` (the real export
    above, or ``text``), and its mask when ``masks``."""
    folder = root / f"disc-{box_format}"
    (folder / "images").mkdir(parents=True)
    image, labels = disc_image()
    cv2.imwrite(str(folder / "images" / "scan.png"), image)
    if masks:
        (folder / "masks").mkdir()
        cv2.imwrite(str(folder / "masks" / "scan.png"), labels)
        (folder / "labels.json").write_text(json.dumps({"background": 0, "disc": 1}))
    real = {"coco": json.dumps(CVAT_COCO), "voc": LABELIMG_VOC, "yolo": ULTRALYTICS_YOLO, "csv": VINDR_CSV}
    content = real[box_format] if text is None else text
    if box_format == "coco":
        target = folder / "boxes.json"
    elif box_format == "csv":
        target = folder / "boxes.csv"
    else:
        (folder / "boxes").mkdir()
        target = folder / "boxes" / ("scan.xml" if box_format == "voc" else "scan.txt")
        if box_format == "yolo":
            (folder / "boxes" / "data.yaml").write_text(ULTRALYTICS_DATA_YAML)
    target.write_bytes(content.encode() if isinstance(content, str) else content)
    return folder


@pytest.mark.parametrize("box_format", ["coco", "voc", "yolo", "csv"])
def test_each_format_reads_the_tight_box_of_the_mask(tmp_path: Path, box_format: str) -> None:
    folder = write_folder(tmp_path, box_format)
    box_file = next(path for path in folder.iterdir() if path.name.startswith("boxes"))
    drawn = read_drawn_boxes(box_file, folder / "images", ["disc"])
    assert drawn.format == box_format
    assert drawn.boxes == {folder / "images" / "scan.png": {"disc": TIGHT}}
    assert tight_box(disc_image()[1].astype(bool)) == TIGHT


def test_yolo_class_names_from_classes_txt_and_the_category_names_the_task(tmp_path: Path) -> None:
    folder = write_folder(tmp_path, "yolo")
    (folder / "boxes" / "data.yaml").unlink()
    (folder / "boxes" / "classes.txt").write_text("Disc\n")
    drawn = read_drawn_boxes(folder / "boxes", folder / "images", ["disc"])  # categories match in any case
    assert drawn.boxes[folder / "images" / "scan.png"] == {"disc": TIGHT}


def test_fractional_corners_round_to_the_pixels_whose_centres_they_enclose(tmp_path: Path) -> None:
    coco = json.loads(json.dumps(CVAT_COCO))
    coco["annotations"][0]["bbox"] = [9.6, 5.4, 20.1, 19.3]  # edges 9.6–29.7, 5.4–24.7
    folder = write_folder(tmp_path, "coco", json.dumps(coco))
    drawn = read_drawn_boxes(folder / "boxes.json", folder / "images", ["disc"])
    assert drawn.boxes[folder / "images" / "scan.png"]["disc"] == TIGHT


def invoke(*args: object) -> tuple[int, str]:
    outcome = CliRunner().invoke(app, [str(arg) for arg in args])
    return outcome.exit_code, outcome.output


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(path.relative_to(folder)): (path.lstat().st_size, path.lstat().st_mtime_ns)
            for path in sorted(folder.rglob("*"))}  # fmt: skip


def coco_with(**changes: object) -> str:
    coco = json.loads(json.dumps(CVAT_COCO))
    for key, value in changes.items():
        target, field = key.split("__")
        coco[target][0][field] = value
    return json.dumps(coco)


def two_boxes() -> str:
    coco = json.loads(json.dumps(CVAT_COCO))
    coco["annotations"].append(dict(coco["annotations"][0], id=2, bbox=[30.0, 20.0, 5.0, 5.0]))
    return json.dumps(coco)


BAD_BOX_FILES = [
    ("outside", "coco", coco_with(annotations__bbox=[50.0, 5.0, 20.0, 20.0]), "reaches outside the image"),
    ("zero-area", "coco", coco_with(annotations__bbox=[10.0, 5.0, 0.0, 20.0]), "has no area or swapped corners"),
    ("negative", "csv", "image,x_min,y_min,x_max,y_max\nscan.png,-4,5,29,24\n", "reaches outside the image"),
    ("swapped", "voc", LABELIMG_VOC.replace("<xmin>11<", "<xmin>40<"), "has no area or swapped corners"),
    ("missing-image", "coco", coco_with(images__file_name="gone.png"), "image 'gone.png' is not in"),
    ("parent-path", "csv", "image,x_min,y_min,x_max,y_max\n../images/scan.png,10,5,29,24\n", "points outside"),
    ("absolute-path", "coco", coco_with(images__file_name="/etc/hostname"), "points outside the dataset folder"),
    ("unknown-category", "coco", coco_with(annotations__category_id=7), "unknown category id 7"),
    ("unknown-class", "yolo", "3 0.3 0.3 0.2 0.2\n", "unknown class 3"),
    ("malformed-json", "coco", json.dumps(CVAT_COCO)[:-40], "is not valid JSON"),
    ("malformed-xml", "voc", LABELIMG_VOC[:200], "is not valid XML"),
    ("malformed-csv", "csv", "image,x_min,y_min,x_max,y_max\nscan.png,10,five,29,24\n", "must be numbers"),
    ("yolo-beyond-1", "yolo", "0 0.3125 0.3125 1.3125 0.4166\n", "must lie in [0, 1]"),
    ("two-boxes", "coco", two_boxes(), "has two boxes of disc"),
]


@pytest.mark.parametrize(("case", "box_format", "text", "message"), BAD_BOX_FILES, ids=[c[0] for c in BAD_BOX_FILES])
def test_a_bad_box_file_ends_in_one_line_and_leaves_the_folder_unchanged(
    tmp_path: Path, case: str, box_format: str, text: str, message: str
) -> None:
    folder = write_folder(tmp_path, box_format, text)
    before = snapshot(folder)
    for command in (["data", "check"], ["train", "prompt-module", "--results", tmp_path / "results"]):
        code, output = invoke(*command, f"folder:{folder}")
        assert code == 2 and message in output and len(output.strip().splitlines()) == 1, output
    assert snapshot(folder) == before
    assert not (tmp_path / "results").exists()


def test_an_image_with_neither_mask_nor_box_and_a_link_out_are_refused(tmp_path: Path) -> None:
    folder = write_folder(tmp_path, "coco")
    cv2.imwrite(str(folder / "images" / "other.png"), disc_image()[0])  # listed nowhere, no mask
    code, output = invoke("data", "check", f"folder:{folder}")
    assert code == 2 and "other.png has no mask" in output and "nor a box" in output, output

    outside = tmp_path / "outside.png"
    cv2.imwrite(str(outside), disc_image()[0])
    (folder / "images" / "other.png").unlink()
    os.symlink(outside, folder / "images" / "linked.png")
    coco = json.loads(json.dumps(CVAT_COCO))
    coco["images"][0]["file_name"] = "linked.png"
    (folder / "boxes.json").write_text(json.dumps(coco))
    before = snapshot(folder)
    code, output = invoke("data", "check", f"folder:{folder}")
    assert code == 2 and "points outside the dataset folder (a link to" in output, output
    assert snapshot(folder) == before


def test_a_box_that_misses_its_mask_is_named_in_a_warning(tmp_path: Path) -> None:
    from bench.data.dataset import load_task

    text = coco_with(annotations__bbox=[10.0, 5.0, 10.0, 20.0])  # the left half of the disc
    folder = write_folder(tmp_path, "coco", text, masks=True)
    with pytest.warns(UserWarning, match=r"the disc box of scan in boxes.json leaves \d+% of its mask outside"):
        task = load_task(f"folder:{folder}", "disc")
    (sample,) = [*task.train, *task.val, *task.test]
    assert sample.given_box == Box(10, 5, 19, 24) and sample.mask_known


VALID = {"coco": json.dumps(CVAT_COCO), "voc": LABELIMG_VOC, "yolo": ULTRALYTICS_YOLO * 2, "csv": VINDR_CSV * 2}


@pytest.mark.parametrize("box_format", ["coco", "voc", "yolo", "csv"])
def test_fuzz_truncated_and_shuffled_files_read_or_fail_in_one_line(tmp_path: Path, box_format: str) -> None:
    """Every cut and every shuffle of a real export either reads (into boxes inside the image) or raises
    BenchError: never another exception, which would be a traceback on the command line."""
    rng = np.random.default_rng(0)
    text = VALID[box_format]
    variants = [text[:cut] for cut in sorted(set(rng.integers(0, len(text), 25).tolist()))]
    lines = text.splitlines(keepends=True)
    variants += ["".join(rng.permutation(lines).tolist()) for _ in range(10)]
    variants += ["".join(rng.permutation(list(text)).tolist()) for _ in range(10)]
    outcomes = {"read": 0, "refused": 0}
    for number, variant in enumerate(variants):
        folder = write_folder(tmp_path / str(number), box_format, variant)
        box_file = next(path for path in folder.iterdir() if path.name.startswith("boxes"))
        try:
            drawn = read_drawn_boxes(box_file, folder / "images", ["disc"])
        except BenchError as error:
            assert "\n" not in str(error)
            outcomes["refused"] += 1
            continue
        for per_task in drawn.boxes.values():
            for box in per_task.values():
                assert 0 <= box.x0 <= box.x1 < WIDTH and 0 <= box.y0 <= box.y1 < HEIGHT
        outcomes["read"] += 1
    assert outcomes["refused"] > 0 and sum(outcomes.values()) == len(variants)
