"""The `nnunet` plugin on real volumes: a few ACDC patients rewritten into the nnU-Net v2 layout must yield, per
patient and task, exactly the release's slices whose structure has ≥ 10 pixels, with the release's masks and
in-plane spacing. Skipped when the shared ACDC copy is absent."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from bench.data.dataset import dataset_plugin

ACDC = Path(__file__).resolve().parents[2] / "shared" / "data" / "acdc"
PATIENTS = ("patient001", "patient042", "patient101")
TASKS = {"RV": 1, "myocardium": 2, "LV": 3}

pytestmark = pytest.mark.skipif(not ACDC.is_dir(), reason="the shared ACDC copy is not here")


def ed_files(patient: str) -> tuple[Path, Path]:
    folder = next(ACDC.glob(f"*/{patient}"))
    info = (folder / "Info.cfg").read_text().splitlines()
    frame = int(next(line for line in info if line.startswith("ED")).split(":")[1])
    return folder / f"{patient}_frame{frame:02d}.nii.gz", folder / f"{patient}_frame{frame:02d}_gt.nii.gz"


def write_nnunet(root: Path) -> Path:
    """The ED frames of ``PATIENTS`` as nnU-Net v2's Dataset900_ACDC: the release's own files, renamed."""
    folder = root / "Dataset900_ACDC"
    for sub in ("imagesTr", "labelsTr"):
        (folder / sub).mkdir(parents=True)
    for patient in PATIENTS:
        image, label = ed_files(patient)
        shutil.copy(image, folder / "imagesTr" / f"{patient}_0000.nii.gz")
        shutil.copy(label, folder / "labelsTr" / f"{patient}.nii.gz")
    description = {"channel_names": {"0": "cineMRI"}, "labels": {"background": 0, **TASKS},
                   "numTraining": len(PATIENTS), "file_ending": ".nii.gz"}  # fmt: skip
    (folder / "dataset.json").write_text(json.dumps(description))
    return folder


def test_nnunet_slices_are_the_releases(tmp_path: Path, isolated_cache: Path) -> None:
    folder = write_nnunet(tmp_path)
    plugin = dataset_plugin(f"nnunet:{folder.name}", tmp_path)
    assert plugin.tasks == tuple(TASKS)
    for task, value in TASKS.items():
        loaded = plugin.load(task)
        samples = {s.id: s for split in ("train", "val", "test") for s in getattr(loaded, split)}
        for patient in PATIENTS:
            image_path, label_path = ed_files(patient)
            truth = np.asarray(nib.load(label_path).dataobj)  # x, y, z
            zooms = nib.load(image_path).header.get_zooms()
            expected = {z for z in range(truth.shape[2]) if np.count_nonzero(truth[:, :, z] == value) >= 10}
            got = {int(i.rsplit("_s", 1)[1]) for i in samples if i.startswith(f"{patient}_s")}
            assert got == expected, (task, patient)
            for z in expected:
                sample = samples[f"{patient}_s{z:03d}"]
                np.testing.assert_array_equal(sample.mask, (truth[:, :, z] == value).T)  # rows along y
                assert sample.spacing == pytest.approx((zooms[1], zooms[0]))
                assert sample.subject == patient
