"""What the paper's fixed frames cut from the structures, and the whole-structure variants that cut nothing.

Tiny releases in the real formats: CAMUS (NIfTI and MetaImage) with a left atrium reaching past the 512×512
crop, HC18 with heads reaching past the 640×640 crop. The kept fractions `bench data check` prints are
checked against the crop arithmetic done here, and the `-whole` variants against the source in mm.
"""

from __future__ import annotations

import math
import re

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from bench.cli import app
from bench.data import samples as data
from bench.data.dataset import load_task
from bench.data.resolved import DatasetPlugins
from bench.datasets.hc18 import OUTSIDE_CROP, fill_outline
from bench.records.spec import RunSpec
from bench.run.runner import run_one
from bench.run.settings import GridSettings
from tests.release_fixtures import write_camus_patient, write_hc18_release

runner = CliRunner()

CAMUS_SPACING = (0.15, 0.3)  # (row_mm, col_mm): the release's axial rows are finer than its lateral columns
CAMUS_PATIENTS = range(1, 11)
TALL_PATIENT = 10  # 1200 rows = 180 mm: does not fit 512 px even at the coarser axis' 0.3 mm
LA_TOP = 560


def check_output(dataset: str, root) -> str:
    result = runner.invoke(app, ["data", "check", dataset, "--data-root", str(root)])
    assert result.exit_code == 0, result.output
    return result.output


def percent(fraction: float) -> str:
    """As `bench data check` prints a share: rounded down to 0.1 %."""
    return f"{math.floor(round(fraction * 1000, 6)) / 10:.1f} %"


def echo(number: int) -> tuple[np.ndarray, np.ndarray]:
    """A 2CH image whose LA (3) ends ``10 * number`` rows below row 640, and the rows above the labels: the
    800-row images are centre-cropped to rows 144–655, so the LA of patient 1 fits and the others lose
    more and more of it. The tall patient's image has 200 more rows above and below, and so the same crop."""
    offset = 200 if number == TALL_PATIENT else 0
    rng = np.random.default_rng(number)
    labels = np.zeros((800 + 2 * offset, 300), np.uint8)
    labels[offset + 150 : offset + 420, 90:210] = 2
    labels[offset + 170 : offset + 400, 110:190] = 1
    labels[offset + LA_TOP : offset + 640 + 10 * number, 120:180] = 3
    image = rng.gamma(2.0, 40.0, size=labels.shape).astype(np.float32)
    image[labels == 1] *= 0.3
    return image, labels


def la_kept(number: int) -> float:
    """The share of the LA's rows inside the crop, counted here from the layout of ``echo``."""
    inside = min(656, 640 + 10 * number) - LA_TOP
    return inside / (640 + 10 * number - LA_TOP)


@pytest.fixture(scope="module")
def camus_releases(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("camus")
    for fmt in ("nifti", "mhd"):
        for number in CAMUS_PATIENTS:
            image, labels = echo(number)
            write_camus_patient(root / fmt, number, image, labels, CAMUS_SPACING, fmt=fmt)
    return root


@pytest.mark.parametrize("fmt", ["nifti", "mhd"])
def test_camus_check_reports_what_the_paper_crop_cuts_from_the_la(camus_releases, fmt):
    output = check_output("camus", camus_releases / fmt)
    kept = np.array([la_kept(number) for number in CAMUS_PATIENTS])
    cut, lost = kept < 1, kept < 0.9
    assert cut.sum() == 9 and lost.sum() == 8
    assert (
        f"la: 9 of 10 images cut; kept min {percent(kept.min())}, median {percent(np.median(kept))} "
        f"({percent(np.median(kept[cut]))} over the cut ones)"
    ) in output
    lost_ids = ", ".join(f"patient{number:04d}" for number in CAMUS_PATIENTS if la_kept(number) < 0.9)
    assert f"la: 8 lost more than 10%: {lost_ids}" in output
    assert "lv: none of 10 images cut (100 % kept)" in output
    assert "resampled: 0 of 10 images" in output


@pytest.mark.parametrize("fmt", ["nifti", "mhd"])
def test_camus_whole_keeps_every_labelled_pixel_at_isotropic_spacing(camus_releases, fmt, monkeypatch):
    output = check_output("camus-whole", camus_releases / fmt)
    assert "la: none of 10 images cut (100 % kept)" in output and "lv: none of 10 images cut" in output
    assert "resampled: 10 of 10 images" in output
    tasks = {task: load_task("camus-whole", task, camus_releases / fmt) for task in ("la", "lv")}
    paper = load_task("camus", "la", camus_releases / fmt)
    assert [[s.id for s in getattr(tasks["la"], part)] for part in ("train", "val", "test")] == [
        [s.id for s in getattr(paper, part)] for part in ("train", "val", "test")
    ]
    for number in CAMUS_PATIENTS:
        _, labels = echo(number)
        source_mm = np.array(labels.shape) * CAMUS_SPACING
        if number == TALL_PATIENT:  # 180 mm of rows are made to fit 512 px: 0.352 mm; 90 mm of cols → 256 px
            expected = (180 / 512, 90 / 256)
        else:  # the coarser axis' 0.3 mm: 800 rows → 400, 300 columns unchanged
            expected = (0.3, 0.3)
        for task, value in (("la", 3), ("lv", 1)):
            sample = {s.id: s for part in ("train", "val", "test") for s in getattr(tasks[task], part)}[
                f"patient{number:04d}"
            ]
            assert sample.spacing == pytest.approx(expected, rel=1e-6)
            assert sample.image.shape == sample.mask.shape == (512, 512)
            truth = labels == value
            # the whole structure is there: its area and its extent along each axis, in mm
            area_mm2 = sample.mask.sum() * np.prod(sample.spacing)
            assert area_mm2 == pytest.approx(truth.sum() * np.prod(CAMUS_SPACING), rel=0.03)
            for axis in (0, 1):
                have = np.flatnonzero(sample.mask.any(axis=1 - axis))
                want = np.flatnonzero(truth.any(axis=1 - axis))
                have_mm = (have[-1] - have[0] + 1) * sample.spacing[axis]
                want_mm = (want[-1] - want[0] + 1) * CAMUS_SPACING[axis]
                assert abs(have_mm - want_mm) <= sample.spacing[axis] + 1e-9
            # nothing was cut off: the structure stays clear of the frame's edges, and the image is padded
            rows, cols = np.flatnonzero(sample.mask.any(axis=1)), np.flatnonzero(sample.mask.any(axis=0))
            assert rows[0] > 0 and cols[0] > 0 and rows[-1] < 511 and cols[-1] < 511
            scaled_mm = np.array(sample.spacing) * 512
            assert np.all(scaled_mm >= source_mm - 1e-6)
        assert tasks["la"].info["structure_kept"]["release"]["cut"] == 0


def test_camus_layouts_give_the_same_whole_samples(camus_releases):
    nifti, mhd = (load_task("camus-whole", "la", camus_releases / fmt) for fmt in ("nifti", "mhd"))
    for cached, other in zip(nifti.test + nifti.train, mhd.test + mhd.train, strict=True):
        assert cached.id == other.id and np.array_equal(cached.mask, other.mask)
        assert np.array_equal(cached.image, other.image)
        assert cached.spacing == pytest.approx(other.spacing, rel=1e-6)


# --- HC18 ---------------------------------------------------------------------------------------------

HC18_SHAPE = (300, 800)  # the real images are 540×800: the 640 crop keeps columns 80–719
HEADS = {
    2: ((120, 150), (90, 60)),  # columns 30–210: the crop cuts its left side
    5: ((150, 150), (90, 60)),  # columns 60–240: a sliver cut
    8: ((690, 150), (100, 70)),  # columns 590–790: the right side cut
    9: ((40, 150), (25, 20)),  # columns 15–65: wholly outside the crop, so the paper leaves it out
}


@pytest.fixture
def hc18_release(tmp_path):
    write_hc18_release(tmp_path, count=10, shape=HC18_SHAPE, heads=HEADS)
    return tmp_path


def source_mask(root, subject: int) -> np.ndarray:
    outline = cv2.imread(str(root / f"hc18/training_set/{subject:03d}_HC_Annotation.png"), cv2.IMREAD_GRAYSCALE)
    return fill_outline(outline)


def test_hc18_check_reports_the_heads_the_paper_crop_cuts(hc18_release):
    output = check_output("hc18", hc18_release)
    kept = {}
    for subject in range(9):
        mask = source_mask(hc18_release, subject)
        kept[subject] = mask[:, 80:720].sum() / mask.sum()
    cut = {subject: share for subject, share in kept.items() if share < 1}
    assert sorted(cut) == [2, 5, 8]  # the layout above does what it says
    values = np.array(list(kept.values()))
    assert (
        f"head: 3 of 9 images cut; kept min {percent(values.min())}, median 100.0 % "
        f"({percent(np.median(list(cut.values())))} over the cut ones)"
    ) in output
    lost = [f"{subject:03d}_HC" for subject, share in cut.items() if share < 0.9]
    assert lost and f"head: {len(lost)} lost more than 10%: {', '.join(lost)}" in output
    assert f"1 {OUTSIDE_CROP}: 009_HC" in output


def test_hc18_whole_shrinks_only_the_cut_heads_and_shares_the_split(hc18_release):
    with pytest.warns(UserWarning, match=r"1 images usable only under this preprocessing \(e\.g\. 009_HC\)"):
        whole = load_task("hc18-whole", "head", hc18_release)  # loaded first: the split comes from hc18
    paper = load_task("hc18", "head", hc18_release)
    for part in ("train", "val", "test"):
        assert [s.id for s in getattr(whole, part)] == [s.id for s in getattr(paper, part)]
    assert whole.split_of == "hc18" and paper.split_of is None
    assert data.support_ids(whole, 3, 0) == data.support_ids(paper, 3, 0)  # the same support draws too
    assert whole.info["split_file"] == paper.info["split_file"]
    assert whole.info["cache_file"] != paper.info["cache_file"]
    paper_samples = {s.id: s for s in paper.train + paper.val + paper.test}
    for sample in whole.train + whole.val + whole.test:
        subject = int(sample.id[:3])
        pixel_size = 0.1 + subject / 100
        truth = source_mask(hc18_release, subject)
        if subject not in HEADS:  # nothing to cut: exactly the paper's preprocessing
            assert sample.spacing == (pixel_size, pixel_size)
            assert np.array_equal(sample.image, paper_samples[sample.id].image)
            assert np.array_equal(sample.mask, paper_samples[sample.id].mask)
            continue
        # shrunk to fit: 800 columns → 640, 300 rows → 240, so a pixel is 1.25 times as wide and high
        assert sample.spacing == pytest.approx((pixel_size * 1.25, pixel_size * 1.25))
        assert sample.mask.sum() * 1.25**2 == pytest.approx(truth.sum(), rel=0.03)
        cols = np.flatnonzero(sample.mask.any(axis=0))
        truth_cols = np.flatnonzero(truth.any(axis=0))
        assert cols[0] * 1.25 == pytest.approx(truth_cols[0], abs=1.5)  # left edge where it was, in mm
        assert cols[-1] * 1.25 == pytest.approx(truth_cols[-1], abs=1.5)
        rows = np.flatnonzero(sample.image.any(axis=1))
        assert (rows[0], rows[-1]) == (200, 439)  # 240 image rows padded into 640
    output = check_output("hc18-whole", hc18_release)
    # 009_HC, whole only here, is counted among the usable images but scored in neither variant
    assert "head: none of 10 images cut (100 % kept)" in output and "resampled: 4 of 10 images" in output
    assert re.search(r"split: +train 6, val 1, test 2", output)


def test_records_carry_the_preprocessing_and_what_it_kept(hc18_release, fake_methods, tmp_path):
    spec = RunSpec(method="fake-boxfill", dataset="hc18", task="head", labels="box", shots=None, draw=0,
                   seed=0, budget="quick")  # fmt: skip
    record = run_one(spec, GridSettings(tmp_path / "results", "exp", DatasetPlugins(hc18_release)))
    assert record["status"] == "ok", record.get("traceback")
    info = record["dataset_info"]
    assert info["preprocessing"].startswith("paper: centre crop/pad to 640×640")
    task = load_task("hc18", "head", hc18_release)
    test_ids = [s.id for s in task.test]
    assert info["structure_kept"]["test"]["images"] == len(test_ids) == len(record["cases"])
    release = info["structure_kept"]["release"]
    assert (release["images"], release["cut"]) == (9, 3)
    cut_in_test = [f"{s:03d}_HC" for s in (2, 5, 8) if f"{s:03d}_HC" in test_ids]
    assert info["structure_kept"]["test"]["cut"] == len(cut_in_test)
