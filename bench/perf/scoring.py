"""`bench perf scoring`: the time to score one run's test cases, HD95 on the masks' window vs the whole image.

Scoring runs on the host after prediction, so on a GPU every second of it is a second the device waits. The
benchmark scores ``cases`` synthetic ACDC-like cases (a ventricle-sized ellipse in a ``size``² slice at 1 mm,
as the ACDC release's test slices are after resampling; the prediction a dilated or eroded, shifted copy)
with ``bench.metrics.hd95`` and with the whole-image transform it replaced (``whole_image_hd95``, kept here as
the reference the speed-up and the equality are measured against), interleaved in one process so both see the
same machine load, and reports the median of ``repeats`` passes of each and the largest difference between
their values.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass

import cv2
import numpy as np
from scipy import ndimage

from bench.metrics import hd95, surface_hd95

ACDC_TEST_CASES = 470  # the test slices of one ACDC task
ACDC_SIZE = 256  # their side, in pixels of 1 mm


def whole_image_hd95(prediction: np.ndarray, truth: np.ndarray, spacing: tuple[float, float] | None = None) -> float:
    """HD95 as ``bench.metrics`` computed it before issue 33: the distance transforms over the whole image (the
    empty-mask cases never reached them, so they are ``hd95``'s)."""
    if not (prediction.any() and truth.any()):
        return hd95(prediction, truth, spacing)
    return surface_hd95(prediction, truth, spacing or (1.0, 1.0))


def acdc_like_cases(
    cases: int = ACDC_TEST_CASES, size: int = ACDC_SIZE, seed: int = 0
) -> list[tuple[np.ndarray, np.ndarray, tuple[float, float]]]:
    """(prediction, truth, spacing) triples: an ellipse of 1–8 % of the slice (ACDC's right ventricles: 3.4 % on
    average) near its centre, and its prediction dilated or eroded by a few pixels and shifted; 1 mm spacing."""
    generator = np.random.default_rng(seed)
    triples = []
    for _ in range(cases):
        truth = np.zeros((size, size), np.uint8)
        centre = tuple(int(v) for v in generator.normal(size / 2, size / 12, 2))
        axes = tuple(int(v) for v in generator.uniform(0.06, 0.16, 2) * size)
        cv2.ellipse(truth, centre, axes, float(generator.uniform(0, 180)), 0, 360, 1, -1)
        shift = generator.integers(-6, 7, 2)
        prediction = np.roll(truth.astype(bool), tuple(int(v) for v in shift), axis=(0, 1))
        grow = int(generator.integers(-3, 4))
        if grow:
            operation = ndimage.binary_dilation if grow > 0 else ndimage.binary_erosion
            prediction = operation(prediction, iterations=abs(grow))
        triples.append((prediction, truth.astype(bool), (1.0, 1.0)))
    return triples


@dataclass(frozen=True)
class ScoringResult:
    cases: int
    size: int
    repeats: int
    windowed_seconds: float  # median seconds to score every case with bench.metrics.hd95
    whole_image_seconds: float  # the same with whole_image_hd95
    largest_difference: float  # max |windowed − whole image| over the cases, in mm

    @property
    def speedup(self) -> float:
        return self.whole_image_seconds / self.windowed_seconds

    def lines(self) -> list[str]:
        per_case = 1000 / self.cases
        return [
            f"HD95 of {self.cases} ACDC-like {self.size}² cases, median of {self.repeats} interleaved passes:",
            f"  masks' window (bench.metrics.hd95): {self.windowed_seconds:.3f} s "
            f"({self.windowed_seconds * per_case:.2f} ms per case)",
            f"  whole image (before issue 33):      {self.whole_image_seconds:.3f} s "
            f"({self.whole_image_seconds * per_case:.2f} ms per case)",
            f"  speed-up: {self.speedup:.2f}×; largest difference between the two: {self.largest_difference:.3g} mm",
        ]


def scoring_benchmark(
    cases: int = ACDC_TEST_CASES, size: int = ACDC_SIZE, repeats: int = 3, seed: int = 0
) -> ScoringResult:
    """Both implementations over the same cases, alternating pass by pass (see the module's docstring)."""
    triples = acdc_like_cases(cases, size, seed)
    timings: dict[str, list[float]] = {"windowed": [], "whole": []}
    values: dict[str, list[float]] = {}
    for _ in range(repeats):
        for name, score in (("windowed", hd95), ("whole", whole_image_hd95)):
            start = time.perf_counter()
            values[name] = [score(prediction, truth, spacing) for prediction, truth, spacing in triples]
            timings[name].append(time.perf_counter() - start)
    difference = max(abs(a - b) for a, b in zip(values["windowed"], values["whole"], strict=True))
    return ScoringResult(cases, size, repeats, statistics.median(timings["windowed"]),
                         statistics.median(timings["whole"]), difference)  # fmt: skip
