"""New images for `bench predict` and `bench evaluate`: reading them, framing them as a run's dataset does,
putting each predicted mask back on the input's own grid, and writing it in the input's format.

The dataset hook. A dataset plugin that can preprocess a new image file defines

    def frame_for_prediction(self, source: SourceImage) -> list[FramedPlane]

``source`` is one input file as read (``read_source``): its pixels on the file's own grid, unscaled (``array``:
rows×cols, or slices×rows×cols for a volume), its in-plane spacing (row_mm, col_mm) where the format has one, and
the SimpleITK image of a medical format. The hook returns one ``FramedPlane`` per 2-D image its preprocessing makes
of the file, in order: one for a 2-D file, one per slice (along the array's first axis) of a volume. Each
(``bench.data.planes``) holds the uint8 image exactly as ``load`` would give it to a method (the same intensity
normalisation, resampling and frame), its spacing after preprocessing, and a ``PlaneGeometry`` saying how the
plane's pixels went into the frame: resampled from ``source`` to ``resampled`` (rows, cols), then centre-cropped or
padded to ``frame``. The harness inverts that geometry to put a mask back on the plane's own grid (what the crop
cut off is background) and stacks the planes of a volume. Label-dependent choices of ``load`` (slices left out for
lacking a structure, a frame chosen from the mask) cannot apply to an unlabelled image: every slice is framed, and
a frame is chosen as if the structure filled the image. A file the preprocessing cannot take (a volume for a 2-D
dataset, no spacing where it resamples to mm) raises ``BenchError`` with one line. A dataset writes its
preprocessing once and calls it from ``load`` (``read_case``) and from this hook alike, so a new image is framed
exactly as its own are: ``frame_image`` is that function for a 2-D release with a fixed frame (HC18, CAMUS and
their ``-whole`` variants), ``frame_release_image`` its hook.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench.data.image_io import IMAGE_2D_ENDINGS, VOLUME_ENDINGS, file_ending
from bench.data.planes import FramedPlane
from bench.data.samples import percentile_to_uint8
from bench.errors import BenchError

# the formats the dataset readers take (``bench.data.image_io``), so a run predicts on whatever its data was
RASTER_SUFFIXES = IMAGE_2D_ENDINGS
MEDICAL_SUFFIXES = VOLUME_ENDINGS
SUFFIXES = RASTER_SUFFIXES + MEDICAL_SUFFIXES


def image_suffix(path: Path) -> str | None:
    """The recognised suffix of ``path`` (lower case, ``.nii.gz`` whole), or None."""
    return file_ending(path) or None


def stem(path: Path) -> str:
    """The file name without its image suffix: ``patient001_frame01`` of ``patient001_frame01.nii.gz``."""
    suffix = image_suffix(path)
    return path.name[: -len(suffix)] if suffix else path.stem


@dataclass
class SourceImage:
    """One input file as read: its pixels on its own grid, before any preprocessing."""

    path: Path
    array: np.ndarray  # rows×cols, or slices×rows×cols for a volume; the file's own values
    spacing: tuple[float, float] | None  # in-plane (row_mm, col_mm); None where the format has none (PNG)
    itk: Any | None = None  # the SimpleITK image of a medical format: its header goes to the written mask
    read_as: str | None = None  # how a colour image became one channel ("luminance", "channel 1"); None: grey

    @property
    def is_volume(self) -> bool:
        return self.array.ndim == 3

    @property
    def planes(self) -> list[np.ndarray]:
        return list(self.array) if self.is_volume else [self.array]

    @property
    def name(self) -> str:
        return stem(self.path)


def frame_image(
    dataset: Any, image: np.ndarray, labels: np.ndarray, spacing: tuple[float, float]
) -> tuple[FramedPlane, np.ndarray, tuple[float, ...]]:
    """The preprocessing of one 2-D image of a release with a fixed frame (HC18, CAMUS and their ``-whole``
    variants), the one place their ``read_case`` and ``frame_for_prediction`` take it from: the percentile window
    over the image, then ``to_frame`` (``resample``, then the centre crop/pad to ``frame_size``)."""
    return dataset.to_frame(percentile_to_uint8(image), labels, spacing)


def frame_release_image(dataset: Any, source: SourceImage) -> list[FramedPlane]:
    """The prediction hook of a 2-D release dataset that frames with ``frame_image``: the image's labels are
    unknown, so ``resample`` frames it as if the structure filled it (a ``-whole`` variant keeps the whole image).
    An image without spacing is taken as 1×1 mm."""
    planes = source.planes
    if len(planes) != 1:
        raise BenchError(f"{dataset.name} takes 2-D images; '{source.path}' is a volume of {len(planes)} slices")
    plane = planes[0]
    framed, _, _ = frame_image(dataset, plane, np.ones(plane.shape, np.uint8), source.spacing or (1.0, 1.0))
    if source.spacing is None:  # the 1×1 mm was an assumption, not the image's spacing
        framed.spacing = None
    return [framed]


def frame_source(dataset: Any, source: SourceImage) -> list[FramedPlane]:
    """``dataset``'s ``frame_for_prediction`` of ``source``, or one line saying it has none."""
    hook = getattr(dataset, "frame_for_prediction", None)
    if hook is None:
        raise BenchError(
            f"dataset {dataset.name} cannot preprocess new images (its plugin has no frame_for_prediction), "
            "so its runs cannot predict on them"
        )
    return hook(source)


# --- reading ------------------------------------------------------------------------------------------


def input_files(paths: Sequence[Path]) -> list[Path]:
    """The image files named by ``paths`` (files, or folders whose image files are taken, sorted)."""
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith(".") and image_suffix(p))
            if not found:
                raise BenchError(f"no images ({', '.join(s.lstrip('.') for s in SUFFIXES)}) in folder '{path}'")
            files.extend(found)
        elif path.is_file():
            if image_suffix(path) is None:
                raise BenchError(f"'{path}' is not an image bench reads ({', '.join(SUFFIXES)})")
            files.append(path)
        else:
            raise BenchError(f"'{path}' does not exist")
    if not files:
        raise BenchError("no input images given")
    return files


def read_source(path: Path, channel: int | None = None) -> SourceImage:
    """One input file: a raster image (OpenCV) or a medical image (SimpleITK), single-channel. ``channel``
    says how a colour raster is read, as a dataset reads its images (``bench.data.image_io.select_channel``):
    ``LUMINANCE`` or a channel's index (R, G, B); None refuses colour (a ground-truth mask)."""
    if image_suffix(path) in RASTER_SUFFIXES:
        return _read_raster(path, channel)
    return _read_medical(path)


def _read_raster(path: Path, channel: int | None) -> SourceImage:
    import cv2

    from bench.data.image_io import LUMINANCE, Volume, select_channel
    from bench.data.release import UnreadableFile

    array = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if array is None:
        raise BenchError(f"'{path}' is not a readable image")
    read_as = None
    if array.ndim == 3:
        colours = array[..., :3]
        if colours.shape[2] == 1 or (colours == colours[..., :1]).all():  # a grey image stored as RGB(A)
            array = colours[..., 0]
        elif channel is None:
            raise BenchError(
                f"'{path}' has {array.shape[2]} colour channels; the benchmark segments single-channel "
                "(greyscale) images"
            )
        else:
            rgb = Volume(np.ascontiguousarray(np.moveaxis(colours[..., ::-1], -1, 0)), None, channels=3)
            try:
                array = select_channel(rgb, channel, path)
            except UnreadableFile as error:
                raise BenchError(f"'{path}' {error.detail}") from None
            read_as = "luminance" if channel == LUMINANCE else f"channel {channel}"
    return SourceImage(path, np.ascontiguousarray(array), None, read_as=read_as)


def _read_medical(path: Path) -> SourceImage:
    import SimpleITK as sitk

    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as error:
        raise BenchError(f"'{path}' is not a readable image ({str(error).strip().splitlines()[-1][:120]})") from None
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise BenchError(
            f"'{path}' has {image.GetNumberOfComponentsPerPixel()} channels per voxel; the benchmark segments "
            "single-channel images"
        )
    if image.GetDimension() not in (2, 3):
        raise BenchError(f"'{path}' is {image.GetDimension()}-D; bench predicts on 2-D images and 3-D volumes")
    array = sitk.GetArrayFromImage(image)  # slices×rows×cols: rows along the file's y axis, columns along x
    spacing = image.GetSpacing()
    return SourceImage(path, array, (float(spacing[1]), float(spacing[0])), image)


# --- writing ------------------------------------------------------------------------------------------


def output_name(source_path: Path) -> str:
    """The mask's file name: a raster input's as PNG (lossless), a medical one's in its own format, except a
    MetaImage header (.mhd, with its data in a second file) as a one-file .mha."""
    suffix = image_suffix(source_path)
    if suffix in RASTER_SUFFIXES:
        return f"{stem(source_path)}.png"
    return f"{stem(source_path)}{'.mha' if suffix == '.mhd' else suffix}"


def write_mask(source: SourceImage, mask: np.ndarray, path: Path) -> None:
    """Write ``mask`` (boolean, the shape of ``source.array``) to ``path`` through a temporary file renamed when
    complete: a PNG of 0/255 for a raster input, else a label image (0/1, uint8) carrying the input's header
    (spacing, origin, direction), so it overlays the input in ITK-SNAP or 3D Slicer."""
    if mask.shape != source.array.shape:
        raise ValueError(f"mask of shape {mask.shape} for an image of shape {source.array.shape}")
    temporary = path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp{''.join(_suffix(path))}")
    try:
        if source.itk is None:
            import cv2

            ok, encoded = cv2.imencode(".png", mask.astype(np.uint8) * 255)
            if not ok:
                raise OSError(f"could not encode {path.name}")
            with open(temporary, "wb") as stream:
                stream.write(encoded.tobytes())
        else:
            import SimpleITK as sitk

            labels = sitk.GetImageFromArray(mask.astype(np.uint8))
            labels.CopyInformation(source.itk)
            try:
                sitk.WriteImage(labels, str(temporary), True)
            except RuntimeError as error:
                raise OSError(str(error).strip().splitlines()[-1]) from None
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def _suffix(path: Path) -> str:
    """The suffix a writer recognises the format by (``.nii.gz`` whole)."""
    return image_suffix(path) or path.suffix
