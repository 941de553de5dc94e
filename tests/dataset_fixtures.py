"""Small files in the own layout of every registered dataset, for the dataset contract
(tests/test_dataset_contract.py): a dataset registered without a layout here fails that test.

Each ``Layout`` writes a handful of tiny cases under a root folder, names the dataset they are loaded by, points
at the file a loaded sample was read from (so that a new image can be framed as the dataset frames its own), and,
for a user dataset, changes its content (so that its identity must change).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2

from bench.data.samples import Sample
from tests.own_data_fixtures import write_decathlon, write_image_folder, write_nnunet_2d
from tests.release_fixtures import (
    ACDC_SPACING,
    cine,
    small_echo,
    write_acdc_patient,
    write_camus_patient,
    write_hc18_release,
)

CASES = 10  # enough for a seeded 70/10/20 split to leave every part one case at least
CAMUS_SPACING = (0.3, 0.15)  # (row_mm, col_mm): anisotropic, as the release is
ACDC_PATIENTS = (1, 2, 3, 12, 101)  # training, validation (012) and testing (101) patients of the fixed split


@dataclass(frozen=True)
class Layout:
    """One dataset's small files: how to write them, and where the contract test finds what it checks."""

    id: str
    write: Callable[[Path], str]  # writes the files under a root; returns the name the dataset is loaded by
    # the file a loaded sample was read from and its plane in it (the slice of a volume); None for a dataset that
    # frames no new images (no frame_for_prediction)
    source: Callable[[Path, Sample], tuple[Path, int]] | None
    change: Callable[[Path], None] | None = None  # a user dataset: one case removed, so its identity must change


def slice_index(sample: Sample) -> int:
    """The plane of a volume's slice, from its id (``<case>_s<index>``)."""
    return int(sample.id.rsplit("_s", 1)[1])


def written_image(root: Path, sample: Sample) -> tuple[Path, int]:
    """A dataset with no files of its own: the sample's image written as the new image."""
    path = root / f"{sample.id}.png"
    cv2.imwrite(str(path), sample.image)
    return path, 0


def hc18(name: str) -> Layout:
    def write(root: Path) -> str:
        write_hc18_release(root, count=CASES)
        return name

    return Layout(name, write, lambda root, sample: (root / "hc18" / "training_set" / f"{sample.id}.png", 0))


def camus(name: str) -> Layout:
    def write(root: Path) -> str:
        for number in range(1, CASES + 1):
            write_camus_patient(root, number, *small_echo(number), CAMUS_SPACING)
        return name

    def source(root: Path, sample: Sample) -> tuple[Path, int]:
        return root / "camus" / "database_nifti" / sample.id / f"{sample.id}_2CH_ED.nii.gz", 0

    return Layout(name, write, source)


def write_acdc(root: Path) -> str:
    for number in ACDC_PATIENTS:
        write_acdc_patient(root, number, {1: cine(number)}, ed=1, spacing=ACDC_SPACING)
    return "acdc"


def acdc_source(root: Path, sample: Sample) -> tuple[Path, int]:
    (volume,) = root.glob(f"acdc/*/{sample.subject}/{sample.subject}_frame01.nii.gz")
    return volume, slice_index(sample)


def write_nnunet(root: Path) -> str:
    return f"nnunet:{write_nnunet_2d(root, cases=CASES).name}"


def nnunet_source(root: Path, sample: Sample) -> tuple[Path, int]:
    return root / "Dataset123_Toy" / "imagesTr" / f"{sample.id}_0000.png", 0


def remove_nnunet_case(root: Path) -> None:
    (root / "Dataset123_Toy" / "imagesTr" / "case009_0000.png").unlink()
    (root / "Dataset123_Toy" / "labelsTr" / "case009.png").unlink()


def write_task(root: Path) -> str:
    return f"nnunet:{write_decathlon(root, cases=6).name}"


def decathlon_source(root: Path, sample: Sample) -> tuple[Path, int]:
    """A Decathlon image holds every modality on a 4th axis; a new scan is one modality: channel 0's volume."""
    import SimpleITK as sitk

    image = sitk.ReadImage(str(root / "Task09_Toy" / "imagesTr" / f"{sample.subject}.nii.gz"))
    path = root / f"{sample.subject}.nii.gz"
    sitk.WriteImage(sitk.Extract(image, (*image.GetSize()[:3], 0), (0, 0, 0, 0)), str(path))
    return path, slice_index(sample)


def remove_decathlon_case(root: Path) -> None:
    description = root / "Task09_Toy" / "dataset.json"
    payload = json.loads(description.read_text())
    payload["training"] = payload["training"][:-1]
    description.write_text(json.dumps(payload))


def write_folder(root: Path) -> str:
    return f"folder:{write_image_folder(root, count=CASES).name}"


def folder_source(root: Path, sample: Sample) -> tuple[Path, int]:
    return root / "mydiscs" / "images" / f"{sample.id}.png", 0


def remove_folder_case(root: Path) -> None:
    (root / "mydiscs" / "images" / "img09.png").unlink()
    (root / "mydiscs" / "masks" / "img09.png").unlink()


LAYOUTS: dict[str, tuple[Layout, ...]] = {
    "synthetic": (Layout("synthetic", lambda root: "synthetic", written_image),),
    # shipped with the package, already preprocessed: it frames no new images
    "hc18-demo": (Layout("hc18-demo", lambda root: "hc18-demo", None),),
    "hc18": (hc18("hc18"),),
    "hc18-whole": (hc18("hc18-whole"),),
    "camus": (camus("camus"),),
    "camus-whole": (camus("camus-whole"),),
    "acdc": (Layout("acdc", write_acdc, acdc_source),),
    "nnunet": (
        Layout("nnunet-v2", write_nnunet, nnunet_source, remove_nnunet_case),
        Layout("nnunet-decathlon", write_task, decathlon_source, remove_decathlon_case),
    ),
    "folder": (Layout("folder", write_folder, folder_source, remove_folder_case),),
}
