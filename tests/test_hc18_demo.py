"""`hc18-demo`: the HC18 subset shipped with the package, the default dataset of `bench run`."""

from __future__ import annotations

import json

import numpy as np
import pytest

from bench.data.dataset import load_task
from bench.datasets.hc18_demo import INDEX_FILE, SIZE, SPLIT_COUNTS, make_demo, shipped_folder
from bench.records import store
from tests.conftest import SHARED_DATA
from tests.test_cli import invoke


def test_the_shipped_subset_loads_with_real_masks_and_pixel_sizes() -> None:
    task = load_task("hc18-demo", "head")
    splits = {name: getattr(task, name) for name in SPLIT_COUNTS}
    assert {name: len(samples) for name, samples in splits.items()} == SPLIT_COUNTS
    ids = [sample.id for samples in splits.values() for sample in samples]
    assert len(set(ids)) == len(ids)  # no image in two splits
    for sample in (sample for samples in splits.values() for sample in samples):
        assert sample.image.shape == sample.mask.shape == (SIZE, SIZE) and sample.image.dtype == np.uint8
        # a filled head: one region covering a plausible share of the frame, its pixels in mm after the shrink
        assert 0.01 < sample.mask.mean() < 0.6
        assert sample.spacing[0] == sample.spacing[1] and 0.1 < sample.spacing[0] < 1.5
    assert (shipped_folder() / "README.md").read_text().count("CC BY 4.0") >= 1  # the licence travels with it


def test_bench_run_defaults_to_the_shipped_subset(monkeypatch, fake_methods, tmp_path) -> None:
    monkeypatch.delenv("BENCH_DATASETS")
    result = invoke("run", "--methods", "fake-threshold", "--shots", "10", "--results", str(tmp_path))
    assert result.exit_code == 0, result.output
    (record,) = store.load_records(tmp_path, "default")
    assert record["spec"]["dataset"] == "hc18-demo" and record["status"] == "ok"
    assert len(record["cases"]) == SPLIT_COUNTS["test"] and 0 < record["mean_dice"] < 1


@pytest.mark.skipif(not (SHARED_DATA / "hc18").is_dir(), reason="needs the HC18 release in ../shared/data")
def test_make_demo_remakes_the_shipped_subset_from_the_release(tmp_path) -> None:
    out = tmp_path / "hc18_demo"
    assert make_demo(SHARED_DATA, out) == SPLIT_COUNTS
    shipped = json.loads((shipped_folder() / INDEX_FILE).read_text())
    assert json.loads((out / INDEX_FILE).read_text()) == shipped
    import cv2

    for sample_id in shipped["test"][:5] + shipped["train"][:5]:
        for kind in ("images", "masks"):
            made, kept = (cv2.imread(str(folder / kind / f"{sample_id}.png"), cv2.IMREAD_UNCHANGED)
                          for folder in (out, shipped_folder()))  # fmt: skip
            assert np.array_equal(made, kept)
    # drawn from the hc18 split of the same name, so the demo scores a subset of the full results' test images
    hc18 = load_task("hc18", "head", SHARED_DATA)
    for split in SPLIT_COUNTS:
        assert set(shipped[split]) <= {sample.id for sample in getattr(hc18, split)}
