"""Everything preprocessed from one release, and its cache file: what ``bench.data.release`` scans once and reuses.

A release is preprocessed into 2-D slices (``Slice``); their arrays are stored together in one ``.npz`` per
dataset (``Inventory``), named after the preprocessing version and a fingerprint of the release files, so a
new version or a changed file makes a new cache. Images of one frame size are stored as one N×H×W array;
images of their own sizes (a dataset without a fixed frame) as one flat array with their shapes.
"""

from __future__ import annotations

import json
import stat
import tempfile
import warnings
import zipfile
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bench.paths import atomic_write

# 2: the kept fraction of each structure is stored per slice; 3: images of their own sizes. Part of every cache
# file's fingerprint.
CACHE_FORMAT = 3
# A structure that lost more than this share of its pixels to the preprocessing is named by id.
LOSS_NAMED = 0.1


@dataclass
class Slice:
    """One preprocessed 2-D image of a case."""

    id: str
    subject: str
    image: np.ndarray  # uint8 H×W
    labels: np.ndarray  # uint8 H×W, 0 = background
    spacing: tuple[float, float] | None  # mm per pixel after preprocessing (row, col); None for plain pixels
    source_shape: tuple[int, int]
    source_spacing: tuple[float, float] | None
    # per task of the plugin, in its order: the share of the structure's pixels left inside the frame
    kept: tuple[float, ...]
    # a slice of a volume: its position along the axis the volume was cut across, and its thickness in mm
    in_volume: tuple[int, float | None] | None = None


@dataclass
class Inventory:
    """Everything preprocessed from one release, as stored in its cache file."""

    ids: list[str]
    subjects: list[str]
    images: Sequence[np.ndarray]  # N uint8 H×W images: one N×H×W array when they share a frame
    labels: Sequence[np.ndarray]  # N uint8 H×W label maps, 0 = background, stored like ``images``
    spacings: np.ndarray  # N×2 float (row_mm, col_mm); NaN where the file records no spacing
    source_shapes: np.ndarray  # N×2 int
    source_spacings: np.ndarray  # N×2 float
    kept: np.ndarray  # N×tasks float, Slice.kept; NaN where the structure is not in the source
    found: int  # cases scanned
    # N×2 float, Slice.in_volume: position along the cut axis (NaN for a 2-D image) and thickness (NaN if unknown)
    in_volume: np.ndarray | None = None
    excluded: list[tuple[str, str]] = field(default_factory=list)  # (name, reason)
    notes: list[str] = field(default_factory=list)
    cache_file: Path | None = None
    from_cache: bool = False

    @classmethod
    def from_slices(
        cls, slices: list[Slice], tasks: int, found: int, excluded: list[tuple[str, str]], notes: list[str]
    ) -> Inventory:
        def spacing_rows(values: list[tuple[float, float] | None]) -> np.ndarray:
            return np.array([value or (np.nan, np.nan) for value in values], np.float64).reshape(-1, 2)

        return cls(
            ids=[s.id for s in slices],
            subjects=[s.subject for s in slices],
            images=_stack_if_same_shape([s.image for s in slices]),
            labels=_stack_if_same_shape([s.labels for s in slices]),
            spacings=spacing_rows([s.spacing for s in slices]),
            source_shapes=np.array([s.source_shape for s in slices], np.int64).reshape(-1, 2),
            source_spacings=spacing_rows([s.source_spacing for s in slices]),
            kept=np.array([s.kept for s in slices], np.float64).reshape(-1, tasks),
            found=found,
            excluded=excluded,
            notes=notes,
            in_volume=np.array(
                [(s.in_volume[0], np.nan if s.in_volume[1] is None else s.in_volume[1]) if s.in_volume
                 else (np.nan, np.nan) for s in slices], np.float64).reshape(-1, 2),
        )  # fmt: skip

    @property
    def shapes(self) -> list[tuple[int, int]]:
        return [tuple(image.shape) for image in self.images]  # type: ignore[misc]

    def spacing(self, index: int) -> tuple[float, float] | None:
        row_mm, col_mm = (float(value) for value in self.spacings[index])
        return None if np.isnan(row_mm) else (row_mm, col_mm)

    def volume_position(self, index: int) -> tuple[int, float | None] | None:
        """``Slice.in_volume`` of image ``index``: None for a 2-D image."""
        if self.in_volume is None or np.isnan(self.in_volume[index, 0]):
            return None
        position, thickness = self.in_volume[index]
        return int(position), None if np.isnan(thickness) else float(thickness)

    def excluded_by_reason(self) -> dict[str, list[str]]:
        grouped: dict[str, list[str]] = {}
        for name, reason in self.excluded:
            grouped.setdefault(reason, []).append(name)
        return grouped


def _stack_if_same_shape(arrays: list[np.ndarray]) -> Sequence[np.ndarray]:
    if not arrays:
        return np.zeros((0, 0, 0), np.uint8)
    if len({array.shape for array in arrays}) == 1:
        return np.stack(arrays)
    return arrays


def kept_summary(ids: list[str], kept: np.ndarray) -> dict:
    """How much of one structure the preprocessing kept over some images: how many it cut at all, the least
    and the median share of pixels kept (over all images and over the cut ones), and the ids that lost more
    than ``LOSS_NAMED``. Images without the structure (NaN) are left out."""
    present = ~np.isnan(kept)
    ids = [sample_id for sample_id, has in zip(ids, present, strict=True) if has]
    kept = kept[present]
    cut = kept < 1
    return {
        "images": len(ids),
        "cut": int(cut.sum()),
        "min": round(float(kept.min()), 4) if len(ids) else None,
        "median": round(float(np.median(kept)), 4) if len(ids) else None,
        "median_of_cut": round(float(np.median(kept[cut])), 4) if cut.any() else None,
        "lost_over_10pct": [sample_id for sample_id, value in zip(ids, kept, strict=True) if value < 1 - LOSS_NAMED],
    }


def folder_is_writable(folder: Path) -> bool:
    """Whether the tool may create ``folder`` or write into it, found by trying rather than by flags alone."""
    existing = folder if folder.exists() else folder.parent
    if not existing.is_dir():
        return False
    # root passes every permission check; a folder with no write bit at all is read-only on purpose
    # (a shared, read-only copy of a release), so it is not written into even then.
    if not existing.stat().st_mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH):
        return False
    try:
        folder.mkdir(exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-test-"):
            pass
    except OSError:
        return False
    return True


def _save_arrays_atomic(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write an ``.npz`` with images stored raw and everything else deflated, then rename it into place.

    Ultrasound and MR pixels deflate only about 2× but then take 4× longer to load; label maps shrink
    100× or more. Storing the images raw keeps the cached load of a dataset to about a second.
    """
    with atomic_write(path) as file, zipfile.ZipFile(file, "w", allowZip64=True) as archive:
        for name, array in arrays.items():
            info = zipfile.ZipInfo(f"{name}.npy")
            info.compress_type = zipfile.ZIP_STORED if name == "images" else zipfile.ZIP_DEFLATED
            with archive.open(info, "w", force_zip64=True) as stream:
                np.lib.format.write_array(stream, np.asanyarray(array), allow_pickle=False)


def _flat(arrays: Sequence[np.ndarray]) -> np.ndarray:
    """Images of any sizes as one flat array (``np.concatenate`` of the ravelled images)."""
    if isinstance(arrays, np.ndarray):
        return arrays.reshape(-1)
    return np.concatenate([array.ravel() for array in arrays]) if arrays else np.zeros(0, np.uint8)


def _unflatten(flat: np.ndarray, shapes: np.ndarray) -> Sequence[np.ndarray]:
    """The inverse of ``_flat``: views into ``flat``, stacked into one array when every shape is the same."""
    if len(shapes) and (shapes == shapes[0]).all():
        return flat.reshape(len(shapes), *shapes[0])
    ends = np.cumsum(shapes.prod(axis=1))
    return [
        flat[end - rows * cols : end].reshape(rows, cols) for (rows, cols), end in zip(shapes, ends, strict=True)
    ]


def write_cache(path: Path, inventory: Inventory, dataset: str) -> None:
    """Store ``inventory`` at ``path`` and remove the older cache files of ``dataset`` beside it."""
    meta = {
        "found": inventory.found,
        "excluded": inventory.excluded,
        "ids": inventory.ids,
        "subjects": inventory.subjects,
    }
    try:
        _save_arrays_atomic(
            path,
            {
                "images": _flat(inventory.images),
                "labels": _flat(inventory.labels),
                "shapes": np.array(inventory.shapes, np.int64).reshape(-1, 2),
                "spacings": inventory.spacings,
                "source_shapes": inventory.source_shapes,
                "source_spacings": inventory.source_spacings,
                "kept": inventory.kept,
                "in_volume": inventory.in_volume if inventory.in_volume is not None else np.zeros((0, 2)),
                "meta": np.frombuffer(json.dumps(meta).encode(), np.uint8),
            },
        )
    except OSError as error:  # a full disk costs the next load time, never this one's result
        warnings.warn(f"{dataset}: could not write the cache file '{path}': {error}", stacklevel=3)
        return
    for stale in path.parent.glob(f"{dataset}-v*.npz"):
        if stale != path:
            stale.unlink(missing_ok=True)


def read_cache(path: Path, notes: list[str], dataset: str) -> Inventory | None:
    """The inventory stored at ``path``; None (with a warning) when the file is damaged."""
    try:
        with np.load(path, allow_pickle=False) as arrays:
            meta = json.loads(arrays["meta"].tobytes())
            shapes = arrays["shapes"]
            return Inventory(
                ids=meta["ids"],
                subjects=meta["subjects"],
                images=_unflatten(arrays["images"], shapes),
                labels=_unflatten(arrays["labels"], shapes),
                spacings=arrays["spacings"],
                source_shapes=arrays["source_shapes"],
                source_spacings=arrays["source_spacings"],
                kept=arrays["kept"],
                in_volume=arrays["in_volume"] if len(arrays["in_volume"]) else None,
                found=meta["found"],
                excluded=[tuple(item) for item in meta["excluded"]],
                notes=notes,
                from_cache=True,
            )
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, zlib.error) as error:
        warnings.warn(f"{dataset}: ignoring the damaged cache file '{path}' ({error})", stacklevel=3)
        return None
