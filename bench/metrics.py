"""Per-case metrics: Dice, HD95 and the pixel counts Dice is recomputed from.

Empty-mask policy (one rule for every method and dataset, so that a miss never improves a mean):

* ground truth and prediction both empty → Dice 1, HD95 0 (nothing to find, nothing found);
* exactly one of them empty → Dice 0 and HD95 = the image diagonal (in mm when the spacing is known),
  the largest distance possible in that image, instead of NaN which a mean would silently skip.

HD95 follows the surface-distance/MONAI convention: the 95th percentile of the distances from the
boundary pixels of one mask to the boundary of the other, in each direction, and the larger of the two.
It is written here with SciPy's Euclidean distance transform because MONAI is a heavy dependency for
one function and medpy pools both directions into one percentile (a different number). The transform runs
on the smallest window holding both masks (plus one pixel of margin for the erosion): every boundary pixel
and its nearest boundary pixel of the other mask lie in it, so the distances are those of the whole image,
at a fraction of the cost (a heart in a 640² slice fills a few percent of it).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

THRESHOLD = 0.5


@dataclass(frozen=True)
class CaseMetrics:
    id: str
    dice: float
    hd95: float
    tp: int
    fp: int
    fn: int

    def as_dict(self) -> dict:
        return {"id": self.id, "dice": self.dice, "hd95": self.hd95, "tp": self.tp, "fp": self.fp, "fn": self.fn}


def binarize(probabilities: np.ndarray) -> np.ndarray:
    """Foreground where the probability exceeds 0.5, at the image's own resolution."""
    return np.asarray(probabilities) > THRESHOLD


def dice_from_counts(tp: int, fp: int, fn: int) -> float:
    denominator = 2 * tp + fp + fn
    return 1.0 if denominator == 0 else 2.0 * tp / denominator


def _boundary(mask: np.ndarray) -> np.ndarray:
    return mask & ~ndimage.binary_erosion(mask, border_value=0)


def hd95(prediction: np.ndarray, truth: np.ndarray, spacing: tuple[float, float] | None = None) -> float:
    """Symmetric 95th-percentile Hausdorff distance between two boolean masks (see the module policy)."""
    sampling = spacing or (1.0, 1.0)
    prediction_empty, truth_empty = not prediction.any(), not truth.any()
    if prediction_empty and truth_empty:
        return 0.0
    if prediction_empty or truth_empty:
        return float(np.hypot(truth.shape[0] * sampling[0], truth.shape[1] * sampling[1]))
    rows, cols = (np.flatnonzero(prediction.any(axis) | truth.any(axis)) for axis in (1, 0))
    # one pixel of margin where the image has it: the erosion then sees the same neighbours as on the whole image
    window = (slice(max(rows[0] - 1, 0), rows[-1] + 2), slice(max(cols[0] - 1, 0), cols[-1] + 2))
    return surface_hd95(prediction[window], truth[window], sampling)


def surface_hd95(prediction: np.ndarray, truth: np.ndarray, sampling: tuple[float, float]) -> float:
    """HD95 between the boundaries of two non-empty masks, with distance transforms over the arrays as given."""
    prediction_edge, truth_edge = _boundary(prediction), _boundary(truth)
    to_truth = ndimage.distance_transform_edt(~truth_edge, sampling=sampling)[prediction_edge]
    to_prediction = ndimage.distance_transform_edt(~prediction_edge, sampling=sampling)[truth_edge]
    return float(max(np.percentile(to_truth, 95), np.percentile(to_prediction, 95)))


def case_metrics(
    case_id: str, probabilities: np.ndarray, truth: np.ndarray, spacing: tuple[float, float] | None = None
) -> CaseMetrics:
    if probabilities.shape != truth.shape:
        raise ValueError(
            f"prediction for {case_id} has shape {probabilities.shape}, the image has {truth.shape}"
        )
    prediction = binarize(probabilities)
    truth = truth.astype(bool)
    tp = int(np.count_nonzero(prediction & truth))
    fp = int(np.count_nonzero(prediction & ~truth))
    fn = int(np.count_nonzero(~prediction & truth))
    if not prediction.any() and not truth.any():
        dice = 1.0
    else:
        dice = dice_from_counts(tp, fp, fn)
    return CaseMetrics(case_id, dice, hd95(prediction, truth, spacing), tp, fp, fn)


def truth_geometry(truth: np.ndarray) -> dict:
    """Where and how big the structure is, as fractions of the image: its area, its tight box's area and the
    box's centre (row, column). Kept with each case so Dice can be read against structure size and position.
    """
    height, width = truth.shape
    rows, cols = np.nonzero(truth)
    if not rows.size:
        return {"truth_area": 0.0, "truth_box_area": 0.0, "truth_centre": None}
    box_area = (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1)
    centre = [(rows.min() + rows.max()) / 2 / (height - 1 or 1), (cols.min() + cols.max()) / 2 / (width - 1 or 1)]
    return {
        "truth_area": rows.size / truth.size,
        "truth_box_area": float(box_area) / truth.size,
        "truth_centre": [round(float(c), 4) for c in centre],
    }
