"""`hc18`: fetal head in 2-D ultrasound (HC18 challenge training set, Zenodo DOI 10.5281/zenodo.1327317).

The release draws the head circumference as a thin ellipse outline; the task mask is the filled inside of
that outline. Preprocessing as in the paper: percentile clip/rescale per image, centre-crop/pad to
640×640, spacing from the release's CSV. Only the ``NNN_HC`` image of each subject is used; the
``NNN_2HC``/``NNN_3HC`` repeats are left out so that no subject can straddle two splits.

The release's images are 800 px wide, so the paper's crop cuts the sides of the largest heads. The
``hc18-whole`` variant keeps every head whole: an image whose head the crop would cut is shrunk to fit
640×640 (area interpolation) and padded instead, its spacing growing by the same factor; every other image
is preprocessed exactly as in the paper. It reads the same release and shares the paper variant's split.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

import cv2
import numpy as np

from bench.data.framing import SourceImage, frame_image, frame_release_image
from bench.data.inventory import Slice
from bench.data.planes import FramedPlane
from bench.data.release import Case, ReleaseDataset, UnreadableFile
from bench.data.samples import (
    center_crop_or_pad,
    fitting_spacing,
    resampled_geometry,
    resize_image,
    resize_labels,
)
from bench.registry import DATASETS

SIZE = (640, 640)
CSV_NAME = "training_set_pixel_size_and_HC.csv"
FIRST_IMAGE = re.compile(r"(\d{3})_HC\.png")
REPEAT_IMAGE = re.compile(r"\d{3}_\dHC\.png")
OPEN_OUTLINE = "outline does not enclose exactly one region"
OUTSIDE_CROP = "head outside the 640×640 crop"


def read_gray(path: Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if image is None:
        raise UnreadableFile(path, "not a readable image")
    return image


def fill_outline(outline: np.ndarray) -> np.ndarray | None:
    """The filled region inside a closed outline (bool), or None unless it encloses exactly one region.

    The inner contour is the border of the outline's one hole; filling it keeps the inner edge of the
    drawn line, so the mask's perimeter is the drawn circumference.
    """
    contours, hierarchy = cv2.findContours(
        (outline > 0).astype(np.uint8), cv2.RETR_CCOMP, cv2.CHAIN_APPROX_NONE
    )
    if hierarchy is None:
        return None
    holes = [contour for contour, links in zip(contours, hierarchy[0], strict=True) if links[3] >= 0]
    if len(holes) != 1:
        return None
    filled = np.zeros(outline.shape, np.uint8)
    cv2.drawContours(filled, holes, -1, 1, thickness=cv2.FILLED)
    return filled.astype(bool)


@DATASETS.register
class HC18(ReleaseDataset):
    fixed_release = True
    name = "hc18"
    frame_size = SIZE
    display_name = "HC18"
    tasks = ("head",)
    task_display = {"head": "Fetal head"}
    task_labels = {"head": 1}
    preprocessing_version = 1
    preprocessing = "paper: centre crop/pad to 640×640 at the release's pixel size"
    case_kind = "NNN_HC.png images"
    layout = (
        f"<data_root>/hc18/training_set/NNN_HC.png with NNN_HC_Annotation.png beside each, and "
        f"<data_root>/hc18/{CSV_NAME}"
    )
    homepage = "https://zenodo.org/records/1327317"

    def csv_path(self) -> Path:
        # the release ships the CSV beside the unpacked folder; some mirrors put it inside
        for candidate in (self.folder / CSV_NAME, self.folder / "training_set" / CSV_NAME):
            if candidate.is_file():
                return candidate
        raise self.missing(f"no {CSV_NAME}")

    def _pixel_sizes(self, path: Path) -> dict[str, float]:
        sizes: dict[str, float] = {}
        try:
            with path.open(newline="") as stream:
                for row in csv.DictReader(stream):
                    sizes[row["filename"].strip()] = float(row["pixel size(mm)"])
        except (OSError, KeyError, ValueError, UnicodeDecodeError) as error:
            raise self.missing(f"an unreadable {path.name} ({type(error).__name__}: {error})") from error
        return sizes

    def find_cases(self) -> tuple[list[Case], list[str]]:
        images = self.folder / "training_set"
        if not images.is_dir():
            raise self.missing("no training_set folder")
        pixel_sizes = self._pixel_sizes(self.csv_path())
        names = sorted(path.name for path in images.iterdir())
        cases = []
        for name in names:
            match = FIRST_IMAGE.fullmatch(name)
            if match:
                image = images / name
                files = tuple(
                    p for p in (image, image.with_name(f"{image.stem}_Annotation.png")) if p.exists()
                )
                cases.append(Case(image.stem, match.group(1), files, (pixel_sizes.get(name),)))
        repeats = sum(1 for name in names if REPEAT_IMAGE.fullmatch(name))
        notes = [f"{repeats} repeat images (_2HC/_3HC) of the same subjects left out, as in the paper"]
        return cases, notes

    def read_case(self, case: Case) -> tuple[list[Slice], list[tuple[str, str]]]:
        image_path = case.files[0]
        annotation_path = image_path.with_name(f"{case.id}_Annotation.png")
        if annotation_path not in case.files:
            raise UnreadableFile(annotation_path, "missing")
        (pixel_size,) = case.extra
        if pixel_size is None or not pixel_size > 0:
            raise UnreadableFile(image_path, f"no valid pixel size in {CSV_NAME}")
        image = read_gray(image_path)
        outline = read_gray(annotation_path)
        if outline.shape != image.shape:
            raise UnreadableFile(
                annotation_path, f"size {outline.shape} differs from the image's {image.shape}"
            )
        filled = fill_outline(outline)
        if filled is None:
            return [], [(case.id, OPEN_OUTLINE)]
        source_spacing = (float(pixel_size), float(pixel_size))
        plane, mask_in_frame, kept = frame_image(self, image, filled.astype(np.uint8), source_spacing)
        if not mask_in_frame.any():
            return [], [(case.id, OUTSIDE_CROP)]
        return [
            Slice(case.id, case.subject, plane.image, mask_in_frame, plane.spacing, image.shape, source_spacing, kept)
        ], []

    def frame_for_prediction(self, source: SourceImage) -> list[FramedPlane]:
        """A new image framed as ``read_case`` frames the release's (the hook of ``bench.data.framing``)."""
        return frame_release_image(self, source)


@DATASETS.register
class HC18Whole(HC18):
    """HC18 with every head whole: shrink-to-fit instead of a crop that would cut the head."""

    name = "hc18-whole"
    display_name = "HC18 (whole)"
    variant_of = HC18
    preprocessing_version = 1
    preprocessing = (
        "whole: as the paper, but an image whose head the 640×640 centre crop would cut is shrunk to fit "
        "(area interpolation) and padded; its spacing grows by the same factor"
    )

    def resample(
        self, pixels: np.ndarray, mask: np.ndarray, spacing: tuple[float, float]
    ) -> tuple[np.ndarray, np.ndarray, tuple[float, float]]:
        if np.count_nonzero(center_crop_or_pad(mask, SIZE)) == np.count_nonzero(mask):
            return pixels, mask, spacing
        shape, spacing = resampled_geometry(mask.shape, spacing, fitting_spacing(mask.shape, spacing, SIZE), SIZE)
        return resize_image(pixels, shape), resize_labels(mask, shape), spacing

