"""`camus`: left ventricle and left atrium in 2-D echocardiography (CAMUS, Leclerc et al., IEEE TMI 2019).

One image per patient, as in the paper: the 2-chamber view at end-diastole. Both release formats are read:
the current NIfTI one (``database_nifti/patientXXXX/patientXXXX_2CH_ED.nii.gz`` and ``..._gt.nii.gz``) and
the original MetaImage one (``training/patientXXXX/patientXXXX_2CH_ED.mhd`` + ``.raw``). Labels: 1 LV
cavity, 2 myocardium, 3 left atrium. Preprocessing: percentile clip/rescale per image, centre-crop/pad to
512×512 with no resampling; only images showing all three structures in the crop are kept.

The release's images are 0.154 mm per row but 0.308 mm per column and often over 512 rows tall, so the
paper's crop cuts the far end of the sector, where the left atrium lies. The ``camus-whole`` variant keeps
every structure whole: each image is resampled to isotropic pixels of the coarser of its two spacings (no
detail the file has along that axis is lost; the finer axis is averaged down), or coarser still where the
sector would not fit 512×512 even then, and padded. The frame never depends on the labels, so test images
are framed without looking at their ground truth. It reads the same release and shares the paper
variant's split.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bench.data.framing import SourceImage, frame_image, frame_release_image
from bench.data.inventory import Slice
from bench.data.planes import FramedPlane
from bench.data.release import Case, ReleaseDataset, UnreadableFile, check_labels
from bench.data.samples import (
    fitting_spacing,
    resampled_geometry,
    resize_image,
    resize_labels,
)
from bench.registry import DATASETS

SIZE = (512, 512)
LABELS = {1, 2, 3}
VIEW = "2CH_ED"
# Searched in this order; the first that holds patient folders is the release.
RELEASE_FOLDERS = ("database_nifti", "training", "")
FORMATS = (".nii.gz", ".mhd")
MISSING_STRUCTURE = "not all of LV, myocardium and LA labelled"
OUTSIDE_CROP = "not all of LV, myocardium and LA inside the 512×512 crop"
NO_GROUND_TRUTH = "no ground truth (_gt) file"


def read_image(path: Path) -> tuple[np.ndarray, tuple[float, float]]:
    """A 2-D image and its (row_mm, col_mm) spacing, from NIfTI or MetaImage alike.

    SimpleITK reads both formats the same way (array rows = the file's second axis), so the image and its
    spacing line up whichever format the release came in.
    """
    import SimpleITK as sitk

    image = sitk.ReadImage(str(path))
    array = sitk.GetArrayFromImage(image)
    spacing = image.GetSpacing()
    if array.ndim == 3 and array.shape[0] == 1:  # some conversions add a singleton third axis
        array = array[0]
    if array.ndim != 2:
        raise UnreadableFile(path, f"expected a 2-D image, found shape {array.shape}")
    return array, (float(spacing[1]), float(spacing[0]))


@DATASETS.register
class CAMUS(ReleaseDataset):
    fixed_release = True
    name = "camus"
    frame_size = SIZE
    display_name = "CAMUS"
    tasks = ("lv", "la")
    task_display = {"lv": "Left ventricle", "la": "Left atrium"}
    task_labels = {"lv": 1, "la": 3}
    preprocessing_version = 2  # 2: a structure the crop removes is its own exclusion reason
    preprocessing = "paper: centre crop/pad to 512×512 at the file's own (anisotropic) spacing"
    case_kind = "patient folders"
    layout = (
        "<data_root>/camus/database_nifti/patientXXXX/patientXXXX_2CH_ED.nii.gz and "
        "patientXXXX_2CH_ED_gt.nii.gz "
        "(or the older <data_root>/camus/training/patientXXXX/patientXXXX_2CH_ED.mhd/.raw and _gt.mhd/.raw)"
    )
    homepage = "https://humanheart-project.creatis.insa-lyon.fr/database/#collection/6373703d73e9f0047faa1bc8"
    # the paper's 350/50/100 patients of the 500 of the release; fractions, so a partial copy splits alike
    def find_cases(self) -> tuple[list[Case], list[str]]:
        for base in (self.folder / sub for sub in RELEASE_FOLDERS):
            patients = sorted(path for path in base.glob("patient*") if path.is_dir())
            if patients:
                break
        else:
            raise self.missing("no patientXXXX folders")
        cases = []
        for patient in patients:
            pid = patient.name
            files: tuple[Path, ...] = ()
            for suffix in FORMATS:
                image = patient / f"{pid}_{VIEW}{suffix}"
                if image.is_file():
                    label = patient / f"{pid}_{VIEW}_gt{suffix}"
                    files = (image, label) if label.is_file() else (image,)
                    break
            if files:
                cases.append(Case(pid, pid, files))
        notes = [f"read from {base.relative_to(self.folder).as_posix()}/, view {VIEW}"]
        return cases, notes

    def read_case(self, case: Case) -> tuple[list[Slice], list[tuple[str, str]]]:
        if len(case.files) < 2:
            return [], [(case.id, NO_GROUND_TRUTH)]
        image_path, label_path = case.files
        image, spacing = read_image(image_path)
        labels, _ = read_image(label_path)
        if labels.shape != image.shape:
            raise UnreadableFile(label_path, f"shape {labels.shape} differs from the image's {image.shape}")
        labels = check_labels(labels, LABELS | {0}, label_path)
        if not LABELS <= set(np.unique(labels).tolist()):
            return [], [(case.id, MISSING_STRUCTURE)]
        plane, labels_in_frame, kept = frame_image(self, image, labels, spacing)
        if not LABELS <= set(np.unique(labels_in_frame).tolist()):
            return [], [(case.id, OUTSIDE_CROP)]
        return [
            Slice(case.id, case.subject, plane.image, labels_in_frame, plane.spacing, image.shape, spacing, kept)
        ], []

    def frame_for_prediction(self, source: SourceImage) -> list[FramedPlane]:
        """A new image framed as ``read_case`` frames the release's (the hook of ``bench.data.framing``)."""
        return frame_release_image(self, source)


@DATASETS.register
class CAMUSWhole(CAMUS):
    """CAMUS with every structure whole: isotropic resampling so the sector fits 512×512, then padding."""

    name = "camus-whole"
    display_name = "CAMUS (whole)"
    variant_of = CAMUS
    preprocessing_version = 1
    preprocessing = (
        "whole: resampled to isotropic pixels of the coarser axis' spacing (coarser still where the image "
        "would not fit), area interpolation, then padded to 512×512"
    )

    def resample(
        self, pixels: np.ndarray, labels: np.ndarray, spacing: tuple[float, float]
    ) -> tuple[np.ndarray, np.ndarray, tuple[float, float]]:
        target = max(*spacing, fitting_spacing(labels.shape, spacing, SIZE))
        shape, resampled = resampled_geometry(labels.shape, spacing, target, SIZE)
        if shape == labels.shape:
            return pixels, labels, spacing
        return resize_image(pixels, shape), resize_labels(labels, shape), resampled

