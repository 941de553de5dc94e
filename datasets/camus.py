"""`camus`: left ventricle and left atrium in 2-D echocardiography (CAMUS, Leclerc et al., IEEE TMI 2019).

One image per patient, as in the paper: the 2-chamber view at end-diastole. Both release formats are read:
the current NIfTI one (``database_nifti/patientXXXX/patientXXXX_2CH_ED.nii.gz`` and ``..._gt.nii.gz``) and
the original MetaImage one (``training/patientXXXX/patientXXXX_2CH_ED.mhd`` + ``.raw``). Labels: 1 LV
cavity, 2 myocardium, 3 left atrium. Preprocessing: percentile clip/rescale per image, centre-crop/pad to
512×512 with no resampling; only images showing all three structures are kept.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bench.data import center_crop_or_pad, percentile_to_uint8
from bench.registry import DATASETS
from bench.release import Case, ReleaseDataset, Slice, UnreadableFile, check_labels

SIZE = (512, 512)
LABELS = {1, 2, 3}
VIEW = "2CH_ED"
# Searched in this order; the first that holds patient folders is the release.
RELEASE_FOLDERS = ("database_nifti", "training", "")
FORMATS = (".nii.gz", ".mhd")
MISSING_STRUCTURE = "not all of LV, myocardium and LA labelled"
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


@DATASETS.register("camus")
class CAMUS(ReleaseDataset):
    name = "camus"
    display_name = "CAMUS"
    tasks = ("lv", "la")
    task_display = {"lv": "Left ventricle", "la": "Left atrium"}
    task_labels = {"lv": 1, "la": 3}
    preprocessing_version = 1
    case_kind = "patient folders"
    layout = (
        "<data_root>/camus/database_nifti/patientXXXX/patientXXXX_2CH_ED.nii.gz and "
        "patientXXXX_2CH_ED_gt.nii.gz "
        "(or the older <data_root>/camus/training/patientXXXX/patientXXXX_2CH_ED.mhd/.raw and _gt.mhd/.raw)"
    )
    homepage = "https://www.creatis.insa-lyon.fr/Challenge/camus/"
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
        labels = center_crop_or_pad(check_labels(labels, LABELS | {0}, label_path), SIZE)
        if not LABELS <= set(np.unique(labels).tolist()):
            return [], [(case.id, MISSING_STRUCTURE)]
        pixels = center_crop_or_pad(percentile_to_uint8(image), SIZE)
        return [Slice(case.id, case.subject, pixels, labels, spacing, image.shape, spacing)], []

