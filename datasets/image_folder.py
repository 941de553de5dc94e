"""`folder:<folder>`: a plain folder of 2-D images and masks, the common case that needs no ``dataset.json``.

    <folder>/images/<stem>.png   (or .bmp, .tif, .tiff, .jpg, .jpeg; grey or colour)
    <folder>/masks/<stem>.png    (or .bmp, .tif, .tiff; the same stem, one channel of label values)
    <folder>/labels.json         (optional: {"background": 0, "disc": 1, "cup": 2})
    <folder>/splits.json         (optional: {"train": [stems], "val": [...], "test": [...]})
    <folder>/boxes.json          (optional: boxes a person drew, or boxes.csv or boxes/: ``bench.data.box_files``)

An image needs a mask, or a box in the box file: an image with a box only is a training image (it cannot be
scored), and with a box file the masks/ folder may be left out altogether; the structures are then the box
file's categories.

Without ``labels.json`` every non-zero value found in the masks is a task of its own, named ``label<value>``;
a binary mask (0 and one other value, e.g. 0/255) is one task, ``foreground``. Images are split 70/10/20 by
stem, seeded, unless ``splits.json`` says otherwise.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from bench.data.box_files import box_file_paths, find_box_file, read_drawn_boxes
from bench.data.image_io import IMAGE_2D_ENDINGS, LABEL_2D_ENDINGS, LUMINANCE, file_ending, label_map, read_2d
from bench.data.release import Case, UnreadableFile
from bench.data.samples import persisted, safe_name
from bench.data.user_dataset import UserDataset
from bench.errors import BenchError
from bench.paths import cache_dir
from bench.registry import DATASETS

LABELS_FILE = "labels.json"
BINARY_TASK = "foreground"


def _files(folder: Path, endings: tuple[str, ...]) -> dict[str, Path]:
    files: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        ending = file_ending(path)
        if path.name.startswith(".") or ending not in endings:
            continue
        stem = path.name[: -len(ending)]
        if stem in files:
            raise BenchError(f"folder: '{folder}' holds two files named {stem}.* ({files[stem].name}, {path.name})")
        files[stem] = path
    return files


def _pairs(location: Path, boxed: set[Path] | None = None) -> list[tuple[str, Path, Path | None]]:
    """Each image with its mask; None for an image whose labels are its boxes (``boxed``: the images with a box
    in the dataset's box file, None when it has none)."""
    images_folder, masks_folder = location / "images", location / "masks"
    for folder in (images_folder, masks_folder):
        if not folder.is_dir() and (folder is images_folder or boxed is None):
            raise BenchError(f"folder: no {folder.name}/ in '{location}'; expected images/<stem>.png and "
                             "masks/<stem>.png, or a box file (see docs/own-data.md)")  # fmt: skip
    images = _files(images_folder, IMAGE_2D_ENDINGS)
    masks = _files(masks_folder, LABEL_2D_ENDINGS) if masks_folder.is_dir() else {}
    for stem in images:
        if stem not in masks and images[stem] not in (boxed or set()):
            also = " nor a box in the box file" if boxed is not None else ""
            raise BenchError(f"folder: images/{images[stem].name} has no mask masks/{stem}.png (or .bmp, .tif){also}")
    for stem in masks:
        if stem not in images:
            raise BenchError(f"folder: masks/{masks[stem].name} has no image images/{stem}.*")
    if not images:
        raise BenchError(f"folder: no images in '{images_folder}' (PNG, BMP, TIFF or JPEG)")
    return [(stem, images[stem], masks.get(stem)) for stem in sorted(images)]


def _values_in_masks(location: Path, pairs: list[tuple[str, Path, Path]]) -> list[int]:
    """The label values the masks hold, read once per set of mask files and kept in the cache."""
    stamp = [(mask.name, mask.stat().st_size, mask.stat().st_mtime_ns) for _, _, mask in pairs]
    key = hashlib.sha256(repr(stamp).encode()).hexdigest()[:16]
    path = cache_dir() / "datasets" / safe_name(f"folder:{location.name}") / f"values-{key}.json"

    def scan() -> list[int]:
        values: set[int] = set()
        for _, _, mask in pairs:
            try:
                values.update(np.unique(label_map(read_2d(mask, label=True), mask)).tolist())
            except UnreadableFile:  # named and counted when the dataset is read
                continue
        return sorted(values)

    return list(persisted(path, scan))  # type: ignore[arg-type]


@DATASETS.register
class ImageFolder(UserDataset):
    """A folder of ``images/`` and ``masks/``; ``folder:<folder>`` names one."""

    name = "folder"
    display_name = "image folder"
    tasks = ()
    family = "folder"
    form = "folder:<folder> (a folder with images/ and masks/, or images/ and a box file)"
    default_channel = None  # the luminance of a colour image
    case_kind = "image/mask pairs"
    layout = ("<folder>/images/<stem>.png and <folder>/masks/<stem>.png, optionally <folder>/labels.json; an image "
              "without a mask needs a box in <folder>/boxes.json (COCO), boxes.csv or boxes/ (VOC, YOLO)")
    description: dict = {}

    @classmethod
    def recognises(cls, folder: Path) -> bool:
        # with a box file, the images need no masks/ folder
        return (folder / "images").is_dir() and ((folder / "masks").is_dir() or find_box_file(folder) is not None)

    @classmethod
    def description_files(cls, location: Path) -> list[Path]:
        candidates = (location / LABELS_FILE, location / "masks", location / "images", *box_file_paths(location))
        return [path for path in candidates if path.exists()]

    @classmethod
    def describe(cls, location: Path) -> dict:
        labels_path = location / LABELS_FILE
        box_file = find_box_file(location)
        if labels_path.is_file():
            try:
                raw = json.loads(labels_path.read_text())
            except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
                raise BenchError(f"folder: '{labels_path}' is not valid JSON ({error})") from error
            if not isinstance(raw, dict) or not all(isinstance(v, int) and 0 <= v <= 255 for v in raw.values()):
                raise BenchError(f"folder: '{labels_path}' must map names to label values 0–255")
            if len(set(raw.values())) != len(raw):
                raise BenchError(f"folder: '{labels_path}' gives two names the same value")
            labels = {name: value for name, value in raw.items() if name.casefold() != "background"}
            if any(value == 0 for value in labels.values()):
                raise BenchError(f"folder: '{labels_path}': value 0 is the background")
        elif (location / "masks").is_dir() or box_file is None:
            with_masks = [pair for pair in _pairs(location, set() if box_file else None) if pair[2] is not None]
            found = [value for value in _values_in_masks(location, with_masks) if value]  # type: ignore[arg-type]
            if not found:
                raise BenchError(f"folder: the masks in '{location / 'masks'}' hold no value but 0")
            labels = {BINARY_TASK: found[0]} if len(found) == 1 else {f"label{value}": value for value in found}
        else:  # boxes only: the box file's categories are the structures
            categories = read_drawn_boxes(box_file, location / "images", None)
            names = sorted({task for per_image in categories.boxes.values() for task in per_image})
            labels = {name: value for value, name in enumerate(names, start=1)}
        if not labels:
            raise BenchError(f"folder: '{labels_path}' names no structure besides background")
        drawn = read_drawn_boxes(box_file, location / "images", labels) if box_file else None
        box_only = sum(1 for *_, mask in _pairs(location, set(drawn.boxes)) if mask is None) if drawn else 0
        return {"labels": labels, "name": location.name, "drawn": drawn, "box_only": box_only}

    def find_cases(self) -> tuple[list[Case], list[str]]:
        # a colour image is read as its luminance unless a channel is named (folder:<folder>@1)
        in_file = LUMINANCE if self.channel is None else self.channel
        drawn = self.description.get("drawn")
        pairs = _pairs(self.folder, set(drawn.boxes) if drawn else None)
        cases = [Case(stem, stem, (image, mask) if mask else (image,), (in_file,)) for stem, image, mask in pairs]
        box_only = sum(1 for _, _, mask in pairs if mask is None)
        if not drawn:
            return cases, [f"{len(cases)} image/mask pairs"]
        return cases, [f"{len(cases) - box_only} with a mask, {box_only} with boxes only ({drawn.source.name})"]
