from __future__ import annotations

import json

import numpy as np
import pytest

from bench import load_task
from bench.data.samples import (
    Box,
    Sample,
    Task,
    center_crop_or_pad,
    eval_items,
    jitter_box,
    percentile_to_uint8,
    seeded_split,
    support_ids,
    tight_box,
    train_items,
)
from bench.errors import BenchError


def tiny_task(count: int = 20) -> Task:
    samples = []
    for index in range(count):
        mask = np.zeros((16, 16), bool)
        mask[2 + index % 5 : 9, 3:12] = True
        samples.append(Sample(f"s{index:02d}", (mask * 200).astype(np.uint8), mask))
    return Task("toy", "thing", samples, [], samples[:2])


def test_support_set_is_written_once_and_reused(isolated_cache) -> None:
    task = tiny_task()
    first = support_ids(task, 5, draw=0)
    path = isolated_cache / "supports" / "toy" / "thing" / "k5_d0.json"
    assert path.exists() and json.loads(path.read_text())["ids"] == first
    assert len(first) == 5 and len(set(first)) == 5

    # the file, not the random generator, is the source of truth from now on
    edited = sorted(first[:4] + ["s19" if "s19" not in first else "s18"])
    path.write_text(json.dumps({**json.loads(path.read_text()), "ids": edited}))
    assert support_ids(task, 5, draw=0) == edited

    assert support_ids(task, 5, draw=1) != edited
    assert support_ids(task, None, draw=0) == sorted(s.id for s in task.train)


def test_deleted_support_file_is_redrawn_identically(isolated_cache) -> None:
    task = tiny_task()
    first = support_ids(task, 7, draw=2)
    (isolated_cache / "supports" / "toy" / "thing" / "k7_d2.json").unlink()
    assert support_ids(task, 7, draw=2) == first


def test_support_errors_are_clear(isolated_cache) -> None:
    task = tiny_task(4)
    with pytest.raises(BenchError, match="has 4 training images; cannot draw 10 shots"):
        support_ids(task, 10, draw=0)
    path = isolated_cache / "supports" / "toy" / "thing" / "k2_d0.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"ids": ["s00", "nope"]}))
    with pytest.raises(BenchError, match="not in the training split"):
        support_ids(task, 2, draw=0)


def test_seeded_split_keeps_subjects_together() -> None:
    ids = [f"p{p}_{i}" for p in range(30) for i in range(3)]
    groups = {item: item.split("_")[0] for item in ids}
    parts = seeded_split(ids, {"train": 0.7, "val": 0.1, "test": 0.2}, seed=3, groups=groups)
    assert sorted(sum(parts.values(), [])) == sorted(ids)
    subjects = {name: {groups[i] for i in part} for name, part in parts.items()}
    assert [len(subjects[n]) for n in ("train", "val", "test")] == [21, 3, 6]
    assert not (subjects["train"] & subjects["test"]) and not (subjects["val"] & subjects["test"])
    assert parts == seeded_split(ids, {"train": 0.7, "val": 0.1, "test": 0.2}, seed=3, groups=groups)


def test_box_regime_never_hands_over_the_mask() -> None:
    task = tiny_task(3)
    for regime in ("box", "box-noisy"):
        items = train_items(task.train, "toy", "thing", regime)
        assert all(item.mask is None and isinstance(item.box, Box) for item in items)
    masked = train_items(task.train, "toy", "thing", "mask")
    assert all(item.box is None and item.mask is not None for item in masked)
    assert eval_items(task.test, "toy", "thing", "mask", with_prompt=False)[0].box is None


def test_tight_box_and_jitter() -> None:
    mask = np.zeros((50, 60), bool)
    mask[10:31, 5:46] = True
    box = tight_box(mask)
    assert box == Box(5, 10, 45, 30) and box.width == 41 and box.height == 21 and box.area == 41 * 21
    noisy = jitter_box(box, mask.shape, "toy", "thing", "a")
    assert noisy == jitter_box(box, mask.shape, "toy", "thing", "a"), "same key, same noise"
    assert noisy != jitter_box(box, mask.shape, "toy", "thing", "b")
    assert abs(noisy.x0 - box.x0) <= 0.1 * box.width + 1 and abs(noisy.y1 - box.y1) <= 0.1 * box.height + 1
    assert 0 <= noisy.x0 <= noisy.x1 < 60 and 0 <= noisy.y0 <= noisy.y1 < 50


def test_percentile_scaling_and_crop_pad() -> None:
    values = np.arange(1000, dtype=np.float32).reshape(10, 100)
    scaled = percentile_to_uint8(values)
    assert scaled.dtype == np.uint8 and scaled.min() == 0 and scaled.max() == 255
    assert scaled[0, 0] == 0 and scaled[-1, -1] == 255  # the tails are clipped
    image = np.arange(12).reshape(3, 4)
    padded = center_crop_or_pad(image, (5, 2))
    assert padded.shape == (5, 2)
    assert (padded[0] == 0).all() and (padded[-1] == 0).all()
    np.testing.assert_array_equal(padded[1:4], image[:, 1:3])


def test_synthetic_dataset_is_deterministic_and_has_both_structures() -> None:
    ellipse, blob = load_task("synthetic", "ellipse"), load_task("synthetic", "blob")
    assert (len(ellipse.train), len(ellipse.val), len(ellipse.test)) == (120, 20, 40)
    first = ellipse.train[0]
    assert first.image.shape == (256, 256) and first.image.dtype == np.uint8 and first.mask.dtype == bool
    for a, b in zip(ellipse.test, blob.test, strict=True):
        assert a.id == b.id and a.image is b.image or np.array_equal(a.image, b.image)
        assert a.mask.any() and b.mask.any() and not (a.mask & b.mask).any()
    from bench.datasets.synthetic import generate_image

    again, masks = generate_image(0, 120 + 20)
    np.testing.assert_array_equal(again, ellipse.test[0].image)
    np.testing.assert_array_equal(masks["blob"], blob.test[0].mask)
    sizes = [s.mask.sum() for s in ellipse.train]
    assert min(sizes) < 0.5 * max(sizes), "structure sizes should vary"


def test_unknown_task_is_clear() -> None:
    with pytest.raises(BenchError, match="has no task 'elipse'.*Did you mean 'ellipse'"):
        load_task("synthetic", "elipse")
