"""Samples, tasks, split and support-set files, boxes and the preprocessing helpers datasets share."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bench.errors import BenchError
from bench.paths import atomic_write, cache_dir

LABEL_REGIMES = ("mask", "box", "box-noisy")


@dataclass(frozen=True)
class Box:
    """A tight box in pixel coordinates, inclusive on both ends: rows y0..y1, columns x0..x1."""

    x0: int
    y0: int
    x1: int
    y1: int

    @property
    def width(self) -> int:
        return self.x1 - self.x0 + 1

    @property
    def height(self) -> int:
        return self.y1 - self.y0 + 1

    @property
    def area(self) -> int:
        return self.width * self.height

    def as_xyxy(self) -> tuple[int, int, int, int]:
        return (self.x0, self.y0, self.x1, self.y1)


@dataclass(eq=False)
class Sample:
    """One 2-D image with the mask of one structure. ``spacing`` is (row_mm, col_mm), or None if unknown."""

    id: str
    image: np.ndarray  # uint8, H×W
    mask: np.ndarray  # bool, H×W
    spacing: tuple[float, float] | None = None
    subject: str | None = None  # images of one subject never straddle two splits
    given_box: Box | None = None  # a box a person drew (a dataset's box file): the box label where there is one
    mask_known: bool = True  # False: the image has its box only, and ``mask`` (empty) says nothing

    @property
    def box(self) -> Box:
        return self.given_box if self.given_box is not None else tight_box(self.mask)

    @property
    def labelled(self) -> bool:
        """Whether the sample shows the structure: a box to learn from, drawn or the tight box of its mask."""
        return self.given_box is not None or bool(self.mask.any())


# What a run record copies from ``Task.info`` into its ``dataset_info``: the preprocessing, and how much of the
# structure it kept inside the frame (``bench.data.release.kept_summary``), so that a table can footnote it
RECORDED_TASK_INFO = ("preprocessing", "structure_kept")


@dataclass
class Task:
    """One structure of one dataset, split into train/val/test Samples."""

    dataset: str
    name: str
    train: list[Sample]
    val: list[Sample]
    test: list[Sample]
    info: dict = field(default_factory=dict)
    # a preprocessing variant (``hc18-whole``) names the dataset whose split and support draws it shares, so
    # both variants train and score the same images
    split_of: str | None = None
    # a user dataset's content identity (``Dataset.identity``): keys its support draws; None for a fixed release
    identity: str | None = None

    def by_id(self, split: str) -> dict[str, Sample]:
        return {sample.id: sample for sample in getattr(self, split)}


@dataclass(eq=False)
class TrainItem:
    """What a method may learn from: the image and exactly one kind of label (the run's label regime)."""

    id: str
    image: np.ndarray
    spacing: tuple[float, float] | None
    mask: np.ndarray | None = None
    box: Box | None = None


@dataclass(eq=False)
class TestItem:
    """A test image; ``box`` is the prompt, given only to methods that are prompted at test time."""

    __test__ = False  # not a pytest test class, despite the name

    id: str
    image: np.ndarray
    spacing: tuple[float, float] | None
    box: Box | None = None


def tight_box(mask: np.ndarray) -> Box:
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        raise ValueError("an empty mask has no box")
    return Box(int(cols[0]), int(rows[0]), int(cols[-1]), int(rows[-1]))


def stable_seed(*parts: object) -> int:
    """A seed derived from names, identical across processes and Python versions (unlike ``hash``)."""
    digest = hashlib.sha256("\x1f".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "little")


def jitter_box(box: Box, shape: tuple[int, int], *key: object, max_fraction: float = 0.1) -> Box:
    """The box with each side moved by a random offset of up to ``max_fraction`` of its side length.

    The offsets are seeded by ``key`` (dataset, task, sample id) alone, so every method and every run sees
    the same noisy box for a sample. The result is clipped to the image and never collapses.
    """
    rng = np.random.default_rng(stable_seed("box-noise", *key))
    dx = rng.uniform(-max_fraction, max_fraction, size=2) * box.width
    dy = rng.uniform(-max_fraction, max_fraction, size=2) * box.height
    height, width = shape
    x0 = int(np.clip(round(box.x0 + dx[0]), 0, width - 1))
    x1 = int(np.clip(round(box.x1 + dx[1]), x0, width - 1))
    y0 = int(np.clip(round(box.y0 + dy[0]), 0, height - 1))
    y1 = int(np.clip(round(box.y1 + dy[1]), y0, height - 1))
    return Box(x0, y0, x1, y1)


def box_for_regime(sample: Sample, dataset: str, task: str, labels: str) -> Box:
    box = sample.box
    if labels == "box-noisy":
        return jitter_box(box, sample.mask.shape, dataset, task, sample.id)
    return box


def train_items(samples: Sequence[Sample], dataset: str, task: str, labels: str) -> list[TrainItem]:
    """Training data under a label regime: a box regime never hands the mask to the method."""
    if labels not in LABEL_REGIMES:
        raise BenchError(f"unknown label regime '{labels}'; choose from {', '.join(LABEL_REGIMES)}")
    items = []
    for sample in samples:
        if labels == "mask":
            if not sample.mask_known:  # planned runs skip this (``UserDataset.skip_labels``); a direct call may not
                raise BenchError(f"training image '{sample.id}' of {dataset}/{task} has a box but no mask for "
                                 "--labels mask")  # fmt: skip
            items.append(TrainItem(sample.id, sample.image, sample.spacing, mask=sample.mask))
        else:
            if not sample.labelled:  # k-shot draws never pick one (``support_ids``); all-data runs may
                raise BenchError(
                    f"training image '{sample.id}' of {dataset}/{task} has no {task} pixels, so it has no box for "
                    f"--labels {labels}; leave it out of the dataset or train with masks"
                )
            box = box_for_regime(sample, dataset, task, labels)
            items.append(TrainItem(sample.id, sample.image, sample.spacing, box=box))
    return items


def eval_items(
    samples: Sequence[Sample], dataset: str, task: str, labels: str, with_prompt: bool
) -> list[TestItem]:
    return [
        TestItem(
            sample.id,
            sample.image,
            sample.spacing,
            box=box_for_regime(sample, dataset, task, labels) if with_prompt else None,
        )
        for sample in samples
    ]


# --- files written once -------------------------------------------------------------------------------


def write_json_atomic(path: Path, payload: object) -> None:
    """Write JSON to a temporary file beside ``path`` and rename it, so no reader sees half a file."""
    with atomic_write(path, "w", fsync=True) as stream:
        json.dump(payload, stream, indent=1, sort_keys=True)


def persisted(path: Path, make: Callable[[], object]) -> object:
    """The JSON at ``path``; made with ``make`` and written once if it does not exist yet (nnU-Net style)."""
    if path.exists():
        try:
            return json.loads(path.read_text())
        except json.JSONDecodeError as error:
            raise BenchError(f"'{path}' is not valid JSON; delete it to have it written again") from error
    payload = make()
    write_json_atomic(path, payload)
    return payload


def seeded_split(
    ids: Sequence[str],
    sizes: dict[str, float | int],
    seed: int,
    groups: dict[str, str] | None = None,
) -> dict[str, list[str]]:
    """Split ids into named parts by fraction (floats summing to 1) or count (ints), grouping by subject.

    With ``groups``, whole subjects are assigned, so a subject never appears in two parts. The last part
    takes whatever is left over.
    """
    group_of = groups or {item: item for item in ids}
    subjects = sorted({group_of[item] for item in ids})
    order = np.random.default_rng(seed).permutation(len(subjects))
    shuffled = [subjects[index] for index in order]
    names = list(sizes)
    counts = []
    for name in names[:-1]:
        size = sizes[name]
        counts.append(int(round(size * len(subjects))) if isinstance(size, float) else int(size))
    if sum(counts) > len(subjects):
        raise BenchError(f"cannot split {len(subjects)} subjects into {sizes}")
    parts: dict[str, list[str]] = {}
    start = 0
    for name, count in zip(names, counts + [len(subjects) - sum(counts)], strict=True):
        chosen = set(shuffled[start : start + count])
        parts[name] = sorted(item for item in ids if group_of[item] in chosen)
        start += count
    return parts


def support_ids(task: Task, shots: int | None, draw: int) -> list[str]:
    """The training ids of support draw ``draw`` with ``shots`` images (None = all), written once.

    The file lives under the cache (``supports/<dataset>/<task>/k<shots>_d<draw>.json``; a user dataset's under
    ``supports/<dataset>/<identity>/…``, so other cases draw anew) and every method and seed reuses it. The draw
    is seeded from its names, so a deleted file is re-drawn identically. A preprocessing variant uses the draws
    of the dataset it shares its split with (``Task.split_of``). Images without the structure are never drawn:
    they have no box to learn from.
    """
    train_ids = sorted(sample.id for sample in task.train)
    if shots is None:
        return train_ids
    drawable = sorted(sample.id for sample in task.train if sample.labelled)
    if shots > len(drawable):
        without = len(train_ids) - len(drawable)
        raise BenchError(
            f"{task.dataset}/{task.name} has {len(drawable)} training images"
            + (f" with the structure ({without} more without it)" if without else "")
            + f"; cannot draw {shots} shots"
        )
    dataset = task.split_of or task.dataset
    folder = cache_dir() / "supports" / safe_name(dataset)
    path = (folder / task.identity if task.identity else folder) / task.name / f"k{shots}_d{draw}.json"

    def draw_support() -> dict:
        rng = np.random.default_rng(stable_seed("support", dataset, task.name, shots, draw))
        chosen = sorted(drawable[index] for index in rng.choice(len(drawable), size=shots, replace=False))
        return {"dataset": dataset, "task": task.name, "shots": shots, "draw": draw, "ids": chosen}

    payload = persisted(path, draw_support)
    ids = list(payload["ids"])  # type: ignore[index]
    unknown = sorted(set(ids) - set(drawable))
    if unknown:
        raise BenchError(
            f"support file '{path}' names ids that are not in the training split ({', '.join(unknown[:3])}…);"
            " the split changed: delete the file to draw again"
        )
    return ids


def safe_name(name: str) -> str:
    """A dataset name as one folder or file name: ``nnunet:Dataset501_X`` → ``nnunet-Dataset501_X``."""
    return name.replace(":", "-").replace("/", "-").replace("@", "-")


# --- preprocessing helpers ----------------------------------------------------------------------------


def percentile_to_uint8(values: np.ndarray, low: float = 0.5, high: float = 99.5) -> np.ndarray:
    """Clip to the [low, high] percentiles and rescale to 0–255 uint8 (the paper's intensity normalisation)."""
    values = values.astype(np.float32)
    lower, upper = np.percentile(values, [low, high])
    if upper <= lower:
        return np.zeros(values.shape, dtype=np.uint8)
    scaled = (np.clip(values, lower, upper) - lower) / (upper - lower)
    return np.round(scaled * 255).astype(np.uint8)


def fitting_spacing(shape: tuple[int, int], spacing: tuple[float, float], size: tuple[int, int]) -> float:
    """The finest isotropic spacing (mm) at which the whole image, ``shape`` pixels of ``spacing``, fits in
    ``size`` (rows, cols)."""
    return max(shape[0] * spacing[0] / size[0], shape[1] * spacing[1] / size[1])


def resampled_geometry(
    shape: tuple[int, int], spacing: tuple[float, float], target: float, size: tuple[int, int]
) -> tuple[tuple[int, int], tuple[float, float]]:
    """The shape of an image resampled to ``target`` mm per pixel, never larger than ``size``, and the
    (row_mm, col_mm) spacing it really has: whole pixels make it differ from ``target`` by under a pixel's
    worth over the image, and that is what a distance in mm must use."""
    rows = min(size[0], max(1, round(shape[0] * spacing[0] / target)))
    cols = min(size[1], max(1, round(shape[1] * spacing[1] / target)))
    return (rows, cols), (shape[0] * spacing[0] / rows, shape[1] * spacing[1] / cols)


def resize_image(image: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """An image resized to ``shape`` (rows, cols) by area averaging, which does not alias when shrinking."""
    import cv2  # here, so that importing bench.data.samples stays cheap for the commands that only list things

    return cv2.resize(image, (shape[1], shape[0]), interpolation=cv2.INTER_AREA)


def resize_labels(labels: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """A label map resized to ``shape`` (rows, cols): each output pixel takes the label that covers most of it.

    Nearest-neighbour would drop or double whole rows when shrinking by a non-integer factor; the area vote
    keeps each structure's area and outline to within a pixel. Ties go to the lower label (background).
    """
    import cv2

    values = np.unique(labels)
    one_hot = (labels[..., None] == values).astype(np.float32)
    shares = cv2.resize(one_hot, (shape[1], shape[0]), interpolation=cv2.INTER_AREA)
    if shares.ndim == 2:  # OpenCV drops a channel axis of length one
        shares = shares[..., None]
    return values[shares.argmax(axis=-1)].astype(labels.dtype)


def kept_fractions(before: np.ndarray, after: np.ndarray, values: Sequence[int]) -> tuple[float, ...]:
    """Per label value, the share of its pixels in ``before`` that are still in ``after``: what a crop left of
    each structure (both maps on the same pixel grid). NaN for a value ``before`` does not hold."""
    length = max(values) + 1
    had = np.bincount(before.ravel(), minlength=length)
    has = np.bincount(after.ravel(), minlength=length)
    return tuple(float(has[value] / had[value]) if had[value] else float("nan") for value in values)


def center_crop_or_pad(array: np.ndarray, size: tuple[int, int], fill: int | float | bool = 0) -> np.ndarray:
    """Centre-crop or zero-pad the last two axes to ``size`` (rows, cols)."""
    out_shape = array.shape[:-2] + tuple(size)
    out = np.full(out_shape, fill, dtype=array.dtype)
    src_slices, dst_slices = [], []
    for have, want in zip(array.shape[-2:], size, strict=True):
        if have >= want:
            start = (have - want) // 2
            src_slices.append(slice(start, start + want))
            dst_slices.append(slice(0, want))
        else:
            start = (want - have) // 2
            src_slices.append(slice(0, have))
            dst_slices.append(slice(start, start + have))
    out[(..., *dst_slices)] = array[(..., *src_slices)]
    return out
