"""Tiny releases written in the exact on-disk formats of HC18, CAMUS and ACDC, for the loader tests."""

from __future__ import annotations

import csv
from pathlib import Path

import cv2
import numpy as np

from bench.datasets.hc18 import CSV_NAME

HC18_CSV = CSV_NAME


# A head placed by hand: centre (x, y) and half-axes (x, y) in pixels, axis-aligned.
Head = tuple[tuple[int, int], tuple[int, int]]


def draw_head(
    index: int, shape: tuple[int, int] = (120, 160), head: Head | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """An ultrasound-like image and the release-style annotation: a 2-px ellipse outline (0/255)."""
    rng = np.random.default_rng(index)
    centre = (shape[1] // 2 + int(rng.integers(-10, 10)), shape[0] // 2 + int(rng.integers(-8, 8)))
    axes = (int(rng.integers(25, 40)), int(rng.integers(18, 30)))
    angle = float(rng.uniform(0, 180))
    if head is not None:
        centre, axes = head
        angle = 0.0
    image = rng.integers(0, 60, size=shape).astype(np.uint8)
    cv2.ellipse(image, centre, axes, angle, 0, 360, 200, thickness=3)
    outline = np.zeros(shape, np.uint8)
    cv2.ellipse(outline, centre, axes, angle, 0, 360, 255, thickness=2)
    return image, outline


def write_hc18_release(
    root: Path,
    count: int = 10,
    open_outline: tuple[int, ...] = (),
    shape: tuple[int, int] = (120, 160),
    heads: dict[int, Head] | None = None,
) -> Path:
    """``root/hc18`` in the release layout with ``count`` subjects (plus one ``_2HC`` repeat each).

    Subjects listed in ``open_outline`` get an outline with a gap, which encloses no region; the ``_HC``
    image of a subject in ``heads`` shows the head given there (the real images are 540×800 px).
    """
    folder = root / "hc18"
    images = folder / "training_set"
    images.mkdir(parents=True)
    rows = []
    for index in range(count):
        for suffix in ("HC", "2HC"):
            head = (heads or {}).get(index) if suffix == "HC" else None
            image, outline = draw_head(index * 10 + len(suffix), shape, head)
            if suffix == "HC" and index in open_outline:
                outline[:, outline.shape[1] // 2 - 3 : outline.shape[1] // 2 + 3] = 0
            name = f"{index:03d}_{suffix}"
            cv2.imwrite(str(images / f"{name}.png"), image)
            cv2.imwrite(str(images / f"{name}_Annotation.png"), outline)
            rows.append((f"{name}.png", 0.1 + index / 100, 100.0))
    with (folder / HC18_CSV).open("w", newline="") as stream:
        writer = csv.writer(stream)
        writer.writerow(["filename", "pixel size(mm)", "head circumference (mm)"])
        writer.writerows(rows)
    return folder


def write_camus_patient(
    root: Path,
    number: int,
    image: np.ndarray,
    labels: np.ndarray,
    spacing: tuple[float, float],
    fmt: str = "nifti",
) -> Path:
    """One CAMUS patient's 2CH_ED image and ground truth, given as rows×cols with (row_mm, col_mm) spacing.

    ``nifti``: the current release, ``camus/database_nifti/…/*.nii.gz`` with x (columns) as the first axis;
    ``mhd``: the original release, ``camus/training/…/*.mhd`` + ``.raw``, the header written out as the
    release's is (three dimensions, x first: ``ElementSpacing = col_mm row_mm z_mm``), not by SimpleITK,
    which the loader reads it with.
    """
    import nibabel as nib

    pid = f"patient{number:04d}"
    folder = root / "camus" / ("database_nifti" if fmt == "nifti" else "training") / pid
    folder.mkdir(parents=True)
    for suffix, array in (("", image), ("_gt", labels)):
        stem = folder / f"{pid}_2CH_ED{suffix}"
        if fmt == "nifti":
            affine = np.diag([spacing[1], spacing[0], 1.0, 1.0])
            nib.save(nib.Nifti1Image(np.ascontiguousarray(array.T), affine), f"{stem}.nii.gz")
        else:
            write_metaimage(stem, array, spacing)
    return folder


METAIMAGE_TYPES = {np.dtype(np.uint8): "MET_UCHAR", np.dtype(np.float32): "MET_FLOAT"}


def write_metaimage(stem: Path, array: np.ndarray, spacing: tuple[float, float]) -> None:
    """``stem.mhd`` + ``stem.raw`` holding a rows×cols array of (row_mm, col_mm) spacing as one z slice."""
    rows, cols = array.shape
    header = [
        "ObjectType = Image",
        "NDims = 3",
        "BinaryData = True",
        "BinaryDataByteOrderMSB = False",
        "CompressedData = False",
        "TransformMatrix = 1 0 0 0 1 0 0 0 1",
        "Offset = 0 0 0",
        "CenterOfRotation = 0 0 0",
        "AnatomicalOrientation = RAI",
        f"ElementSpacing = {spacing[1]} {spacing[0]} 1.54",
        f"DimSize = {cols} {rows} 1",
        f"ElementType = {METAIMAGE_TYPES[array.dtype]}",
        f"ElementDataFile = {stem.name}.raw",
    ]
    Path(f"{stem}.mhd").write_text("\n".join(header) + "\n")
    # the raw file runs along x (columns) fastest: row-major rows×cols, little-endian
    Path(f"{stem}.raw").write_bytes(np.ascontiguousarray(array).astype(array.dtype.newbyteorder("<")).tobytes())


def write_acdc_patient(
    root: Path,
    number: int,
    frames: dict[int, tuple[np.ndarray, np.ndarray]],
    ed: int,
    spacing: tuple[float, float, float],
) -> Path:
    """One ACDC patient: ``Info.cfg`` and ``patientNNN_frameXX(_gt).nii.gz`` for each frame.

    Volumes are given as z×rows×cols with spacing (row_mm, col_mm, slice_mm); the files hold x, y, z.
    """
    import nibabel as nib

    pid = f"patient{number:03d}"
    folder = root / "acdc" / ("training" if number <= 100 else "testing") / pid
    folder.mkdir(parents=True)
    (folder / "Info.cfg").write_text(f"ED: {ed}\nES: {max(frames)}\nGroup: NOR\nHeight: 180.0\nNbFrame: 30\n")
    affine = np.diag([spacing[1], spacing[0], spacing[2], 1.0])
    for frame, (volume, labels) in frames.items():
        for suffix, array in (("", volume), ("_gt", labels)):
            data = np.ascontiguousarray(np.transpose(array, (2, 1, 0)))
            nib.save(nib.Nifti1Image(data, affine), str(folder / f"{pid}_frame{frame:02d}{suffix}.nii.gz"))
    return folder


ACDC_SPACING = (2.0, 1.5, 10.0)  # row_mm, col_mm, slice_mm


def cine(number: int, brightness: tuple[float, ...] = (1.0, 1.0, 1.0)) -> tuple[np.ndarray, np.ndarray]:
    """A z×rows×cols volume with RV (1), myocardium (2) and LV (3); the RV nearly vanishes on slice 2."""
    rng = np.random.default_rng(number)
    shape = (3, 40, 36)
    volume = rng.normal(100, 10, size=shape).astype(np.float32)
    labels = np.zeros(shape, np.uint8)
    labels[:, 8:30, 16:32] = 2
    labels[:, 10:28, 18:30] = 3  # 18 × 12 voxels = 36 mm × 18 mm
    labels[:2, 12:20, 4:12] = 1
    labels[2, 15, 8] = 1  # one voxel = 3 mm²: below the 10-pixel rule after resampling
    volume[labels == 3] += 80
    volume *= np.asarray(brightness, np.float32)[:, None, None]
    return volume, labels


def small_echo(number: int, shape: tuple[int, int] = (48, 40)) -> tuple[np.ndarray, np.ndarray]:
    """A small CAMUS-like image (float, speckled) with LV (1), myocardium (2) and LA (3) all inside a 512×512
    frame, so every structure is kept whatever the variant."""
    rng = np.random.default_rng(number)
    image = rng.gamma(2.0, 40.0, size=shape).astype(np.float32)
    labels = np.zeros(shape, np.uint8)
    labels[6:24, 8:32] = 2
    labels[8:22, 10:30] = 1
    labels[28:42, 12:28] = 3
    image[labels == 1] *= 0.3
    return image, labels
