"""What the encode and decode benchmarks share: alternating median timing, random images, the result type.

Each comparison times the harness's own code path against the plainest alternative in the same process; the two
alternate ``repeats`` times and the median counts, so a busy machine slows both alike.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from bench.compute.timing import Stopwatch


def median_rates(
    harness: Callable[[], object], reference: Callable[[], object], images: int, repeats: int, device: torch.device
) -> tuple[float, float]:
    """Images per second of each path: the two alternate ``repeats`` times and the median run counts."""
    harness_seconds, reference_seconds = [], []
    for _ in range(repeats):
        for run, seconds in ((harness, harness_seconds), (reference, reference_seconds)):
            with Stopwatch(device) as clock:
                run()
            seconds.append(clock.seconds)
    return images / statistics.median(harness_seconds), images / statistics.median(reference_seconds)


def random_images(count: int, shape: tuple[int, int], seed: int) -> list[np.ndarray]:
    # the encoders' cost does not depend on content; distinct random images make every one a cache miss
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, shape, dtype=np.uint8) for _ in range(count)]


@dataclass(frozen=True)
class Comparison:
    """Images per second of the harness path and of the reference path, measured on the same images."""

    what: str
    harness: str
    reference: str
    backbone: str
    device: str
    images: int
    batch_size: int
    harness_per_second: float
    reference_per_second: float

    @property
    def ratio(self) -> float:
        return self.harness_per_second / self.reference_per_second

    def lines(self) -> list[str]:
        return [
            f"{self.what}: {self.backbone} on {self.device}, {self.images} images, "
            f"batches of {self.batch_size}",
            f"  {self.harness:<44} {self.harness_per_second:8.2f} images/s",
            f"  {self.reference:<44} {self.reference_per_second:8.2f} images/s",
            f"  ratio harness / reference: {self.ratio:.3f}",
        ]
