"""`folder:<folder>`: a plain folder of 2-D images and masks, the common case that needs no ``dataset.json``.

    <folder>/images/<stem>.png   (or .bmp, .tif, .tiff, .jpg, .jpeg; grey or colour)
    <folder>/masks/<stem>.png    (or .bmp, .tif, .tiff; the same stem, one channel of label values)
    <folder>/labels.json         (optional: {"background": 0, "disc": 1, "cup": 2})
    <folder>/splits.json         (optional: {"train": [stems], "val": [...], "test": [...]})

Without ``labels.json`` every non-zero value found in the masks is a task of its own, named ``label<value>``;
a binary mask (0 and one other value, e.g. 0/255) is one task, ``foreground``. Images are split 70/10/20 by
stem, seeded, unless ``splits.json`` says otherwise.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from bench.data import persisted, safe_name
from bench.errors import BenchError
from bench.image_io import IMAGE_2D_ENDINGS, LABEL_2D_ENDINGS, LUMINANCE, file_ending, label_map, read_2d
from bench.paths import cache_dir
from bench.registry import DATASETS
from bench.release import Case, UnreadableFile
from bench.user_dataset import UserDataset

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


def _pairs(location: Path) -> list[tuple[str, Path, Path]]:
    images_folder, masks_folder = location / "images", location / "masks"
    for folder in (images_folder, masks_folder):
        if not folder.is_dir():
            raise BenchError(f"folder: no {folder.name}/ in '{location}'; expected images/<stem>.png and "
                             "masks/<stem>.png (see docs/own-data.md)")  # fmt: skip
    images, masks = _files(images_folder, IMAGE_2D_ENDINGS), _files(masks_folder, LABEL_2D_ENDINGS)
    for stem in images:
        if stem not in masks:
            raise BenchError(f"folder: images/{images[stem].name} has no mask masks/{stem}.png (or .bmp, .tif)")
    for stem in masks:
        if stem not in images:
            raise BenchError(f"folder: masks/{masks[stem].name} has no image images/{stem}.*")
    if not images:
        raise BenchError(f"folder: no images in '{images_folder}' (PNG, BMP, TIFF or JPEG)")
    return [(stem, images[stem], masks[stem]) for stem in sorted(images)]


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


@DATASETS.register("folder")
class ImageFolder(UserDataset):
    """A folder of ``images/`` and ``masks/``; ``folder:<folder>`` names one."""

    name = "folder"
    display_name = "image folder"
    tasks = ()
    family = "folder"
    default_channel = None  # the luminance of a colour image
    case_kind = "image/mask pairs"
    layout = "<folder>/images/<stem>.png and <folder>/masks/<stem>.png, optionally <folder>/labels.json"
    description: dict = {}

    @classmethod
    def description_files(cls, location: Path) -> list[Path]:
        return [path for path in (location / LABELS_FILE, location / "masks") if path.exists()]

    @classmethod
    def describe(cls, location: Path) -> dict:
        labels_path = location / LABELS_FILE
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
        else:
            found = [value for value in _values_in_masks(location, _pairs(location)) if value]
            if not found:
                raise BenchError(f"folder: the masks in '{location / 'masks'}' hold no value but 0")
            labels = {BINARY_TASK: found[0]} if len(found) == 1 else {f"label{value}": value for value in found}
        if not labels:
            raise BenchError(f"folder: '{labels_path}' names no structure besides background")
        return {"labels": labels, "name": location.name}

    def find_cases(self) -> tuple[list[Case], list[str]]:
        # a colour image is read as its luminance unless a channel is named (folder:<folder>@1)
        in_file = LUMINANCE if self.channel is None else self.channel
        cases = [Case(stem, stem, (image, mask), (in_file,)) for stem, image, mask in _pairs(self.folder)]
        return cases, [f"{len(cases)} image/mask pairs"]
