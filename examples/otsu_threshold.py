"""Otsu threshold: a complete training-free method plugin, the worked example of docs/adding-a-method.md.

Use it without installing anything:

    bench run --plugin examples/otsu_threshold.py --methods otsu,unet --datasets synthetic --shots 10
    bench table                     # no --plugin: every record describes its method
    pytest tests/test_method_contract.py --bench-plugin examples/otsu_threshold.py -k otsu

Otsu's method (Otsu 1979) picks the grey level that best separates an image's histogram into two classes.
It sees no label at all: a baseline that shows how much of a structure plain intensity already finds.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from bench.data.samples import TestItem, TrainItem
from bench.method import Method, RunContext
from bench.registry import METHODS


# Hyper-parameters are a frozen dataclass: `bench run --set blur=9` overrides a field (type-checked), and
# every record stores the values a run used.
@dataclass(frozen=True)
class OtsuParams:
    blur: int = 5  # side of the Gaussian kernel that smooths speckle before thresholding (odd; 1: none)
    largest_only: bool = True  # keep the largest connected region: each image holds one structure


@METHODS.register  # under its name below
class OtsuThreshold(Method):
    name = "otsu"  # the name used on the command line and in the records, written once
    # What tables, reports and figures show. The runner writes these into every record, so `bench table`
    # renders them on a machine that has never seen this file.
    display_name = "Otsu threshold"
    group = "Automatic — fully trained"  # its row group in Table 1: one of bench.method.GROUPS
    # A run names one label regime, even for a method that learns from none: Otsu runs under "mask" only,
    # so a grid holds one Otsu run per task. The table marks no regime for a training-free method that is
    # not prompted (`prompted = True` would hand each test image's box to predict(), as MedSAM gets it).
    labels = ("mask",)
    default_labels = ("mask",)
    # Deterministic and untrained: one run per task and regime whatever --shots and --seeds say, shown
    # with "–" training samples.
    training_free = True
    HParams = OtsuParams
    # "paper" holds the published values, "quick" a budget small enough for a 2-core CPU: with nothing to
    # train, they are the same.
    budgets = {"paper": OtsuParams(), "quick": OtsuParams()}

    # skip(spec) is inherited: it declines, with a reason, any regime not in `labels`. Override it (calling
    # super().skip(spec) first) for limits of your own; `bench run` lists every skip and its reason.

    def fit(self, train: list[TrainItem], ctx: RunContext) -> None:
        """Nothing to learn. The harness still times this call, as it times every method's fit."""

    def predict(self, items: list[TestItem], ctx: RunContext) -> list[np.ndarray]:
        # One float array in [0, 1] per test image, at that image's own size: the harness thresholds it at
        # 0.5 and scores it (Dice, HD95) against masks the method never sees.
        return [self._segment(item.image) for item in items]

    def _segment(self, image: np.ndarray) -> np.ndarray:
        blur = self.hparams.blur
        smoothed = cv2.GaussianBlur(image, (blur, blur), 0) if blur > 1 else image
        _, foreground = cv2.threshold(smoothed, 0, 1, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
        if self.hparams.largest_only:
            count, regions, stats, _ = cv2.connectedComponentsWithStats(foreground, connectivity=8)
            if count > 1:  # region 0 is the background
                foreground = regions == 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
        return foreground.astype(np.float32)
