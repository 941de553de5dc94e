"""Box files as training labels: the boxes a person drew, exported from an annotation tool, read into the
harness's inclusive pixel boxes (``bench.data.samples.Box``).

A dataset folder holds at most one box file, found by its name beside ``images/``:

    boxes.json          COCO: ``images`` (file_name), ``categories`` (name), ``annotations[].bbox`` = [x, y, w, h]
    boxes.csv           a CSV with a header: image,x_min,y_min,x_max,y_max[,label] (VinDr-CXR spells them
                        image_id and class_name); inclusive pixel corners, counted from 0
    boxes/*.xml         Pascal VOC, one file per image (labelImg, CVAT): <filename>, <object><name><bndbox>
                        with 1-based inclusive corners xmin, ymin, xmax, ymax
    boxes/*.txt         YOLO (Ultralytics), one file per image stem: ``class cx cy w h`` normalised to [0, 1] by
                        the image's size, with the class names in boxes/classes.txt or boxes/data.yaml

Every format is first turned into the box's edges in pixels (0-based, continuous: the left edge of column 0
is 0.0) by one function per format, then into the inclusive pixel box by one rounding (``pixel_box``), which
is where every box is checked against its image. The standard library reads them, with defusedxml for the
XML: each format is a few lines to parse, while the conventions that matter here (VOC's 1-based corners,
inclusive ends, one box per structure, names that must stay inside the dataset folder) have to be written and
tested per format whichever library parses them; globox (MIT) reads these formats too but keeps float
corners in its own convention and checks none of this.

One box per image and structure: the harness's box label is the tight box of one structure, and the methods
that learn from boxes take one prompt per image, so an image with two boxes of one structure is refused with
its name rather than guessed at.
"""

from __future__ import annotations

import csv
import functools
import hashlib
import json
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath, PureWindowsPath

from bench.data.samples import Box
from bench.errors import BenchError

COCO_FILE, CSV_FILE, BOX_FOLDER = "boxes.json", "boxes.csv", "boxes"
BOX_FILE_NAMES = (COCO_FILE, CSV_FILE, BOX_FOLDER)
YOLO_CLASS_FILES = ("classes.txt", "data.yaml")
# the share of a structure's mask a drawn box must contain before it is taken to draw that structure
MASK_IN_BOX = 0.95


@dataclass(frozen=True)
class Edges:
    """One box as a format gives it, as pixel edges (0-based, continuous), before it meets its image."""

    image: str  # the image as the box file names it
    category: str
    left: float
    top: float
    right: float
    bottom: float
    where: str  # the entry, for error messages: "boxes.json, annotation 3"


@dataclass
class DrawnBoxes:
    """A dataset's box file, read: per image file (resolved, inside the images folder), per task, one box."""

    source: Path
    format: str
    boxes: dict[Path, dict[str, Box]] = field(default_factory=dict)
    listed: set[Path] = field(default_factory=set)  # every image the file names, with boxes or without
    digest: str = ""  # of the box file's bytes (every file of a box folder): part of the dataset's identity


def find_box_file(folder: Path) -> Path | None:
    """The box file of a dataset folder, or None; two of them is a mistake that names both."""
    found = [folder / name for name in BOX_FILE_NAMES if (folder / name).exists()]
    if len(found) > 1:
        raise BenchError(f"'{folder}' holds {' and '.join(p.name for p in found)}: keep one box file")
    return found[0] if found else None


def box_file_paths(folder: Path) -> list[Path]:
    """Every file a box file may be made of, so that a changed one is noticed (a VOC or YOLO folder's files)."""
    paths = [folder / name for name in BOX_FILE_NAMES]
    box_folder = folder / BOX_FOLDER
    return paths + (sorted(box_folder.iterdir()) if box_folder.is_dir() else [])


def box_file_format(path: Path) -> str:
    if path.name == COCO_FILE:
        return "coco"
    if path.name == CSV_FILE:
        return "csv"
    if not path.is_dir():
        raise BenchError(f"'{path}' must be a folder of VOC .xml or YOLO .txt files")
    kinds = {p.suffix.lower() for p in path.iterdir() if p.suffix.lower() in (".xml", ".txt")
             and p.name not in YOLO_CLASS_FILES}  # fmt: skip
    if kinds == {".xml"}:
        return "voc"
    if kinds == {".txt"}:
        return "yolo"
    what = "both .xml and .txt files" if kinds else "no .xml (VOC) or .txt (YOLO) files"
    raise BenchError(f"'{path}' holds {what}; a box folder is Pascal VOC or YOLO, not both")


def read_drawn_boxes(path: Path, images_folder: Path, tasks: Iterable[str] | None) -> DrawnBoxes:
    """The box file ``path`` for the images in ``images_folder``: each box in pixels, checked against its image.

    ``tasks``: the dataset's structures, which every category must name (any case); None takes the box file's
    categories as the structures (a dataset with no masks). Every problem is a BenchError naming the file.
    """
    kind = box_file_format(path)
    reader = {"coco": _coco, "csv": _csv, "voc": _voc, "yolo": _yolo}[kind]
    try:
        edges, listed = reader(path, images_folder)
    except (UnicodeDecodeError, OSError) as error:
        raise BenchError(f"cannot read box file '{path}' ({error})") from None
    known = {task.casefold(): task for task in tasks} if tasks is not None else None
    drawn = DrawnBoxes(path, kind, digest=_digest(path))
    drawn.listed = {image_file(name, images_folder, where) for name, where in listed}
    for box in edges:
        image = image_file(box.image, images_folder, box.where)
        drawn.listed.add(image)
        task = box.category if known is None else known.get(box.category.casefold())
        if task is None:
            raise BenchError(
                f"{box.where}: unknown category '{box.category}'; the dataset's structures are "
                f"{', '.join(sorted(known.values()))}"  # type: ignore[union-attr]
            )
        per_task = drawn.boxes.setdefault(image, {})
        if task in per_task:
            raise BenchError(
                f"{box.where}: {image.name} has two boxes of {task}; one box per image and structure (split the "
                "image's instances into images of their own, or keep one box)"
            )
        per_task[task] = pixel_box(box, image_size(image))
    return drawn


def pixel_box(edges: Edges, size: tuple[int, int]) -> Box:
    """The inclusive pixel box of ``edges`` on an image of ``size`` (width, height): the pixels whose centres
    the edges enclose, after rounding the edges to whole pixels. Refuses a box of no area, swapped or negative
    corners, and a box reaching outside the image."""
    width, height = size
    values = (edges.left, edges.top, edges.right, edges.bottom)
    if not all(math.isfinite(value) for value in values):
        raise BenchError(f"{edges.where}: the box of {edges.image} has a coordinate that is not a number")
    if edges.right <= edges.left or edges.bottom <= edges.top:
        raise BenchError(f"{edges.where}: the box of {edges.image} has no area or swapped corners "
                         f"(edges x {edges.left:g}–{edges.right:g}, y {edges.top:g}–{edges.bottom:g})")  # fmt: skip
    x0, y0, x_end, y_end = (int(round(value)) for value in values)
    if min(x0, y0) < 0 or x_end > width or y_end > height:
        raise BenchError(
            f"{edges.where}: the box of {edges.image} (edges x {edges.left:g}–{edges.right:g}, y "
            f"{edges.top:g}–{edges.bottom:g}) reaches outside the image ({width}×{height} px)"
        )
    if x_end <= x0 or y_end <= y0:
        raise BenchError(f"{edges.where}: the box of {edges.image} is less than a pixel wide or high")
    return Box(x0, y0, x_end - 1, y_end - 1)


def image_file(name: str, images_folder: Path, where: str) -> Path:
    """The image a box file names, inside ``images_folder``: refused when it is absolute, climbs out with
    ``..``, leads out through a symbolic link, or does not exist. A name without an image ending is a stem."""
    from bench.data.image_io import IMAGE_2D_ENDINGS, file_ending

    text = str(name).strip()
    parts = PurePosixPath(text.replace("\\", "/")).parts
    if not text or PurePosixPath(text).is_absolute() or PureWindowsPath(text).is_absolute() or ".." in parts:
        raise BenchError(f"{where}: image name '{name}' points outside the dataset folder")
    candidate = images_folder.joinpath(*parts)
    if not file_ending(text):
        matches = [p for p in candidate.parent.glob(f"{candidate.name}.*") if file_ending(p) in IMAGE_2D_ENDINGS]
        candidate = matches[0] if len(matches) == 1 else candidate
    resolved = candidate.resolve()
    if not resolved.is_relative_to(images_folder.resolve()):
        raise BenchError(f"{where}: image '{name}' points outside the dataset folder (a link to '{resolved}')")
    if not candidate.is_file():
        raise BenchError(f"{where}: image '{name}' is not in '{images_folder}'")
    return candidate


@functools.lru_cache(maxsize=4096)
def _size(path: Path, stamp: tuple[int, int]) -> tuple[int, int]:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:  # reads the header only
            return image.size
    except (OSError, UnidentifiedImageError, ValueError) as error:
        raise BenchError(f"'{path}' is not a readable image ({type(error).__name__})") from None


def image_size(path: Path) -> tuple[int, int]:
    """(width, height) of an image file, from its header."""
    info = path.stat()
    return _size(path, (info.st_size, info.st_mtime_ns))


def mask_outside_box(mask, box: Box) -> float:
    """The share of ``mask``'s pixels outside ``box`` (0 when the mask is empty)."""
    total = int(mask.sum())
    if not total:
        return 0.0
    inside = int(mask[box.y0 : box.y1 + 1, box.x0 : box.x1 + 1].sum())
    return 1 - inside / total


def _digest(path: Path) -> str:
    digest = hashlib.sha256()
    for file in sorted(path.iterdir()) if path.is_dir() else [path]:
        if file.is_file() and not file.name.startswith("."):
            digest.update(f"{file.name}\x1f".encode() + file.read_bytes())
    return digest.hexdigest()[:12]


# --- one reader per format: (edges of every box, every image listed with where) ------------------------------


def _coco(path: Path, _images: Path) -> tuple[list[Edges], list[tuple[str, str]]]:
    try:
        payload = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise BenchError(f"box file '{path}' is not valid JSON ({error})") from None
    if not isinstance(payload, dict) or not all(isinstance(payload.get(k), list) for k in
                                                 ("images", "annotations", "categories")):  # fmt: skip
        raise BenchError(f"box file '{path}' is not COCO: it needs lists 'images', 'annotations' and 'categories'")
    try:
        files = {entry["id"]: str(entry["file_name"]) for entry in payload["images"]}
        categories = {entry["id"]: str(entry["name"]) for entry in payload["categories"]}
    except (TypeError, KeyError) as error:
        raise BenchError(f"box file '{path}': every image needs id and file_name, every category id and name "
                         f"({type(error).__name__}: {error})") from None  # fmt: skip
    edges = []
    for number, annotation in enumerate(payload["annotations"], start=1):
        where = f"{path.name}, annotation {number}"
        try:
            x, y, w, h = (float(value) for value in annotation["bbox"])
            image_id, category_id = annotation["image_id"], annotation["category_id"]
            hash((image_id, category_id))  # ids are looked up below: a list or an object is no id
        except (TypeError, KeyError, ValueError):
            raise BenchError(f"{where}: needs image_id, category_id and bbox [x, y, width, height]") from None
        if image_id not in files:
            raise BenchError(f"{where}: image_id {image_id} is not in the file's images")
        if category_id not in categories:
            raise BenchError(f"{where}: unknown category id {category_id}; the file's categories are "
                             f"{', '.join(f'{k} ({v})' for k, v in categories.items())}")  # fmt: skip
        edges.append(Edges(files[image_id], categories[category_id], x, y, x + w, y + h, where))
    listed = [(name, f"{path.name}, image {name}") for name in files.values()]
    return edges, listed


CSV_COLUMNS = {"image": ("image", "image_id", "file_name", "filename"), "label": ("label", "class_name", "class")}


def _csv(path: Path, _images: Path) -> tuple[list[Edges], list[tuple[str, str]]]:
    with path.open(newline="") as stream:
        try:
            rows = list(csv.DictReader(stream))
        except csv.Error as error:
            raise BenchError(f"box file '{path}' is not valid CSV ({error})") from None
    header = set(rows[0]) if rows else set()
    image_column = next((c for c in CSV_COLUMNS["image"] if c in header), None)
    label_column = next((c for c in CSV_COLUMNS["label"] if c in header), None)
    if image_column is None or not {"x_min", "y_min", "x_max", "y_max"} <= header:
        raise BenchError(f"box file '{path}' needs a header image,x_min,y_min,x_max,y_max[,label] and a row per box")
    edges = []
    for line, row in enumerate(rows, start=2):
        where = f"{path.name}, line {line}"
        try:
            x0, y0, x1, y1 = (float(row[key]) for key in ("x_min", "y_min", "x_max", "y_max"))
        except (TypeError, ValueError):
            raise BenchError(f"{where}: x_min, y_min, x_max and y_max must be numbers") from None
        image = row.get(image_column)
        if not isinstance(image, str):
            raise BenchError(f"{where}: no image name")
        category = (row.get(label_column) or "").strip() if label_column else "foreground"
        # inclusive corners: the right edge of the last column x_max is x_max + 1
        edges.append(Edges(image, category or "foreground", x0, y0, x1 + 1, y1 + 1, where))
    return edges, []


def _voc(path: Path, _images: Path) -> tuple[list[Edges], list[tuple[str, str]]]:
    from xml.etree.ElementTree import ParseError

    from defusedxml import DefusedXmlException
    from defusedxml.ElementTree import parse

    edges, listed = [], []
    for file in sorted(path.glob("*.xml")):
        where = f"{path.name}/{file.name}"
        try:
            root = parse(str(file)).getroot()
        except (ParseError, DefusedXmlException) as error:
            raise BenchError(f"{where} is not valid XML ({error})") from None
        image = (root.findtext("filename") or "").strip()
        if root.tag != "annotation" or not image:
            raise BenchError(f"{where} is not a Pascal VOC annotation (<annotation> with a <filename>)")
        listed.append((image, where))
        for number, item in enumerate(root.iter("object"), start=1):
            try:
                # 1-based inclusive corners: pixel xmin covers the edges xmin - 1 to xmin
                x0, y0, x1, y1 = (float(item.findtext(f"bndbox/{key}") or "") for key in
                                  ("xmin", "ymin", "xmax", "ymax"))  # fmt: skip
            except ValueError:
                raise BenchError(f"{where}, object {number}: bndbox needs numbers xmin, ymin, xmax, ymax") from None
            name = (item.findtext("name") or "").strip()
            edges.append(Edges(image, name, x0 - 1, y0 - 1, x1, y1, f"{where}, object {number}"))
    return edges, listed


def _yolo_names_file(folder: Path) -> Path | None:
    return next((folder / name for name in YOLO_CLASS_FILES if (folder / name).is_file()), None)


def _yolo_names(folder: Path) -> list[str]:
    names_file = _yolo_names_file(folder)
    if names_file is None:
        raise BenchError(f"YOLO boxes in '{folder}' need classes.txt (a class name a line) or data.yaml (names:)")
    if names_file.name == "classes.txt":
        return [line.strip() for line in names_file.read_text().splitlines() if line.strip()]
    import yaml

    try:
        names = (yaml.safe_load(names_file.read_text()) or {}).get("names")
    except (yaml.YAMLError, AttributeError) as error:
        raise BenchError(f"'{names_file}' is not a YAML mapping with names: ({type(error).__name__})") from None
    if isinstance(names, dict) and all(isinstance(k, int) for k in names):
        return [str(names[index]) for index in sorted(names)] if sorted(names) == list(range(len(names))) else []
    return [str(name) for name in names] if isinstance(names, list) else []


def _yolo(path: Path, images: Path) -> tuple[list[Edges], list[tuple[str, str]]]:
    names = _yolo_names(path)
    if not names:
        raise BenchError(f"the YOLO class names of '{path}' are empty or not a list")
    edges, listed = [], []
    for file in sorted(p for p in path.glob("*.txt") if p.name != "classes.txt"):
        image = file.stem
        listed.append((image, f"{path.name}/{file.name}"))
        size: tuple[int, int] | None = None
        for line, text in enumerate(file.read_text().splitlines(), start=1):
            if not text.strip():
                continue
            where = f"{path.name}/{file.name}, line {line}"
            fields = text.split()
            try:
                if len(fields) != 5 or not fields[0].isdigit():
                    raise ValueError
                values = [float(value) for value in fields[1:]]
            except ValueError:
                raise BenchError(f"{where}: expected 'class cx cy w h' (a class number, then 4 numbers)") from None
            if int(fields[0]) >= len(names):
                raise BenchError(f"{where}: unknown class {fields[0]}; the class names are {', '.join(names)}")
            if not all(0 <= value <= 1 for value in values):
                raise BenchError(f"{where}: YOLO values must lie in [0, 1] (normalised by the image's size)")
            if size is None:
                size = image_size(image_file(image, images, where))
            cx, cy, w, h = values
            width, height = size
            edges.append(Edges(image, names[int(fields[0])], (cx - w / 2) * width, (cy - h / 2) * height,
                               (cx + w / 2) * width, (cy + h / 2) * height, where))  # fmt: skip
    return edges, listed
