"""Reading a user's image and label files: 2-D images through OpenCV, volumes through SimpleITK, and cutting a
volume into 2-D slices across its coarsest-spaced axis (as the paper does for ACDC's short-axis stacks).

Everything that is wrong with a file raises ``bench.data.release.UnreadableFile`` naming it, so a dataset plugin
can skip, name and count it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench.data.release import UnreadableFile

IMAGE_2D_ENDINGS = (".png", ".bmp", ".tif", ".tiff", ".jpg", ".jpeg")
# masks are never read from a lossy format: JPEG blurs label values into one another
LABEL_2D_ENDINGS = (".png", ".bmp", ".tif", ".tiff")
VOLUME_ENDINGS = (".nii.gz", ".nii", ".nrrd", ".mha", ".mhd")
ENDINGS = (*VOLUME_ENDINGS, *IMAGE_2D_ENDINGS)


def file_ending(path: Path | str) -> str:
    """The ending that says a file's format, compound ones (``.nii.gz``) included; '' when it is none of ours."""
    name = str(path).lower()
    return next((ending for ending in ENDINGS if name.endswith(ending)), "")


def is_volume(path: Path | str) -> bool:
    return file_ending(path) in VOLUME_ENDINGS


@dataclass
class Volume:
    """An image or label file as an array: 2-D files as rows×cols, volumes as z×rows×cols (SimpleITK's order,
    x fastest), several channels on a leading axis; ``spacing`` per array axis in mm, None for a 2-D file
    that records none."""

    array: np.ndarray
    spacing: tuple[float, ...] | None
    channels: int = 1


def read_2d(path: Path, label: bool = False) -> Volume:
    """A 2-D image file: grey (rows×cols), or several channels (channels×rows×cols) when its colours differ.

    A colour file whose channels are equal is grey. A label file must be one channel of whole numbers.
    """
    import cv2

    array = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if array is None:
        raise UnreadableFile(path, "not a readable image (truncated, or not the format its name says)")
    if array.ndim == 3:
        if array.shape[2] == 4:  # an alpha channel says nothing about the anatomy
            array = array[..., :3]
        if (array == array[..., :1]).all():
            array = array[..., 0]
        elif label:
            raise UnreadableFile(path, "a label image must be one channel of label values, not colours")
        else:
            array = np.moveaxis(array[..., ::-1], -1, 0)  # OpenCV's BGR as R, G, B channels
            return Volume(np.ascontiguousarray(array), None, channels=array.shape[0])
    return Volume(array, None)


def read_volume(path: Path) -> Volume:
    """A NIfTI, NRRD or MetaImage file through SimpleITK: 3-D as z×rows×cols, a 4-D file's last axis (the
    Decathlon's modalities) as channels×z×rows×cols, a vector image's components as channels."""
    import SimpleITK as sitk

    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as error:
        first_line = next(iter(str(error).strip().splitlines()), "")
        raise UnreadableFile(path, f"not a readable volume ({first_line})") from error
    array = sitk.GetArrayFromImage(image)
    spacing = tuple(float(value) for value in reversed(image.GetSpacing()))  # per array axis
    components = image.GetNumberOfComponentsPerPixel()
    if components > 1:  # a vector image: components last in the array
        return Volume(np.ascontiguousarray(np.moveaxis(array, -1, 0)), spacing, channels=components)
    if array.ndim == 4:
        return Volume(array, spacing[1:], channels=array.shape[0])
    if array.ndim not in (2, 3):
        raise UnreadableFile(path, f"expected a 2-D or 3-D image, found {array.ndim} axes")
    return Volume(array, spacing)


def read_any(path: Path, label: bool = False) -> Volume:
    return read_volume(path) if is_volume(path) else read_2d(path, label)


LUMINANCE = -1  # ``select_channel``'s channel for the grey a colour image shows (ITU-R BT.601 weights)


def select_channel(volume: Volume, channel: int, path: Path) -> np.ndarray:
    """The one channel a dataset uses of a file that holds several (a 4-D Decathlon image, an RGB PNG), or for
    ``LUMINANCE`` the grey of a colour image."""
    if channel == LUMINANCE:
        if volume.channels == 3:
            return np.tensordot((0.299, 0.587, 0.114), volume.array.astype(np.float32), axes=1)
        channel = 0
    if volume.channels == 1:
        if channel != 0:
            raise UnreadableFile(path, f"has one channel; channel {channel} was asked for")
        return volume.array
    if channel >= volume.channels:
        raise UnreadableFile(path, f"has {volume.channels} channels; channel {channel} was asked for")
    return volume.array[channel]


def label_map(volume: Volume, path: Path) -> np.ndarray:
    """A label file's values as uint8; UnreadableFile when they are not whole numbers from 0 to 255."""
    if volume.channels != 1:
        raise UnreadableFile(path, f"a label file must have one channel, this one has {volume.channels}")
    values = volume.array
    if np.issubdtype(values.dtype, np.floating):
        if not np.isfinite(values).all() or (values != np.round(values)).any():
            raise UnreadableFile(path, "holds label values that are not whole numbers")
    if values.size and (values.min() < 0 or values.max() > 255):
        raise UnreadableFile(path, f"holds label values outside 0–255 ({values.min():g} to {values.max():g})")
    return values.astype(np.uint8)


def slicing_axis(shape: tuple[int, ...], spacing: tuple[float, ...] | None) -> int:
    """The axis a volume is cut across: a single-slice axis if there is one, else the coarsest-spaced axis
    (the first of equals, z, for an isotropic volume)."""
    if 1 in shape:
        return shape.index(1)
    return int(np.argmax(spacing)) if spacing is not None else 0


def slices(
    image: np.ndarray, labels: np.ndarray, spacing: tuple[float, ...] | None
) -> Iterator[tuple[int, np.ndarray, np.ndarray, tuple[float, float] | None, float | None]]:
    """(index, image slice, label slice, in-plane (row_mm, col_mm), thickness in mm) across the volume's
    coarsest axis; a 2-D image is its own one slice, of no thickness."""
    if image.ndim == 2:
        yield 0, image, labels, (spacing[0], spacing[1]) if spacing is not None else None, None
        return
    axis = slicing_axis(image.shape, spacing)
    in_plane = None if spacing is None else tuple(value for i, value in enumerate(spacing) if i != axis)
    thickness = None if spacing is None else spacing[axis]
    for index in range(image.shape[axis]):
        image_slice, label_slice = np.take(image, index, axis=axis), np.take(labels, index, axis=axis)
        yield index, image_slice, label_slice, in_plane, thickness  # type: ignore[misc]
