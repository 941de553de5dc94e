"""Small method plugins for harness tests: registered temporarily by the ``fake_methods`` fixture."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from bench.data.samples import TestItem, TrainItem
from bench.method import Method, RunContext


@dataclass(frozen=True)
class FakeParams:
    epochs: int = 1
    sleep: float = 0.0


class MeanThreshold(Method):
    """Predicts pixels brighter than the mean foreground intensity seen in training (mask labels)."""

    name = "fake-threshold"
    display_name = "Threshold"
    group = "Automatic — fully trained"
    labels = ("mask",)
    default_labels = ("mask",)
    HParams = FakeParams
    budgets = {"paper": FakeParams(epochs=3), "quick": FakeParams()}

    def fit(self, train: list[TrainItem], ctx: RunContext) -> None:
        time.sleep(self.hparams.sleep)
        for _ in ctx.progress(range(self.hparams.epochs), description=f"{self.name} epochs"):
            self.level = float(np.mean([item.image[item.mask].mean() for item in train]))

    def predict(self, items: list[TestItem], ctx: RunContext) -> list[np.ndarray]:
        return [(item.image >= 0.8 * self.level).astype(np.float32) for item in items]


class BoxFill(Method):
    """Training-free and prompted: predicts the prompt box itself."""

    name = "fake-boxfill"
    display_name = "Box fill"
    group = "Promptable"
    labels = ("box", "box-noisy")
    default_labels = ("box",)
    training_free = True
    prompted = True
    HParams = FakeParams
    budgets = {"paper": FakeParams(), "quick": FakeParams()}

    def fit(self, train: list[TrainItem], ctx: RunContext) -> None:
        assert not train or all(item.mask is None for item in train)

    def predict(self, items: list[TestItem], ctx: RunContext) -> list[np.ndarray]:
        outputs = []
        for item in items:
            probabilities = np.zeros(item.image.shape, np.float32)
            box = item.box
            probabilities[box.y0 : box.y1 + 1, box.x0 : box.x1 + 1] = 1.0
            outputs.append(probabilities)
        return outputs


class Exploding(MeanThreshold):
    name = "fake-exploding"

    def fit(self, train: list[TrainItem], ctx: RunContext) -> None:
        raise RuntimeError("out of memory (simulated)")


FAKES = {cls.name: cls for cls in (MeanThreshold, BoxFill, Exploding)}
