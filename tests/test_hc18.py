"""HC18 loader: on the real release in ../shared (skipped when absent) and on tiny copies of its format."""

from __future__ import annotations

import csv
import json
import math
import stat
from pathlib import Path

import cv2
import numpy as np
import pytest
from scipy import ndimage

from bench.data.dataset import load_task
from bench.data.release import READ_FAILURE
from bench.datasets.hc18 import CSV_NAME, HC18, OPEN_OUTLINE, HC18Whole
from bench.errors import BenchError
from tests.release_fixtures import write_hc18_release

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
REAL = SHARED_DATA / "hc18"
needs_real = pytest.mark.skipif(not (REAL / CSV_NAME).is_file(), reason="real HC18 data not in ../shared")


@pytest.fixture(scope="module")
def real(tmp_path_factory: pytest.TempPathFactory):
    """The real HC18 part, preprocessed once for this module into its own cache folder."""
    cache = tmp_path_factory.mktemp("hc18-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("BENCH_CACHE", str(cache))
        plugin = HC18(SHARED_DATA)
        task = plugin.load("head")
    return plugin, task, cache


def csv_rows() -> dict[str, tuple[float, float]]:
    with (REAL / CSV_NAME).open(newline="") as stream:
        return {
            row["filename"]: (float(row["pixel size(mm)"]), float(row["head circumference (mm)"]))
            for row in csv.DictReader(stream)
        }


def ellipse_perimeter(mask: np.ndarray) -> float:
    """Perimeter (px) of the ellipse fitted to the mask's boundary, leaving out boundary points on the crop
    edge (where a head larger than 640 px was cut), by Ramanujan's second approximation."""
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    points = max(contours, key=cv2.contourArea)[:, 0, :]
    height, width = mask.shape
    cols, rows = points[:, 0], points[:, 1]
    inside = (cols > 0) & (cols < width - 1) & (rows > 0) & (rows < height - 1)
    _, (major, minor), _ = cv2.fitEllipse(points[inside].astype(np.float32))
    a, b = major / 2, minor / 2
    h = ((a - b) / (a + b)) ** 2
    return math.pi * (a + b) * (1 + 3 * h / (10 + math.sqrt(4 - 3 * h)))


@needs_real
def test_real_counts_split_and_types(real):
    plugin, task, _ = real
    inventory = plugin.inventory()
    assert inventory.found == 700  # the _HC images of the shared part; repeats are not cases
    assert sorted(inventory.excluded) == [("186_HC", OPEN_OUTLINE), ("346_HC", OPEN_OUTLINE)]
    samples = task.train + task.val + task.test
    assert len(samples) == 698
    for part, fraction in ((task.train, 0.7), (task.val, 0.1), (task.test, 0.2)):
        assert abs(len(part) / 698 - fraction) < 0.005
    subjects = [{s.subject for s in part} for part in (task.train, task.val, task.test)]
    assert not (subjects[0] & subjects[1] or subjects[0] & subjects[2] or subjects[1] & subjects[2])
    assert all(s.id.endswith("_HC") and "_2HC" not in s.id for s in samples)
    rows = csv_rows()
    for sample in samples:
        assert sample.image.shape == (640, 640) and sample.image.dtype == np.uint8
        assert sample.mask.shape == (640, 640) and sample.mask.dtype == bool
        pixel_size = rows[f"{sample.id}.png"][0]
        assert sample.spacing == (pixel_size, pixel_size)
    # the percentile rescale stretches every image to the full 0–255 range
    assert all(s.image.max() == 255 for s in samples[:50])


@needs_real
def test_real_masks_are_filled_ellipses_matching_the_csv_circumference(real):
    _, task, _ = real
    rows = csv_rows()
    errors = []
    for sample in task.train + task.val + task.test:
        _, components = ndimage.label(sample.mask)
        assert components == 1, sample.id
        assert np.array_equal(ndimage.binary_fill_holes(sample.mask), sample.mask), sample.id
        pixel_size, circumference = rows[f"{sample.id}.png"]
        errors.append(abs(ellipse_perimeter(sample.mask) * pixel_size / circumference - 1))
    errors = np.array(errors)
    assert np.mean(errors < 0.03) >= 0.97  # fill and spacing together reproduce the reference HC in mm
    assert np.median(errors) < 0.01


@needs_real
def test_real_second_load_comes_from_the_cache_and_split_is_stable(real, monkeypatch):
    plugin, task, cache = real
    monkeypatch.setenv("BENCH_CACHE", str(cache))
    again = HC18(SHARED_DATA)
    assert again.inventory().from_cache and not plugin.inventory().from_cache
    second = again.load("head")
    assert [s.id for s in second.test] == [s.id for s in task.test]
    for cached, fresh in zip(second.test, task.test, strict=True):
        assert np.array_equal(cached.image, fresh.image) and np.array_equal(cached.mask, fresh.mask)
    split_file = Path(second.info["split_file"])
    written = json.loads(split_file.read_text())
    split_file.unlink()
    assert json.loads(Path(HC18(SHARED_DATA).load("head").info["split_file"]).read_text()) == written
    if not REAL.stat().st_mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH):
        # a read-only shared copy: split and cache went to the user cache, nothing into the data folder
        assert split_file.is_relative_to(cache) and not (REAL / ".bench").exists()


def test_tiny_release_masks_splits_and_exclusions(tmp_path):
    write_hc18_release(tmp_path, count=10, open_outline=(3,))
    (tmp_path / "hc18" / "training_set" / "005_HC.png").write_bytes(b"not a png")
    with pytest.warns(UserWarning, match="005_HC.png"):
        task = load_task("hc18", "head", tmp_path)
    with pytest.warns(UserWarning, match="005_HC.png"):  # a cached load still names the broken file
        inventory = HC18(tmp_path).inventory()
    assert inventory.from_cache and inventory.found == 10
    reasons = dict((name.split(":")[0], reason) for name, reason in inventory.excluded)
    assert reasons == {"003_HC": OPEN_OUTLINE, "training_set/005_HC.png": READ_FAILURE}
    assert (len(task.train), len(task.val), len(task.test)) == (6, 1, 1)
    sample = {s.id: s for s in task.train + task.val + task.test}["000_HC"]
    # the mask is the inside of the drawn outline: same centre, and its size is the ellipse's
    outline = cv2.imread(str(tmp_path / "hc18/training_set/000_HC_Annotation.png"), cv2.IMREAD_GRAYSCALE)
    inside = ndimage.binary_fill_holes(outline > 0) & (outline == 0)
    top, left = (640 - outline.shape[0]) // 2, (640 - outline.shape[1]) // 2
    expected = np.zeros((640, 640), bool)
    expected[top : top + outline.shape[0], left : left + outline.shape[1]] = inside
    assert (expected & ~sample.mask).sum() == 0  # every interior pixel is in the mask …
    assert (sample.mask & ~expected).sum() < 0.15 * expected.sum()  # … plus only the line's inner edge
    assert sample.spacing == (0.1, 0.1)
    # nothing but the tool's own subfolder was written into the (writable) release folder
    assert {p.name for p in (tmp_path / "hc18").iterdir()} == {".bench", CSV_NAME, "training_set"}
    assert (tmp_path / "hc18" / ".bench" / "split.json").is_file()


def test_split_file_is_written_once_and_read_back(tmp_path):
    write_hc18_release(tmp_path, count=10)
    HC18(tmp_path).load("head")
    split_file = tmp_path / "hc18" / ".bench" / "split.json"
    payload = json.loads(split_file.read_text())
    moved = payload["train"].pop()
    payload["test"].append(moved)
    split_file.write_text(json.dumps(payload))
    task = HC18(tmp_path).load("head")
    assert moved in {s.id for s in task.test}


def test_new_preprocessing_version_makes_a_new_cache(tmp_path, monkeypatch):
    write_hc18_release(tmp_path, count=10)
    first = HC18(tmp_path).inventory()
    assert not first.from_cache and first.cache_file.exists()
    assert HC18(tmp_path).inventory().from_cache
    monkeypatch.setattr(HC18, "preprocessing_version", HC18.preprocessing_version + 1)
    bumped = HC18(tmp_path).inventory()
    assert not bumped.from_cache and bumped.cache_file != first.cache_file
    assert not first.cache_file.exists()  # the stale cache is removed


def test_read_only_release_falls_back_to_the_user_cache(tmp_path, isolated_cache):
    folder = write_hc18_release(tmp_path, count=10)
    for path in (folder, folder / "training_set"):
        path.chmod(stat.S_IRUSR | stat.S_IXUSR | stat.S_IRGRP | stat.S_IXGRP)
    try:
        task = HC18(tmp_path).load("head")
    finally:
        for path in (folder, folder / "training_set"):
            path.chmod(stat.S_IRWXU)
    assert not (folder / ".bench").exists()
    assert Path(task.info["split_file"]).is_relative_to(isolated_cache / "datasets" / "hc18")
    assert Path(task.info["cache_file"]).is_relative_to(isolated_cache / "datasets" / "hc18")


def test_missing_release_names_dataset_place_and_layout(tmp_path):
    layout = r"HC18 \(hc18\): no release folder under .*hc18.*NNN_HC_Annotation.png"
    with pytest.raises(BenchError, match=layout):
        load_task("hc18", "head", tmp_path)
    write_hc18_release(tmp_path, count=2)
    (tmp_path / "hc18" / CSV_NAME).unlink()
    with pytest.raises(BenchError, match=f"no {CSV_NAME}"):
        HC18(tmp_path).inventory()


@needs_real
def test_real_whole_variant_shrinks_exactly_the_heads_the_paper_crop_cuts(real, monkeypatch):
    plugin, task, cache = real
    monkeypatch.setenv("BENCH_CACHE", str(cache))
    whole_plugin = HC18Whole(SHARED_DATA)
    whole = whole_plugin.load("head")
    for part in ("train", "val", "test"):  # the split file the paper variant wrote, read back
        assert [s.id for s in getattr(whole, part)] == [s.id for s in getattr(task, part)]
    paper_kept = dict(zip(plugin.inventory().ids, plugin.inventory().kept[:, 0], strict=True))
    cut = {sample_id for sample_id, kept in paper_kept.items() if kept < 1}
    assert cut and np.all(whole_plugin.inventory().kept == 1)
    assert whole.info["structure_kept"]["release"]["cut"] == 0
    paper_samples = {s.id: s for s in task.train + task.val + task.test}
    inventory = whole_plugin.inventory()
    source_cols = dict(zip(inventory.ids, inventory.source_shapes[:, 1], strict=True))
    for sample in whole.train + whole.val + whole.test:
        paper = paper_samples[sample.id]
        if sample.id in cut:  # shrunk so that the image's columns (wider than tall) fit 640
            factor = source_cols[sample.id] / 640
            assert sample.spacing == pytest.approx((paper.spacing[0] * factor, paper.spacing[1] * factor), rel=0.01)
            source_area = paper.mask.sum() / paper_kept[sample.id]
            assert sample.mask.sum() * factor**2 == pytest.approx(source_area, rel=0.03)
        else:
            assert sample.spacing == paper.spacing and np.array_equal(sample.mask, paper.mask)
