"""The worked example of docs/own-data.md, "Only boxes?": HC18 as a user with ten boxes would have it.

Writes, from the HC18 release under --data-root (``bench data download hc18``):

    <out>/<name>/images/<id>.png     the 10 support images of draw 0 (k = 10), as the hc18 plugin frames them
    <out>/<name>/boxes.json          their heads' tight boxes as a COCO export (CVAT "COCO 1.0"), or, with
                                     --format voc, boxes/<id>.xml as labelImg writes Pascal VOC; no masks
    <out>/new/<id>.png               the 139 test images of the hc18 split, framed the same way
    <out>/truth/<id>.png             their masks (0/255), kept apart to score the predictions

Run it with the cache the runs use (``$BENCH_CACHE``): the support draw is the harness's own, so the images are
those of the committed run ``prompt-module … box k10 d0`` in results/hc18-litemedsam.

    python examples/hc18_boxes.py --data-root ../shared/data --out /tmp/hc18-boxes
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from xml.etree.ElementTree import Element, SubElement, tostring

import cv2
import numpy as np

from bench.data.dataset import load_task
from bench.data.samples import Box, support_ids

STRUCTURE = "head"


def coco_export(boxes: dict[str, Box], size: tuple[int, int]) -> dict:
    """The boxes as CVAT's "COCO 1.0" export writes them: bbox = [x, y, width, height] in pixel edges."""
    images, annotations = [], []
    for number, (image_id, box) in enumerate(sorted(boxes.items()), start=1):
        images.append({"id": number, "width": size[1], "height": size[0], "file_name": f"{image_id}.png",
                       "license": 0, "flickr_url": "", "coco_url": "", "date_captured": 0})  # fmt: skip
        annotations.append({"id": number, "image_id": number, "category_id": 1, "segmentation": [],
                            "area": float(box.area), "bbox": [float(box.x0), float(box.y0), float(box.width),
                            float(box.height)], "iscrowd": 0, "attributes": {"occluded": False}})  # fmt: skip
    return {"licenses": [{"name": "", "id": 0, "url": ""}], "info": {"contributor": "", "description": "HC18"},
            "categories": [{"id": 1, "name": STRUCTURE, "supercategory": ""}], "images": images,
            "annotations": annotations}  # fmt: skip


def voc_export(image_id: str, box: Box, size: tuple[int, int]) -> bytes:
    """One image's box as labelImg writes Pascal VOC: 1-based inclusive corners."""
    root = Element("annotation")
    SubElement(root, "folder").text = "images"
    SubElement(root, "filename").text = f"{image_id}.png"
    dimensions = SubElement(root, "size")
    for key, value in (("width", size[1]), ("height", size[0]), ("depth", 1)):
        SubElement(dimensions, key).text = str(value)
    item = SubElement(root, "object")
    SubElement(item, "name").text = STRUCTURE
    SubElement(item, "difficult").text = "0"
    corners = SubElement(item, "bndbox")
    for key, value in (("xmin", box.x0 + 1), ("ymin", box.y0 + 1), ("xmax", box.x1 + 1), ("ymax", box.y1 + 1)):
        SubElement(corners, key).text = str(value)
    return tostring(root)


def write_example(data_root: Path, out: Path, box_format: str, name: str) -> None:
    task = load_task("hc18", STRUCTURE, data_root)
    support = set(support_ids(task, 10, 0))
    folder = out / name
    for sub in (folder / "images", out / "new", out / "truth"):
        sub.mkdir(parents=True, exist_ok=True)
    boxes = {}
    for sample in task.train:
        if sample.id in support:
            cv2.imwrite(str(folder / "images" / f"{sample.id}.png"), sample.image)
            boxes[sample.id] = sample.box
    size = task.train[0].image.shape
    if box_format == "coco":
        (folder / "boxes.json").write_text(json.dumps(coco_export(boxes, size)))
    else:
        (folder / "boxes").mkdir(exist_ok=True)
        for image_id, box in boxes.items():
            (folder / "boxes" / f"{image_id}.xml").write_bytes(voc_export(image_id, box, size))
    for sample in task.test:
        cv2.imwrite(str(out / "new" / f"{sample.id}.png"), sample.image)
        cv2.imwrite(str(out / "truth" / f"{sample.id}.png"), sample.mask.astype(np.uint8) * 255)
    print(f"{len(boxes)} boxed images in {folder}, {len(task.test)} new images in {out / 'new'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", type=Path, required=True, help="The folder holding hc18/.")
    parser.add_argument("--out", type=Path, required=True, help="Where the example folders are written.")
    parser.add_argument("--format", choices=("coco", "voc"), default="coco", help="The box file's format.")
    parser.add_argument("--name", default="hc18-boxes", help="The dataset folder's name (folder:<name>).")
    arguments = parser.parse_args()
    write_example(arguments.data_root, arguments.out, arguments.format, arguments.name)


if __name__ == "__main__":
    main()
