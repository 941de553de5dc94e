"""What the plugins of downloaded releases (HC18, CAMUS, ACDC, nnU-Net folders) share: scan, preprocess once, split.

A plugin lists the cases of its release (``find_cases``) and turns one case into preprocessed 2-D slices
(``read_case``): a uint8 image and a uint8 label map, where a task is one label value (or several, for a
region). The base class does the rest the same way for every release:

* a case that cannot be read is skipped with its file name in a warning and counted; a case or slice that
  fails a published filter (an open outline, a missing structure) is counted without a warning;
* the preprocessed arrays are cached (``bench.data.inventory``), so a release is read once;
* the split file is written once and read back ever after;
* how much of each structure the preprocessing kept inside the fixed frame is measured per slice
  (``Slice.kept``), cached with the arrays, summarised by ``bench data check`` and put in ``Task.info``.

A preprocessing variant (``hc18-whole``) is a subclass with its own name that sets ``variant_of``: it reads
the same release folder and shares its split file, so both preprocessings score the same images.

The built-in releases are fixed: their split and cache files live in the release's own subfolder
``<data_root>/<release>/.bench``, or, when that folder is not writable (a read-only shared copy), in
``cache_dir()/datasets/<release>/<hash of the release path>``. A user's own dataset (``fixed_release`` false)
can change: its identity is a fingerprint of its cases (``identity``), which names its split file, keys its
support draws and enters its run ids, and nothing is ever written into its folder.
"""

from __future__ import annotations

import functools
import hashlib
import warnings
import zlib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench.data.dataset import Dataset
from bench.data.inventory import (
    CACHE_FORMAT,
    Inventory,
    Slice,
    folder_is_writable,
    kept_summary,
    read_cache,
    write_cache,
)
from bench.data.planes import FramedPlane, PlaneGeometry
from bench.data.samples import (
    Sample,
    Task,
    center_crop_or_pad,
    kept_fractions,
    persisted,
    safe_name,
    seeded_split,
    stable_seed,
)
from bench.data.volumes import VOLUME_OF
from bench.errors import BenchError
from bench.paths import cache_dir

SPLITS = ("train", "val", "test")
SPLIT_FILE = "split.json"
READ_FAILURE = "unreadable"
UNEXPECTED_LABELS = "unexpected label values"
# Broken files are warned about at every load; cases a published filter leaves out are only counted.
WARNED_REASONS = (READ_FAILURE, UNEXPECTED_LABELS)


class UnreadableFile(Exception):
    """A file that exists but cannot be decoded, or holds what the release format does not allow."""

    def __init__(self, path: Path, detail: str, reason: str = READ_FAILURE) -> None:
        super().__init__(f"{path.name}: {detail}")
        self.path = path
        self.detail = detail
        self.reason = reason


@dataclass(frozen=True)
class Case:
    """One unit of the release that is read at once (an image file pair, or a patient's volume)."""

    id: str
    subject: str
    files: tuple[Path, ...]
    extra: tuple = ()  # values found while scanning that the fingerprint must cover (HC18: pixel size)


class ReleaseDataset(Dataset):
    """Base of the plugins that read a downloaded release. Subclasses implement ``find_cases``,
    ``read_case`` (and ``split_parts`` where the release has its own split) and set the class attributes below."""

    preprocessing_version: int = 1  # bump whenever read_case changes its output: old caches are then unused
    preprocessing: str = ""  # one line: the geometry of read_case (resampling, frame), for summaries and records
    frame_size: tuple[int, int] = (0, 0)  # (rows, cols) every preprocessed image is centre-cropped/padded to
    variant_of: type[ReleaseDataset] | None = None  # the plugin whose release and split a variant shares
    task_labels: dict[str, int] = {}
    layout: str = ""  # one line: the files expected under <data_root>/<name>
    homepage: str = ""
    case_kind: str = "images"  # what find_cases counts, for the summary
    min_pixels: int = 0  # an image belongs to a task when the task's structure covers this many pixels
    # what a broken file raises inside the readers (nibabel and SimpleITK add their own)
    read_errors: tuple[type[BaseException], ...] = (OSError, ValueError, RuntimeError, EOFError, zlib.error)

    def __init__(self, data_root: Path | None = None) -> None:
        super().__init__(data_root)
        self._inventory: Inventory | None = None

    # --- what a plugin implements -----------------------------------------------------------------------

    def find_cases(self) -> tuple[list[Case], list[str]]:  # pragma: no cover - abstract
        """The cases of the release and notes for the summary; a BenchError when the layout is wrong."""
        raise NotImplementedError

    def read_case(self, case: Case) -> tuple[list[Slice], list[tuple[str, str]]]:  # pragma: no cover
        """The preprocessed slices of a case that pass the release's filters, and (name, reason) for the rest.

        A broken file raises UnreadableFile or one of ``read_errors``.
        """
        raise NotImplementedError

    split_fractions: dict[str, float] = {"train": 0.7, "val": 0.1, "test": 0.2}

    def split_parts(self, ids: list[str], subjects: dict[str, str]) -> dict[str, list[str]]:
        """A seeded split by subject with ``split_fractions``; a release with an official split overrides it."""
        return seeded_split(ids, self.split_fractions, self.split_seed(), groups=subjects)

    # --- shared machinery -------------------------------------------------------------------------------

    @property
    def release_name(self) -> str:
        """The release's folder name under the data root: a variant reads the release of ``variant_of``."""
        return self.variant_of.name if self.variant_of is not None else self.name

    @property
    def folder(self) -> Path:
        return self.data_root / self.release_name

    def resample(
        self, pixels: np.ndarray, labels: np.ndarray, spacing: tuple[float, float]
    ) -> tuple[np.ndarray, np.ndarray, tuple[float, float]]:
        """The image and label map on the grid the fixed frame is cut from, and its spacing: the paper's
        recipes keep the release's own pixels; a ``-whole`` variant resamples here."""
        return pixels, labels, spacing

    def to_frame(
        self, pixels: np.ndarray, labels: np.ndarray, spacing: tuple[float, float]
    ) -> tuple[FramedPlane, np.ndarray, tuple[float, ...]]:
        """``resample``, then centre-crop/pad image and labels to ``frame_size``: the plane a method sees (framed
        image, spacing, and the geometry that puts a mask back on the grid of ``pixels``), the labels in the
        frame, and what each structure kept (``Slice.kept``)."""
        on_grid, labels, resampled = self.resample(pixels, labels, spacing)
        labels_in_frame = center_crop_or_pad(labels, self.frame_size)
        geometry = PlaneGeometry(pixels.shape[:2], on_grid.shape[:2], tuple(self.frame_size))
        plane = FramedPlane(center_crop_or_pad(on_grid, self.frame_size), resampled, geometry)
        return plane, labels_in_frame, self.kept(labels, labels_in_frame)

    def kept(self, before: np.ndarray, after: np.ndarray) -> tuple[float, ...]:
        """``Slice.kept``: per task, the share of the structure's pixels in ``before`` (the label map on the
        grid the frame is cut from) still in ``after`` (the label map in the frame)."""
        return kept_fractions(before, after, [self.task_labels[task] for task in self.tasks])

    def missing(self, what: str) -> BenchError:
        """The error for a release that is not where it should be: which, where, and the layout expected."""
        return BenchError(
            f"{self.display_name} ({self.name}): {what} under '{self.folder}'. "
            f"Expected layout: {self.layout}. "
            f"See `bench data download {self.release_name}`; point --data-root (or $BENCH_DATA) at the folder "
            f"that holds '{self.release_name}/'."
        )

    def require_folder(self) -> None:
        if not self.folder.is_dir():
            raise self.missing("no release folder")

    def require_cases(self) -> None:
        """A BenchError unless the release is where it should be with cases in it (cheap: nothing is read)."""
        self.require_folder()
        if not self.find_cases()[0]:
            raise self.missing(f"no {self.case_kind} found")

    @functools.cached_property
    def state_folder(self) -> Path:
        """Where the split and cache files are written: a fixed release's own folder if writable, else (and for
        a user's dataset, always) the user cache, in a folder of its own per dataset path."""
        if self.fixed_release and folder_is_writable(self.own_folder):
            return self.own_folder
        key = hashlib.sha256(str(self.folder.resolve()).encode()).hexdigest()[:16]
        return cache_dir() / "datasets" / safe_name(self.release_name) / key

    def _fingerprint(self, cases: list[Case]) -> str:
        """The cache file's key: the preprocessing and every file's path, size and modification time."""
        digest = hashlib.sha256(f"{self.name}\x1f{self.preprocessing_version}\x1f{CACHE_FORMAT}".encode())
        for case in cases:
            digest.update(f"\x1e{case.id}\x1f{case.subject}\x1f{case.extra!r}".encode())
            for path in case.files:
                info = path.stat()
                digest.update(
                    f"\x1f{path.relative_to(self.folder)}\x1f{info.st_size}\x1f{info.st_mtime_ns}".encode()
                )
        return digest.hexdigest()[:16]

    def identity(self) -> str | None:
        """A user dataset's content identity (``Dataset.identity``): its cases, their files' paths and sizes,
        and the options that change what is read (``identity_options``). Sizes rather than times, so a copy of
        the same files keeps it; None for a fixed release."""
        if self.fixed_release:
            return None
        if self._content_identity is None:
            self.require_folder()
            cases, _ = self.find_cases()
            if not cases:
                raise self.missing(f"no {self.case_kind} found")
            digest = hashlib.sha256(f"{self.preprocessing_version}\x1f{self.identity_options()!r}".encode())
            for case in cases:
                digest.update(f"\x1e{case.id}\x1f{case.subject}".encode())
                for path in case.files:
                    digest.update(f"\x1f{path.relative_to(self.folder).as_posix()}\x1f{path.stat().st_size}".encode())
            self._content_identity = digest.hexdigest()[:12]
        return self._content_identity

    def identity_options(self) -> object:
        """What besides the files changes what a user dataset yields (a channel, a pixel threshold)."""
        return ()

    def inventory(self) -> Inventory:
        """Every usable slice of the release, from the cache when it is current, else preprocessed now."""
        if self._inventory is not None:
            return self._inventory
        self.require_folder()
        cases, notes = self.find_cases()
        if not cases:
            raise self.missing(f"no {self.case_kind} found")
        folder = self.state_folder
        stem = safe_name(self.name)
        cache_file = folder / f"{stem}-v{self.preprocessing_version}-{self._fingerprint(cases)}.npz"
        inventory = read_cache(cache_file, notes, stem) if cache_file.exists() else None
        if inventory is None:
            inventory = self._preprocess(cases, notes)
            write_cache(cache_file, inventory, stem)
        for name, reason in inventory.excluded:
            if reason in WARNED_REASONS:
                warnings.warn(f"{self.name}: skipped {name} ({reason})", stacklevel=2)
        inventory.cache_file = cache_file
        self._inventory = inventory
        return inventory

    def _preprocess(self, cases: list[Case], notes: list[str]) -> Inventory:
        slices: list[Slice] = []
        excluded: list[tuple[str, str]] = []
        for case in cases:
            try:
                kept, left_out = self.read_case(case)
            except UnreadableFile as error:
                where = (
                    error.path.relative_to(self.folder)
                    if error.path.is_relative_to(self.folder)
                    else error.path
                )
                excluded.append((f"{where.as_posix()}: {error.detail}", error.reason))
                continue
            except self.read_errors as error:
                # some readers (SimpleITK) put a multi-line C++ trace in the message: its first line says it
                first_line = next(iter(str(error).strip().splitlines()), "")
                excluded.append((f"{case.id}: {type(error).__name__}: {first_line}", READ_FAILURE))
                continue
            slices.extend(kept)
            excluded.extend(left_out)
        return Inventory.from_slices(slices, len(self.tasks), len(cases), excluded, notes)

    def split_file(self) -> Path:
        """The split file: the one already in the own folder (even a read-only one), else where it will go. A
        user dataset's is named after its identity, so other cases make another split file."""
        if not self.fixed_release:
            return self.state_folder / f"split-{self.identity()}.json"
        own = self.own_folder / SPLIT_FILE
        return own if own.exists() else self.state_folder / SPLIT_FILE

    def given_split(self) -> dict[str, list[str]] | None:
        """A split the user's dataset itself declares (a ``splits.json`` beside it), which wins over a seeded
        one; None for the built-in releases."""
        return None

    def split(self) -> dict[str, list[str]]:
        """The train/val/test ids, written once to the split file and read back on every later load.

        A variant shares the split file of ``variant_of`` (same folder) and, when none is written yet, makes it
        from that plugin's images: an image only the variant can use would otherwise move the split.
        """
        given = self.given_split()
        if given is not None:
            return given

        def make() -> dict:
            source = self if self.variant_of is None else self.variant_of(self.data_root)
            inventory = source.inventory()
            subjects = dict(zip(inventory.ids, inventory.subjects, strict=True))
            parts = source.split_parts(sorted(inventory.ids), subjects)
            return {"dataset": source.name, **{name: parts[name] for name in SPLITS}}

        payload = persisted(self.split_file(), make)
        if not isinstance(payload, dict) or any(not isinstance(payload.get(name), list) for name in SPLITS):
            raise BenchError(
                f"split file '{self.split_file()}' lacks train/val/test lists; delete it to re-split"
            )
        return {name: list(payload[name]) for name in SPLITS}

    def split_seed(self) -> int:
        """The seed of a random split: derived from the release's name, so a re-made split is the same."""
        return stable_seed("split", self.release_name) % 2**32

    def load(self, task: str) -> Task:
        inventory = self.inventory()
        parts = self.split()
        index = {sample_id: i for i, sample_id in enumerate(inventory.ids)}
        listed = {sample_id for ids in parts.values() for sample_id in ids}
        gone = sorted(listed - set(index))
        unlisted = sorted(set(index) - listed)
        if gone:
            warnings.warn(f"{self.name}: {len(gone)} ids of the split file are no longer usable (e.g. {gone[0]}); "
                          "they are left out", stacklevel=2)  # fmt: skip
        if unlisted and self.variant_of is not None:
            warnings.warn(f"{self.name}: {len(unlisted)} images usable only under this preprocessing (e.g. "
                          f"{unlisted[0]}) are not in the split it shares with {self.variant_of.name} and are left "
                          "out, so that both score the same images", stacklevel=2)  # fmt: skip
        elif unlisted:
            warnings.warn(f"{self.name}: {len(unlisted)} usable images are not in the split file "
                          f"'{self.split_file()}' (e.g. {unlisted[0]}) and are left out; delete the file to re-split",
                          stacklevel=2)  # fmt: skip
        column = self.tasks.index(task)
        samples: dict[str, list[Sample]] = {name: [] for name in SPLITS}
        too_small = 0
        for name in SPLITS:
            for sample_id in parts[name]:
                if sample_id not in index:
                    continue
                i = index[sample_id]
                mask = self.structure(inventory.labels[i], task)
                if not self.in_task(mask):
                    too_small += 1
                    continue
                samples[name].append(
                    Sample(sample_id, inventory.images[i], mask, inventory.spacing(i), subject=inventory.subjects[i])
                )
        info = {
            "folder": str(self.folder),
            "label": self.task_labels[task],
            "found": inventory.found,
            "excluded": dict(Counter(reason for _, reason in inventory.excluded)),
            "split_file": str(self.split_file()),
            "cache_file": str(inventory.cache_file),
            "preprocessing_version": self.preprocessing_version,
            "preprocessing": self.preprocessing,
            # over the usable images of the release and over the test images a run scores
            "structure_kept": {
                "release": kept_summary(inventory.ids, inventory.kept[:, column]),
                "test": kept_summary(
                    [s.id for s in samples["test"]], inventory.kept[[index[s.id] for s in samples["test"]], column]
                ),
            },
        }
        if too_small:
            info["left_out_of_task"] = too_small
        in_volumes = {s.id: inventory.volume_position(index[s.id]) for part in samples.values() for s in part}
        if any(in_volumes.values()):
            info[VOLUME_OF] = {
                sample_id: (inventory.subjects[index[sample_id]], *position)
                for sample_id, position in in_volumes.items()
                if position is not None
            }
        split_of = self.variant_of.name if self.variant_of is not None else None
        return Task(
            self.name, task, samples["train"], samples["val"], samples["test"], info=info, split_of=split_of,
            identity=self.identity(),
        )  # fmt: skip

    def structure(self, labels: np.ndarray, task: str) -> np.ndarray:
        """The boolean mask of ``task`` in a label map: one label value, or any of a region's values."""
        value = self.task_labels[task]
        return np.isin(labels, value) if isinstance(value, (tuple, list)) else labels == value

    def in_task(self, mask: np.ndarray) -> bool:
        """Whether an image of the release belongs to a task, given the task's mask in it: the structure covers
        ``min_pixels`` (0 for the built-in releases, whose published filters ran in ``read_case``)."""
        return int(np.count_nonzero(mask)) >= self.min_pixels


def check_labels(labels: np.ndarray, allowed: set[int], path: Path) -> np.ndarray:
    """The label map as uint8; UnreadableFile naming the file if it holds a value the release never uses."""
    values = np.unique(labels)
    unexpected = sorted(set(values.tolist()) - allowed)
    if unexpected:
        shown = ", ".join(f"{value:g}" for value in unexpected[:5])
        raise UnreadableFile(path, f"label values {shown} (expected {sorted(allowed)})", UNEXPECTED_LABELS)
    return labels.astype(np.uint8)
