"""ACDC loader on the real release in ../shared (skipped when absent): the paper's counts, pinned.

The paper (Table 1's ACDC columns) trains on 90 patients / 765 slices, validates on 10 / 78 and tests on
50 / 470; a change to the preprocessing or the slice filter that moves any of these fails here.
"""

from __future__ import annotations

import numpy as np
import pytest

from bench.datasets.acdc import ACDC, SMALL_STRUCTURE, VAL_PATIENTS
from tests.conftest import SHARED_DATA

REAL = SHARED_DATA / "acdc"
pytestmark = pytest.mark.skipif(
    not (REAL / "training" / "patient001" / "Info.cfg").is_file(), reason="real ACDC data not in ../shared"
)


@pytest.fixture(scope="module")
def real(tmp_path_factory: pytest.TempPathFactory):
    """The real release, preprocessed once for this module into its own cache folder (about 10 s)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("BENCH_CACHE", str(tmp_path_factory.mktemp("acdc-cache")))
        plugin = ACDC(SHARED_DATA)
        return plugin, {task: plugin.load(task) for task in plugin.tasks}


def test_real_counts_match_the_papers_split(real):
    plugin, tasks = real
    inventory = plugin.inventory()
    assert inventory.found == 150
    assert len(inventory.excluded) == 176
    assert {reason for _, reason in inventory.excluded} == {SMALL_STRUCTURE}
    for task in tasks.values():
        parts = {"train": task.train, "val": task.val, "test": task.test}
        assert {name: len(part) for name, part in parts.items()} == {"train": 765, "val": 78, "test": 470}
        subjects = {name: {sample.subject for sample in part} for name, part in parts.items()}
        assert {name: len(ids) for name, ids in subjects.items()} == {"train": 90, "val": 10, "test": 50}
        numbers = {name: {int(subject.removeprefix("patient")) for subject in ids} for name, ids in subjects.items()}
        assert numbers["val"] == VAL_PATIENTS
        assert numbers["test"] == set(range(101, 151))
        assert numbers["train"] == set(range(1, 101)) - VAL_PATIENTS


def test_real_slices_are_1mm_256px_and_both_tasks_share_images(real):
    _, tasks = real
    rv, lv = tasks["rv"], tasks["lv"]
    assert [s.id for s in rv.test] == [s.id for s in lv.test]
    for rv_sample, lv_sample in zip(rv.test[:60], lv.test[:60], strict=True):
        assert rv_sample.image.shape == (256, 256) and rv_sample.image.dtype == np.uint8
        assert rv_sample.spacing == (1.0, 1.0)
        assert np.array_equal(rv_sample.image, lv_sample.image)
        # every kept slice has both ventricles (≥ 10 px), and they never overlap
        assert rv_sample.mask.sum() >= 10 and lv_sample.mask.sum() >= 10
        assert not (rv_sample.mask & lv_sample.mask).any()
