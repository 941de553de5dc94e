from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from scipy import ndimage

from bench import load_task
from bench.metrics import case_metrics, dice_from_counts, hd95
from bench.perf.scoring import whole_image_hd95

HC18_TRAINING = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "hc18" / "training_set"


def square(shape, top, left, size) -> np.ndarray:
    mask = np.zeros(shape, bool)
    mask[top : top + size, left : left + size] = True
    return mask


def test_dice_on_hand_computed_overlap() -> None:
    truth = square((20, 20), 0, 0, 10)  # 100 px
    prediction = square((20, 20), 0, 5, 10)  # overlaps 50 px
    result = case_metrics("a", prediction.astype(np.float32), truth)
    assert (result.tp, result.fp, result.fn) == (50, 50, 50)
    assert result.dice == pytest.approx(2 * 50 / (100 + 100))
    assert dice_from_counts(result.tp, result.fp, result.fn) == result.dice


def test_threshold_is_strictly_above_one_half() -> None:
    truth = square((8, 8), 0, 0, 4)
    probabilities = truth * 0.5
    assert case_metrics("a", probabilities, truth).tp == 0
    assert case_metrics("a", truth * 0.51, truth).dice == 1.0


def test_hd95_of_a_shifted_square_is_the_shift() -> None:
    truth = square((60, 60), 10, 10, 20)
    shifted = square((60, 60), 10, 13, 20)  # three columns to the right
    assert hd95(shifted, truth) == pytest.approx(3.0)
    assert hd95(truth, truth) == 0.0
    # anisotropic spacing: the shift is along columns, so only the column spacing matters
    assert hd95(shifted, truth, spacing=(2.0, 0.5)) == pytest.approx(1.5)


def test_hd95_is_symmetric_max_of_directed_percentiles() -> None:
    truth = square((40, 40), 5, 5, 10)
    prediction = truth | square((40, 40), 30, 30, 1)  # a far single stray pixel
    # the stray pixel is 1 of 37 boundary pixels of the prediction: under 5 %, so it does not count
    assert hd95(prediction, truth) == pytest.approx(0.0)
    assert hd95(prediction, truth) == hd95(truth, prediction)


def test_one_pixel_masks() -> None:
    truth = square((10, 10), 2, 2, 1)
    assert case_metrics("a", truth.astype(float), truth).dice == 1.0
    other = square((10, 10), 5, 6, 1)
    result = case_metrics("a", other.astype(float), truth)
    assert result.dice == 0.0 and result.hd95 == pytest.approx(5.0)  # 3 rows, 4 columns apart


def test_empty_mask_policy_never_rewards_a_miss() -> None:
    shape = (30, 40)
    empty = np.zeros(shape, bool)
    truth = square(shape, 5, 5, 10)
    both_empty = case_metrics("a", empty.astype(float), empty)
    assert (both_empty.dice, both_empty.hd95) == (1.0, 0.0)
    missed = case_metrics("b", empty.astype(float), truth, spacing=(0.5, 0.5))
    assert missed.dice == 0.0 and missed.hd95 == pytest.approx(np.hypot(15, 20))
    false_alarm = case_metrics("c", truth.astype(float), empty)
    assert false_alarm.dice == 0.0 and false_alarm.hd95 == pytest.approx(np.hypot(30, 40))
    # a mean over cases including a miss is lower than without it
    hit = case_metrics("d", truth.astype(float), truth)
    assert np.mean([hit.dice, missed.dice]) < hit.dice


def test_shape_mismatch_is_reported() -> None:
    with pytest.raises(ValueError, match="shape"):
        case_metrics("a", np.zeros((4, 4)), np.zeros((5, 5), bool))


def perturbed(mask: np.ndarray) -> list[np.ndarray]:
    """Predictions of ``mask`` as methods make them: itself, eroded, dilated, shifted, empty, and a corner blob."""
    corner = np.zeros_like(mask)
    corner[:5, -7:] = True
    return [mask, ndimage.binary_erosion(mask, iterations=2), ndimage.binary_dilation(mask, iterations=4),
            np.roll(mask, (6, -3), axis=(0, 1)), np.zeros_like(mask), corner]  # fmt: skip


def test_hd95_on_the_masks_window_equals_the_whole_image_transform() -> None:
    """The windowed transform gives the whole image's value: synthetic masks at their own sizes, masks touching
    the image's edges, anisotropic spacing."""
    task = load_task("synthetic", "ellipse")
    truths = [sample.mask.astype(bool) for sample in task.test[:6]]
    edge = np.zeros((40, 50), bool)
    edge[0:12, 30:50] = True  # touches the top and right edges
    truths.append(edge)
    for truth in truths:
        for prediction in perturbed(truth):
            for spacing in (None, (0.7, 1.3)):
                assert abs(hd95(prediction, truth, spacing) - whole_image_hd95(prediction, truth, spacing)) <= 1e-6


@pytest.mark.skipif(not HC18_TRAINING.is_dir(), reason="real HC18 data not in ../shared")
def test_hd95_on_the_masks_window_equals_the_whole_image_on_real_hc18_heads() -> None:
    """Real head masks (the annotated ellipses of the first HC18 images, filled), at 0.15 mm spacing."""
    paths = sorted(HC18_TRAINING.glob("*_HC_Annotation.png"))[:8]
    assert len(paths) == 8
    spacing = (0.15, 0.15)
    for path in paths:
        truth = ndimage.binary_fill_holes(cv2.imread(str(path), cv2.IMREAD_GRAYSCALE) > 0)
        assert truth.sum() > 1000  # a filled head, not its outline
        for prediction in perturbed(truth):
            assert abs(hd95(prediction, truth, spacing) - whole_image_hd95(prediction, truth, spacing)) <= 1e-6


def test_the_scoring_benchmark_times_both_transforms_on_the_same_cases() -> None:
    from bench.perf.scoring import acdc_like_cases, scoring_benchmark

    cases = acdc_like_cases(6, 64)
    assert all(prediction.shape == truth.shape == (64, 64) and truth.any() for prediction, truth, _ in cases)
    result = scoring_benchmark(cases=6, size=64, repeats=1)
    assert result.largest_difference <= 1e-6 and result.windowed_seconds > 0 and result.whole_image_seconds > 0
    assert "speed-up" in result.lines()[-1]
