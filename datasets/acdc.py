"""`acdc`: right and left ventricle in cine MRI (ACDC challenge, Bernard et al., IEEE TMI 2018).

The end-diastole volume of each patient (frame named by ``ED`` in its ``Info.cfg``), sliced along z.
Labels: 1 RV cavity, 2 myocardium, 3 LV cavity. Preprocessing as in the paper: percentile clip/rescale
over the 3-D volume, then per slice in-plane resampling to 1×1 mm (bilinear image, nearest-neighbour
labels) and centre-crop/pad to 256×256; a slice is kept only if all three structures cover at least 10
pixels. The split is the paper's fixed one: official training patients 001–100 minus ten validation
patients, those ten, and the official testing patients 101–150.
"""

from __future__ import annotations

import re
from pathlib import Path

import cv2
import numpy as np

from bench.data.framing import SourceImage
from bench.data.inventory import Slice
from bench.data.planes import FramedPlane
from bench.data.release import Case, ReleaseDataset, UnreadableFile, check_labels
from bench.data.samples import percentile_to_uint8
from bench.errors import BenchError
from bench.registry import DATASETS

SIZE = (256, 256)
TARGET_SPACING_MM = 1.0
LABELS = (1, 2, 3)
MIN_PIXELS = 10
VAL_PATIENTS = frozenset({12, 22, 49, 52, 57, 58, 59, 73, 96, 100})
LAST_TRAINING_PATIENT = 100
PATIENT_FOLDER = re.compile(r"patient(\d{3})")
INFO_NAME = "Info.cfg"
SMALL_STRUCTURE = f"slice without all of RV, myocardium and LV (≥{MIN_PIXELS} px each)"


def read_ed_frame(info: Path) -> int:
    """The end-diastole frame number from a patient's ``Info.cfg`` (lines like ``ED: 1``)."""
    try:
        text = info.read_text()
    except (OSError, UnicodeDecodeError) as error:
        raise UnreadableFile(info, f"cannot be read ({error})") from error
    match = re.search(r"^\s*ED\s*:\s*(\d+)\s*$", text, re.MULTILINE)
    if match is None:
        raise UnreadableFile(info, "has no 'ED: <frame>' line")
    return int(match.group(1))


def read_volume(path: Path) -> tuple[np.ndarray, tuple[float, float]]:
    """The volume as z×rows×cols and its in-plane (row_mm, col_mm) spacing.

    NIfTI stores x first; rows are taken along y so that (row_mm, col_mm) = (zoom_y, zoom_x).
    """
    import nibabel as nib
    from nibabel.filebasedimages import ImageFileError

    try:
        image = nib.load(str(path))
    except ImageFileError as error:
        raise UnreadableFile(path, f"not a NIfTI image ({error})") from error
    volume = np.asanyarray(image.dataobj)
    if volume.ndim == 4 and volume.shape[3] == 1:
        volume = volume[..., 0]
    if volume.ndim != 3:
        raise UnreadableFile(path, f"expected a 3-D volume, found shape {volume.shape}")
    zooms = image.header.get_zooms()
    return np.ascontiguousarray(np.transpose(volume, (2, 1, 0))), (float(zooms[1]), float(zooms[0]))


def resample_slice(array: np.ndarray, spacing: tuple[float, float], interpolation: int) -> np.ndarray:
    """One slice resampled to 1×1 mm pixels: the shape scales by the spacing, the field of view stays."""
    rows = max(1, round(array.shape[0] * spacing[0] / TARGET_SPACING_MM))
    cols = max(1, round(array.shape[1] * spacing[1] / TARGET_SPACING_MM))
    return cv2.resize(array, (cols, rows), interpolation=interpolation)


@DATASETS.register
class ACDC(ReleaseDataset):
    fixed_release = True
    name = "acdc"
    display_name = "ACDC"
    tasks = ("rv", "lv")
    task_display = {"rv": "Right ventricle", "lv": "Left ventricle"}
    task_labels = {"rv": 1, "lv": 3}
    frame_size = SIZE
    preprocessing_version = 1
    preprocessing = "paper: per slice resampled to 1×1 mm, centre crop/pad to 256×256"
    case_kind = "patientNNN folders"
    layout = (
        "<data_root>/acdc/training/patientNNN/ (001–100) and <data_root>/acdc/testing/patientNNN/ (101–150), "
        "each with Info.cfg, patientNNN_frameXX.nii.gz and patientNNN_frameXX_gt.nii.gz "
        "(an extra database/ level above training/ and testing/ is fine)"
    )
    homepage = "https://humanheart-project.creatis.insa-lyon.fr/database/#collection/637218c173e9f0047faa00fb"

    def find_cases(self) -> tuple[list[Case], list[str]]:
        # every patient folder is a case, with or without its Info.cfg, so that one lacking it is named in
        # the exclusions rather than silently not counted
        folders = [
            path
            for pattern in ("*/patient*", "*/*/patient*", "patient*")
            for path in self.folder.glob(pattern)
            if PATIENT_FOLDER.fullmatch(path.name) and path.is_dir()
        ]
        by_patient: dict[str, Path] = {}
        for folder in sorted(folders):
            pid = folder.name
            if pid in by_patient:
                raise self.missing(f"{pid} twice ({by_patient[pid]} and {folder}); keep one copy")
            by_patient[pid] = folder
        cases = []
        for pid, folder in sorted(by_patient.items()):
            info = folder / INFO_NAME
            files = (
                *((info,) if info.is_file() else ()),
                *sorted(folder.glob(f"{pid}_frame[0-9][0-9].nii.gz")),
                *sorted(folder.glob(f"{pid}_frame[0-9][0-9]_gt.nii.gz")),
            )
            cases.append(Case(pid, pid, files, (folder.relative_to(self.folder).as_posix(),)))
        return cases, ["the end-diastole volume of each patient (frame named by Info.cfg), sliced along z"]

    def read_case(self, case: Case) -> tuple[list[Slice], list[tuple[str, str]]]:
        (folder,) = case.extra
        info = self.folder / folder / INFO_NAME
        if info not in case.files:
            raise UnreadableFile(info, "missing (it names the end-diastole frame)")
        frame = read_ed_frame(info)
        image_path = info.parent / f"{case.id}_frame{frame:02d}.nii.gz"
        label_path = info.parent / f"{case.id}_frame{frame:02d}_gt.nii.gz"
        for path in (image_path, label_path):
            if path not in case.files:
                raise UnreadableFile(path, "missing (named by ED in Info.cfg)")
        volume, spacing = read_volume(image_path)
        labels, _ = read_volume(label_path)
        if labels.shape != volume.shape:
            raise UnreadableFile(label_path, f"shape {labels.shape} differs from the image's {volume.shape}")
        labels = check_labels(labels, {0, *LABELS}, label_path)
        usable: list[Slice] = []
        left_out: list[tuple[str, str]] = []
        for z, (plane, label_map, kept) in enumerate(self.frame_volume(volume, labels, spacing)):
            slice_id = f"{case.id}_s{z:02d}"
            counts = np.bincount(label_map.ravel(), minlength=len(LABELS) + 1)
            if min(counts[list(LABELS)]) < MIN_PIXELS:
                left_out.append((slice_id, SMALL_STRUCTURE))
                continue
            usable.append(
                Slice(slice_id, case.subject, plane.image, label_map, plane.spacing, volume.shape[1:], spacing, kept)
            )
        return usable, left_out

    def frame_volume(
        self, volume: np.ndarray, labels: np.ndarray, spacing: tuple[float, float]
    ) -> list[tuple[FramedPlane, np.ndarray, tuple[float, ...]]]:
        """The release's preprocessing of a volume (z×rows×cols), the one place ``read_case`` and
        ``frame_for_prediction`` take it from: the percentile window over the whole volume, as the paper does,
        then each slice through ``to_frame`` (``resample`` to 1×1 mm, centre crop/pad to 256×256). Per slice:
        the framed plane, its labels in the frame and what each structure kept."""
        scaled = percentile_to_uint8(volume)
        return [self.to_frame(pixels, in_slice, spacing) for pixels, in_slice in zip(scaled, labels, strict=True)]

    def resample(
        self, pixels: np.ndarray, labels: np.ndarray, spacing: tuple[float, float]
    ) -> tuple[np.ndarray, np.ndarray, tuple[float, float]]:
        """A slice on 1×1 mm pixels: the image bilinearly, the labels by nearest neighbour."""
        # INTER_NEAREST_EXACT samples at pixel centres like INTER_LINEAR; plain INTER_NEAREST is shifted
        resampled_labels = resample_slice(labels, spacing, cv2.INTER_NEAREST_EXACT)
        return resample_slice(pixels, spacing, cv2.INTER_LINEAR), resampled_labels, (TARGET_SPACING_MM,) * 2

    def frame_for_prediction(self, source: SourceImage) -> list[FramedPlane]:
        """A new volume framed as ``read_case`` frames the release's, every slice kept (the hook of
        ``bench.data.framing``)."""
        if source.spacing is None:
            raise BenchError(
                f"acdc resamples slices to 1×1 mm, but '{source.path}' has no pixel spacing; give a NIfTI, NRRD "
                "or MHA volume"
            )
        volume = np.stack(source.planes)
        return [plane for plane, _, _ in self.frame_volume(volume, np.ones(volume.shape, np.uint8), source.spacing)]

    def split_parts(self, ids: list[str], subjects: dict[str, str]) -> dict[str, list[str]]:
        parts: dict[str, list[str]] = {"train": [], "val": [], "test": []}
        for sample_id in ids:
            number = int(PATIENT_FOLDER.match(subjects[sample_id]).group(1))  # type: ignore[union-attr]
            if number > LAST_TRAINING_PATIENT:
                parts["test"].append(sample_id)
            elif number in VAL_PATIENTS:
                parts["val"].append(sample_id)
            else:
                parts["train"].append(sample_id)
        return parts
