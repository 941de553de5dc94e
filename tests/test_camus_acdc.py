"""CAMUS and ACDC loaders on tiny releases written in their own formats (NIfTI, MHD/RAW, Info.cfg)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console
from scipy import ndimage

from bench.data.check import check
from bench.data.dataset import load_task
from bench.data.release import READ_FAILURE, UNEXPECTED_LABELS
from bench.errors import BenchError
from bench.metrics import case_metrics
from tests.release_fixtures import ACDC_SPACING, cine, write_acdc_patient, write_camus_patient

CAMUS_SPACING = (0.3, 0.15)  # (row_mm, col_mm), deliberately anisotropic to catch a swapped axis


def echo(number: int, shape: tuple[int, int] = (600, 400)) -> tuple[np.ndarray, np.ndarray]:
    """A speckled image with LV (1), myocardium (2) and LA (3) blocks at patient-specific offsets."""
    rng = np.random.default_rng(number)
    image = rng.gamma(2.0, 40.0, size=shape).astype(np.float32)
    labels = np.zeros(shape, np.uint8)
    shift = number * 3
    labels[240 + shift : 350 + shift, 140:250] = 2
    labels[250 + shift : 340 + shift, 150:240] = 1
    labels[360 + shift : 440 + shift, 160:230] = 3
    image[labels == 1] *= 0.3
    return image, labels


def expected_uint8(image: np.ndarray) -> np.ndarray:
    """The paper's intensity normalisation, written out independently of bench.data.samples."""
    low, high = np.percentile(image, [0.5, 99.5])
    return np.round((np.clip(image, low, high) - low) / (high - low) * 255).astype(np.uint8)


def all_samples(task) -> dict:
    return {sample.id: sample for sample in task.train + task.val + task.test}


def test_camus_nifti_crop_pad_filters_labels_and_patient_split(tmp_path):
    for number in range(1, 11):
        image, labels = echo(number)
        if number == 4:
            labels[labels == 3] = 0  # no left atrium: filtered out
        if number == 7:
            labels[0, 0] = 5  # a value CAMUS never uses
        write_camus_patient(tmp_path, number, image, labels, CAMUS_SPACING)
    with pytest.warns(UserWarning, match=r"patient0007_2CH_ED_gt\.nii\.gz.*label values 5"):
        lv = load_task("camus", "lv", tmp_path)
        la = load_task("camus", "la", tmp_path)  # served from the cache
    samples = all_samples(lv)
    assert sorted(samples) == [f"patient{n:04d}" for n in (1, 2, 3, 5, 6, 8, 9, 10)]
    assert (len(lv.train), len(lv.val), len(lv.test)) == (6, 1, 1)
    parts = [{s.subject for s in part} for part in (lv.train, lv.val, lv.test)]
    assert not (parts[0] & parts[1] or parts[0] & parts[2] or parts[1] & parts[2])
    assert lv.info["excluded"] == {"not all of LV, myocardium and LA labelled": 1, UNEXPECTED_LABELS: 1}

    image, labels = echo(2)
    sample = samples["patient0002"]
    assert sample.image.shape == (512, 512) and sample.image.dtype == np.uint8
    assert sample.spacing == pytest.approx(CAMUS_SPACING)  # no resampling: the file's own spacing, rows first
    # 600 rows are centre-cropped by 44 on each side; 400 columns are padded by 56 on each side
    assert np.array_equal(sample.image[:, 56:456], expected_uint8(image)[44:556])
    assert not sample.image[:, :56].any() and not sample.image[:, 456:].any()
    rows, cols = np.nonzero(sample.mask)
    assert (rows.min(), rows.max(), cols.min(), cols.max()) == (
        250 + 6 - 44,
        339 + 6 - 44,
        150 + 56,
        239 + 56,
    )
    assert np.array_equal(all_samples(la)["patient0002"].mask[:, 56:456], (labels == 3)[44:556])


def test_camus_mhd_release_reads_like_the_nifti_one(tmp_path):
    for fmt in ("nifti", "mhd"):
        for number in range(1, 11):
            write_camus_patient(tmp_path / fmt, number, *echo(number, (500, 560)), CAMUS_SPACING, fmt=fmt)
    assert (tmp_path / "mhd/camus/training/patient0001/patient0001_2CH_ED.raw").is_file()
    nifti = all_samples(load_task("camus", "lv", tmp_path / "nifti"))
    mhd = all_samples(load_task("camus", "lv", tmp_path / "mhd"))
    assert sorted(nifti) == sorted(mhd) and len(mhd) == 10
    for sample_id, sample in mhd.items():
        assert np.array_equal(sample.image, nifti[sample_id].image)
        assert np.array_equal(sample.mask, nifti[sample_id].mask)
        # NIfTI keeps spacings as float32, MetaImage as text: equal up to float32 precision
        assert sample.spacing == pytest.approx(CAMUS_SPACING) == nifti[sample_id].spacing


def test_camus_missing_release_says_where_and_what(tmp_path):
    (tmp_path / "camus").mkdir()
    with pytest.raises(BenchError, match=r"CAMUS \(camus\): no patientXXXX folders under .*database_nifti"):
        load_task("camus", "la", tmp_path)


def test_acdc_resamples_to_1mm_pads_and_filters_slices(tmp_path):
    volume, labels = cine(1)
    write_acdc_patient(tmp_path, 1, {1: (volume, labels)}, ed=1, spacing=ACDC_SPACING)
    write_acdc_patient(tmp_path, 12, {1: cine(12)}, ed=1, spacing=ACDC_SPACING)
    write_acdc_patient(tmp_path, 101, {1: cine(101)}, ed=1, spacing=ACDC_SPACING)
    task = load_task("acdc", "lv", tmp_path)
    samples = all_samples(task)
    assert sorted(samples) == [f"patient{n}_s0{z}" for n in ("001", "012", "101") for z in (0, 1)]
    assert task.info["excluded"] == {"slice without all of RV, myocardium and LV (≥10 px each)": 3}
    sample = samples["patient001_s00"]
    assert (
        sample.image.shape == (256, 256) and sample.image.dtype == np.uint8 and sample.spacing == (1.0, 1.0)
    )
    # 40 rows × 2 mm → 80 px and 36 cols × 1.5 mm → 54 px, padded to 256: the field of view in mm is kept
    top, left = (256 - 80) // 2, (256 - 54) // 2
    assert np.array_equal(np.flatnonzero(sample.image.any(axis=1)), np.arange(top, top + 80))
    assert np.array_equal(np.flatnonzero(sample.image.any(axis=0)), np.arange(left, left + 54))
    rows, cols = np.nonzero(sample.mask)
    assert rows.max() - rows.min() + 1 == 36 and cols.max() - cols.min() + 1 == 18  # 36 mm × 18 mm
    centre = np.array(ndimage.center_of_mass(sample.mask)) - (top, left)
    source_centre = np.array(ndimage.center_of_mass(labels[0] == 3)) + 0.5  # voxel centres, in voxels
    assert np.allclose(centre + 0.5, source_centre * ACDC_SPACING[:2], atol=0.6)
    rv = all_samples(load_task("acdc", "rv", tmp_path))["patient001_s00"].mask
    assert rv.sum() == pytest.approx((labels[0] == 1).sum() * 3.0, rel=0.1)  # 3 mm² per voxel


def test_acdc_uses_the_ed_frame_scales_per_volume_and_splits_by_patient(tmp_path):
    empty = np.zeros((3, 40, 36), np.uint8)
    # patient 012's ED is frame 2; its frame 1 has no labels, so reading the wrong frame keeps nothing
    frames = {1: (cine(12)[0], empty), 2: cine(12, (0.05, 1.0, 1.0))}
    write_acdc_patient(tmp_path, 12, frames, ed=2, spacing=ACDC_SPACING)
    write_acdc_patient(tmp_path, 3, {1: cine(3)}, ed=1, spacing=ACDC_SPACING)
    write_acdc_patient(tmp_path, 150, {1: cine(150)}, ed=1, spacing=ACDC_SPACING)
    task = load_task("acdc", "rv", tmp_path)
    by_split = {name: {s.subject for s in getattr(task, name)} for name in ("train", "val", "test")}
    assert by_split == {"train": {"patient003"}, "val": {"patient012"}, "test": {"patient150"}}
    samples = all_samples(task)
    # one percentile window for the whole volume: the dimmed slice stays dark, the others stay bright
    assert samples["patient012_s00"].image.max() < 40 and samples["patient012_s01"].image.max() > 200
    split = json.loads(Path(task.info["split_file"]).read_text())
    assert split["val"] == ["patient012_s00", "patient012_s01"]


def test_acdc_broken_files_are_skipped_with_their_names(tmp_path):
    write_acdc_patient(tmp_path, 1, {1: cine(1)}, ed=1, spacing=ACDC_SPACING)
    volume, labels = cine(2)
    labels[0, 0, 0] = 4
    write_acdc_patient(tmp_path, 2, {1: (volume, labels)}, ed=1, spacing=ACDC_SPACING)
    broken = write_acdc_patient(tmp_path, 3, {1: cine(3)}, ed=1, spacing=ACDC_SPACING)
    (broken / "patient003_frame01.nii.gz").write_bytes(b"\x1f\x8b not really gzip")
    no_ed = write_acdc_patient(tmp_path, 5, {1: cine(5)}, ed=1, spacing=ACDC_SPACING)
    (no_ed / "Info.cfg").write_text("ES: 1\n")
    write_acdc_patient(tmp_path, 101, {1: cine(101)}, ed=1, spacing=ACDC_SPACING)
    write_acdc_patient(tmp_path, 12, {1: cine(12)}, ed=1, spacing=ACDC_SPACING)
    with pytest.warns(UserWarning) as caught:
        task = load_task("acdc", "lv", tmp_path)
    messages = "\n".join(str(warning.message) for warning in caught)
    assert "patient002_frame01_gt.nii.gz: label values 4" in messages
    assert "patient003" in messages and "patient005/Info.cfg: has no 'ED: <frame>' line" in messages
    assert {s.subject for s in task.train} == {"patient001"}
    assert task.info["excluded"][UNEXPECTED_LABELS] == 1 and task.info["excluded"][READ_FAILURE] == 2


def test_acdc_names_a_patient_folder_without_info_cfg(tmp_path):
    for number in (1, 12, 101):
        write_acdc_patient(tmp_path, number, {1: cine(number)}, ed=1, spacing=ACDC_SPACING)
    no_info = write_acdc_patient(tmp_path, 5, {1: cine(5)}, ed=1, spacing=ACDC_SPACING)
    (no_info / "Info.cfg").unlink()
    with pytest.warns(UserWarning, match=r"skipped training/patient005/Info\.cfg: missing"):
        task = load_task("acdc", "lv", tmp_path)
    assert {s.subject for s in task.train + task.val + task.test} == {"patient001", "patient012", "patient101"}
    assert task.info["found"] == 4 and task.info["excluded"][READ_FAILURE] == 1
    console = Console(file=io.StringIO(), width=200)
    with pytest.warns(UserWarning, match="patient005"):
        check("acdc", tmp_path, console)
    output = console.file.getvalue()
    assert "found:     4 patientNNN folders" in output
    assert "1 unreadable: training/patient005/Info.cfg: missing (it names the end-diastole frame)" in output


@pytest.mark.parametrize("fmt", ["nifti", "mhd"])
def test_anisotropic_spacing_reaches_the_sample_and_hd95_in_row_col_order(tmp_path, fmt):
    """The release's own anisotropy (0.154 mm rows, 0.308 mm columns): MetaImage lists ElementSpacing x
    first, NIfTI stores x first, and both must come out as (row_mm, col_mm)."""
    spacing = (0.154, 0.308)
    for number in range(1, 11):
        write_camus_patient(tmp_path, number, *echo(number), spacing, fmt=fmt)
    samples = all_samples(load_task("camus", "lv", tmp_path))
    assert len(samples) == 10
    for sample in samples.values():
        assert sample.spacing == pytest.approx(spacing)
    sample = samples["patient0002"]
    shift = 5
    # a square LV moved down by 5 rows is 5 × 0.154 mm off; moved right by 5 columns, 5 × 0.308 mm
    down = np.roll(sample.mask, shift, axis=0).astype(np.float32)
    right = np.roll(sample.mask, shift, axis=1).astype(np.float32)
    assert case_metrics(sample.id, down, sample.mask, sample.spacing).hd95 == pytest.approx(shift * spacing[0])
    assert case_metrics(sample.id, right, sample.mask, sample.spacing).hd95 == pytest.approx(shift * spacing[1])
