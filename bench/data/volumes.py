"""Per-volume metrics of a dataset cut from 3-D volumes: the scored slices of each case stacked back.

Table 1's metric stays per slice, as in the paper; the field reports volumes, so a run on a 3-D dataset also
records, per test case, Dice and HD95 of its slices stacked at their positions along the cut axis, in mm with
the slice thickness. Only the slices the task scores are stacked (those where the structure covers at least
the dataset's pixel threshold: the others are neither predicted nor counted); a position between two scored
slices that is not scored is empty in both masks. HD95 follows ``bench.metrics``' convention and empty-mask
policy, in three dimensions.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from bench.data.samples import Sample
from bench.metrics import binarize, dice_from_counts

# Task.info key: sample id → (case, position along the cut axis, slice thickness in mm or None)
VOLUME_OF = "volume_of"


def _surface(mask: np.ndarray) -> np.ndarray:
    return mask & ~ndimage.binary_erosion(mask, border_value=0)


def hd95_nd(prediction: np.ndarray, truth: np.ndarray, sampling: Sequence[float]) -> float:
    """Symmetric 95th-percentile Hausdorff distance of two boolean arrays of any dimension, ``bench.metrics``'
    convention (the larger of the two directed 95th percentiles) and empty-mask policy (the diagonal)."""
    if not prediction.any() and not truth.any():
        return 0.0
    if not prediction.any() or not truth.any():
        return float(np.sqrt(sum((size * step) ** 2 for size, step in zip(truth.shape, sampling, strict=True))))
    prediction_edge, truth_edge = _surface(prediction), _surface(truth)
    to_truth = ndimage.distance_transform_edt(~truth_edge, sampling=sampling)[prediction_edge]
    to_prediction = ndimage.distance_transform_edt(~prediction_edge, sampling=sampling)[truth_edge]
    return float(max(np.percentile(to_truth, 95), np.percentile(to_prediction, 95)))


def volume_metrics(samples: Sequence[Sample], probabilities: Sequence[np.ndarray], volume_of: dict) -> list[dict]:
    """Per case: the number of scored slices, Dice, HD95 and the pixel counts of its slices stacked back."""
    by_case: dict[str, list[tuple[int, float | None, Sample, np.ndarray]]] = defaultdict(list)
    for sample, probability in zip(samples, probabilities, strict=True):
        case, position, thickness = volume_of[sample.id]
        by_case[case].append((position, thickness, sample, binarize(probability)))
    volumes = []
    for case, scored in sorted(by_case.items()):
        scored.sort(key=lambda item: item[0])
        first, last = scored[0][0], scored[-1][0]
        shape = (last - first + 1, *scored[0][2].mask.shape)
        prediction, truth = np.zeros(shape, bool), np.zeros(shape, bool)
        for position, _, sample, predicted in scored:
            prediction[position - first], truth[position - first] = predicted, sample.mask
        thickness, spacing = scored[0][1], scored[0][2].spacing
        sampling = (thickness or 1.0, *(spacing or (1.0, 1.0)))
        tp = int(np.count_nonzero(prediction & truth))
        fp = int(np.count_nonzero(prediction & ~truth))
        fn = int(np.count_nonzero(~prediction & truth))
        volumes.append({"id": case, "slices": len(scored), "dice": dice_from_counts(tp, fp, fn),
                        "hd95": hd95_nd(prediction, truth, sampling), "tp": tp, "fp": fp, "fn": fn})  # fmt: skip
    return volumes
