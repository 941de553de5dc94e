"""What a user's own dataset shares, whatever its layout (``nnunet:``, ``folder:``): where it is, its identity,
reading a case into slices with no fixed frame, per-task pixel thresholds and the split.

A layout plugin (``datasets/nnunet.py``, ``datasets/image_folder.py``) is a family (``bench.data.family``): it
declares the layouts it recognises (``form``, ``recognises``), and ``for_argument`` turns the name's argument into a
class for that one dataset, with its own name (``<family>:<folder name>``), tasks and folder. It implements
``find_cases`` with ``Case.files == (image, label)`` and ``describe`` (tasks and names).

Preprocessing (``preprocess``, for the dataset's own files and new ones alike) keeps every image on its own grid
(no crop, no resampling, so nothing is ever cut and metrics are computed on the image's own pixels): intensities
are clipped to the 0.5–99.5 percentiles of the image (a 2-D file) or of the volume (a 3-D file) and rescaled to
uint8; a volume is cut across its coarsest-spaced axis.
An image or slice belongs to a task when the task's structure covers at least ``min_pixels`` pixels of it.
"""

from __future__ import annotations

import functools
import hashlib
import json
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from bench.data.family import Family, family_of
from bench.data.image_io import label_map, read_any, select_channel, slices, slicing_axis
from bench.data.inventory import Slice
from bench.data.planes import identity_plane
from bench.data.release import SPLITS, Case, ReleaseDataset, UnreadableFile
from bench.data.samples import Box, Task, percentile_to_uint8, seeded_split
from bench.errors import BenchError

if TYPE_CHECKING:
    from bench.data.framing import SourceImage
    from bench.data.planes import FramedPlane

MIN_PIXELS = 10
NO_STRUCTURE = f"no structure of ≥{MIN_PIXELS} px"
USER_SPLIT_FILE = "splits.json"


class UserDataset(Family, ReleaseDataset):
    """Base of the layout families. A class made by ``for_argument`` sets ``location`` and the tasks."""

    fixed_release = False
    min_pixels = MIN_PIXELS
    preprocessing = "own grid: no crop or resampling; 0.5–99.5 percentile intensity window per image or volume"
    # labelled cases without a test part of their own are split by case in these proportions
    split_fractions = {"train": 0.7, "val": 0.1, "test": 0.2}
    # the share of validation cases drawn from the training cases when the dataset has its own test cases
    val_fraction = 0.1

    @property
    def folder(self) -> Path:
        return self.location

    @property
    def release_name(self) -> str:
        return self.name

    # --- reading -------------------------------------------------------------------------------------------

    def missing(self, what: str) -> BenchError:
        return BenchError(f"{self.name}: {what} in '{self.folder}'. Expected layout: {self.layout}.")

    def identity_options(self) -> object:
        split_file = self.folder / USER_SPLIT_FILE
        given = hashlib.sha256(split_file.read_bytes()).hexdigest()[:12] if split_file.is_file() else None
        drawn = self.description.get("drawn")  # the box file, where there is one (absent: identities as before)
        options = (self.channel, self.min_pixels, sorted(self.task_labels.items()), given)
        return options + ((drawn.digest,) if drawn else ())

    @classmethod
    def skip_labels(cls, labels: str) -> str | None:
        """Why runs under ``labels`` cannot train on this dataset, or None: mask labels need a mask on every
        training image, and images labelled by the box file alone have none."""
        box_only = cls.description.get("box_only", 0)
        if labels == "mask" and box_only:
            return f"mask labels need a mask on every training image; {box_only} images of {cls.name} have boxes only"
        return None

    def drawn_boxes(self, task: str) -> dict[str, Box]:
        """The box file's boxes of ``task`` by sample id (empty without a box file)."""
        drawn = self.description.get("drawn")
        if not drawn:
            return {}
        by_file = {case.files[0]: case.id for case in self._cases}
        return {by_file[path]: per_task[task] for path, per_task in drawn.boxes.items()
                if task in per_task and path in by_file}  # fmt: skip

    def box_only_ids(self) -> set[str]:
        """The images whose only labels are boxes of the box file (training images, never scored)."""
        return {case.id for case in self._cases if len(case.files) == 1}

    @functools.cached_property
    def _cases(self) -> list[Case]:
        """``find_cases`` once per instance: splitting, loading and checking ask for the box-only images several
        times, and each ``find_cases`` lists the dataset's folders."""
        return self.find_cases()[0]

    def kept(self, before: np.ndarray, after: np.ndarray) -> tuple[float, ...]:
        """Nothing is cut: every structure present is kept whole (NaN where it is absent)."""
        return tuple(1.0 if self.structure(before, task).any() else float("nan") for task in self.tasks)

    def allowed_values(self) -> set[int]:
        values = {0}
        for value in self.task_labels.values():
            values.update(value if isinstance(value, (tuple, list)) else (value,))
        return values | set(getattr(self, "description", {}).get("other_values", ()))

    def read_case(self, case: Case) -> tuple[list[Slice], list[tuple[str, str]]]:
        image_path, *label_paths = case.files  # no label file: the image's labels are its boxes (box file)
        image_file = read_any(image_path)
        (in_file,) = case.extra or (0,)  # which channel of the image file the dataset's channel is
        image = select_channel(image_file, in_file, image_path)
        if not label_paths:
            if image.ndim != 2 and 1 not in image.shape:
                raise BenchError(f"{self.name}: {image_path.name} is a volume; box files label 2-D images")
            label_paths, labels = [image_path], np.zeros(image.shape, np.uint8)
            boxes_only = True
        else:
            labels, boxes_only = self._label_map(label_paths[0]), False
        label_path = label_paths[0]
        if image.shape != labels.shape:
            raise BenchError(
                f"{self.name}: {label_path.name} has shape {labels.shape}, its image {image_path.name} "
                f"{image.shape}; an image and its labels must share one grid"
            )
        unexpected = sorted(set(np.unique(labels).tolist()) - self.allowed_values())
        if unexpected:
            raise BenchError(
                f"{self.name}: {label_path.name} holds label value{'s' * (len(unexpected) > 1)} "
                f"{', '.join(map(str, unexpected[:5]))}, which the dataset's labels do not name "
                f"({', '.join(f'{task} = {value}' for task, value in self.task_labels.items())})"
            )
        usable, left_out = [], []
        single = image.ndim == 2 or 1 in image.shape
        for index, pixels, slice_labels, spacing, thickness in self.preprocess(image, labels, image_file.spacing):
            slice_id = case.id if single else f"{case.id}_s{index:03d}"
            counts = [int(np.count_nonzero(self.structure(slice_labels, task))) for task in self.tasks]
            if max(counts, default=0) < self.min_pixels and not boxes_only:
                left_out.append((slice_id, NO_STRUCTURE))
                continue
            kept = self.kept(slice_labels, slice_labels)
            usable.append(
                Slice(slice_id, case.subject, np.ascontiguousarray(pixels), np.ascontiguousarray(slice_labels),
                      spacing, pixels.shape, spacing, kept, None if single else (index, thickness))
            )  # fmt: skip
        return usable, left_out

    def _label_map(self, label_path: Path) -> np.ndarray:
        try:
            return label_map(read_any(label_path, label=True), label_path)
        except UnreadableFile as error:  # a label file that reads but holds what no label map may: not skipped
            if "not a readable" in error.detail:
                raise
            raise BenchError(f"{self.name}: {label_path.name}: {error.detail}") from error

    def preprocess(
        self, image: np.ndarray, labels: np.ndarray, spacing: tuple[float, ...] | None
    ) -> Iterator[tuple[int, np.ndarray, np.ndarray, tuple[float, float] | None, float | None]]:
        """The dataset's preprocessing of one file, the one place ``read_case`` and ``frame_for_prediction`` take it
        from: the percentile window over the image, or over the whole volume for a 3-D file (as the paper does for
        ACDC), then ``bench.data.image_io.slices`` across its coarsest axis, every slice on its own grid."""
        return slices(percentile_to_uint8(image), labels, spacing)

    def frame_for_prediction(self, source: SourceImage) -> list[FramedPlane]:
        """A new image as ``read_case`` reads the dataset's (the hook of ``bench.data.framing``), every slice
        kept. A volume whose coarsest-spaced axis is not its first (the axis ``bench predict`` stacks masks
        along) is refused."""
        # spacing per array axis, as ``bench.data.image_io`` reads a dataset's files
        spacing = tuple(reversed(source.itk.GetSpacing())) if source.itk is not None else None
        if source.is_volume and slicing_axis(source.array.shape, spacing) != 0:
            raise BenchError(
                f"{self.name} cuts '{source.path.name}' across its axis {slicing_axis(source.array.shape, spacing)}"
                " (its coarsest); bench predict stacks slices along the first axis only"
            )
        planes = self.preprocess(source.array, np.zeros(source.array.shape, np.uint8), spacing)
        return [identity_plane(pixels, in_plane) for _, pixels, _, in_plane, _ in planes]

    def load(self, task: str) -> Task:
        loaded = super().load(task)
        if self.description.get("drawn"):
            with_drawn_boxes(self, loaded)
        if not (loaded.train or loaded.val or loaded.test):
            raise BenchError(
                f"{self.name}: no image shows {task} (≥{self.min_pixels} px); leave it out of --tasks or the labels"
            )
        return loaded

    # --- splits --------------------------------------------------------------------------------------------

    def split_seed(self) -> int:
        from bench.data.samples import stable_seed

        return stable_seed("split", self.folder.name) % 2**32

    def test_cases(self) -> set[str] | None:
        """The cases the dataset itself sets apart for testing (nnU-Net's labelled imagesTs), or None."""
        return None

    def split_parts(self, ids: list[str], subjects: dict[str, str]) -> dict[str, list[str]]:
        """By case, never by slice: a seeded train/val split of the dataset's training cases when it has test
        cases of its own, else a seeded 70/10/20 split."""
        # images with boxes only cannot be scored: they train; the images with masks split as they would alone
        box_only = self.box_only_ids()
        ids = [i for i in ids if i not in box_only]
        test_cases = self.test_cases()
        if test_cases is None:
            parts = seeded_split(ids, self.split_fractions, self.split_seed(), groups=subjects)
        else:
            rest = [i for i in ids if subjects[i] not in test_cases]
            parts = seeded_split(rest, {"val": self.val_fraction, "train": 1 - self.val_fraction},
                                 self.split_seed(), groups=subjects)  # fmt: skip
            parts["test"] = sorted(i for i in ids if subjects[i] in test_cases)
        return {"train": sorted(parts["train"] + sorted(box_only)), "val": parts["val"], "test": parts["test"]}

    def given_split(self) -> dict[str, list[str]] | None:
        """The user's own ``splits.json`` beside the data: ``{"train": [cases], "val": [...], "test": [...]}``."""
        path = self.folder / USER_SPLIT_FILE
        if not path.is_file():
            return None
        try:
            payload = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise BenchError(f"{self.name}: {path} is not valid JSON ({error})") from error
        if not isinstance(payload, dict) or any(not isinstance(payload.get(part), list) for part in SPLITS):
            raise BenchError(f"{self.name}: {path} must hold lists of case ids under train, val and test")
        part_of: dict[str, str] = {}
        for part in SPLITS:
            for case in payload[part]:
                if str(case) in part_of:
                    raise BenchError(f"{self.name}: {path} puts case '{case}' in {part_of[str(case)]} and {part}")
                part_of[str(case)] = part
        inventory = self.inventory()
        unknown = sorted(set(part_of) - set(inventory.subjects) - {case.subject for case in self.find_cases()[0]})
        if unknown:
            raise BenchError(f"{self.name}: {path} names cases the dataset does not have: {', '.join(unknown[:3])}")
        box_only = self.box_only_ids()
        scored_box_only = sorted(case for case, part in part_of.items() if part != "train" and case in box_only)
        if scored_box_only:
            raise BenchError(f"{self.name}: {path} puts '{scored_box_only[0]}', which has a box but no mask, in "
                             f"{part_of[scored_box_only[0]]}; images with boxes only train, only masks are scored")
        parts: dict[str, list[str]] = {part: [] for part in SPLITS}
        for sample_id, subject in zip(inventory.ids, inventory.subjects, strict=True):
            if subject in part_of:
                parts[part_of[subject]].append(sample_id)
        return {part: sorted(ids) for part, ids in parts.items()}


def with_drawn_boxes(dataset: UserDataset, task: Task) -> None:
    """Put the box file's boxes of ``task.name`` into ``task``: on the images with masks (checked to hold their
    mask, else a warning names the image), and as training samples of their own for the images with boxes only."""
    from bench.data.box_files import MASK_IN_BOX, mask_outside_box
    from bench.data.samples import Sample

    drawn = dataset.description["drawn"]
    boxes = dataset.drawn_boxes(task.name)
    for sample in (*task.train, *task.val, *task.test):
        if sample.id in boxes:
            sample.given_box = boxes[sample.id]
            outside = mask_outside_box(sample.mask, sample.given_box)
            if outside > 1 - MASK_IN_BOX:
                warnings.warn(f"{dataset.name}: the {task.name} box of {sample.id} in {drawn.source.name} leaves "
                              f"{outside:.0%} of its mask outside (a box should hold ≥{MASK_IN_BOX:.0%})", stacklevel=3)
    inventory = dataset.inventory()
    index = {sample_id: i for i, sample_id in enumerate(inventory.ids)}
    trained = set(dataset.split()["train"])
    added = [
        Sample(sample_id, inventory.images[index[sample_id]], np.zeros(inventory.images[index[sample_id]].shape, bool),
               inventory.spacing(index[sample_id]), subject=inventory.subjects[index[sample_id]],
               given_box=boxes[sample_id], mask_known=False)
        for sample_id in sorted(dataset.box_only_ids() & set(boxes) & set(index) & trained)
    ]  # fmt: skip
    task.train = sorted([*task.train, *added], key=lambda sample: sample.id)
    if task.info.get("left_out_of_task"):
        task.info["left_out_of_task"] -= len(added)
    task.info["box_file"] = {"file": drawn.source.name, "format": drawn.format, "boxes_only": len(added)}


def discover(data_root: Path | None) -> list[tuple[str, type[UserDataset] | BenchError]]:
    """The user datasets under a data root (and its ``nnunet/`` folder): each name with its class, or with the
    error that makes it unusable, for `bench ls`."""
    from bench.data.dataset import dataset_class
    from bench.paths import default_data_root

    root = Path(data_root) if data_root is not None else default_data_root()
    found: list[tuple[str, type[UserDataset] | BenchError]] = []
    for base in (root, root / "nnunet"):
        if not base.is_dir():
            continue
        for folder in sorted(path for path in base.iterdir() if path.is_dir() and not path.name.startswith(".")):
            family = family_of(folder)
            if family is None:
                continue
            name = f"{family.family}:{folder.name}"
            try:
                found.append((name, dataset_class(name, root)))  # type: ignore[arg-type]
            except BenchError as error:
                found.append((name, error))
    return found
