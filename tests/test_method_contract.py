"""The contract every registered method must pass, parametrised over the registry (smp-style).

A new plugin is tested here without writing a test: it runs on tiny images with its ``tiny`` overrides,
under every label regime it declares, and must return probabilities of the right shape, deterministically.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import cv2
import numpy as np
import pytest

from bench import load_task
from bench.compute.timing import Deadline
from bench.data.samples import LABEL_REGIMES, Sample, eval_items, train_items
from bench.method import GROUPS, Method, RunContext
from bench.method.resumable import FitCheckpoint, FitPaused
from bench.records.spec import RunSpec
from bench.registry import BACKBONES, METHODS
from bench.run.runner import resolve_device, seed_everything

TINY_BACKBONE = "tiny-sam-test"
# the built-in methods that train by epochs (through RunContext.epochs): a fit of theirs must pause and resume
EPOCH_METHODS = ("unet", "transunet", "autosam", "prompt-module")


def shrink(sample: Sample, shape: tuple[int, int]) -> Sample:
    image = cv2.resize(sample.image, shape[::-1], interpolation=cv2.INTER_AREA)
    mask = cv2.resize(sample.mask.astype(np.uint8), shape[::-1], interpolation=cv2.INTER_NEAREST).astype(bool)
    return Sample(sample.id, image, mask, (1.0, 1.0))


def tiny_train_and_test() -> tuple[list[Sample], list[Sample]]:
    """Four small training images and two test images, one of them not square."""
    task = load_task("synthetic", "ellipse")
    train = [shrink(s, (64, 64)) for s in task.train[:4]]
    test = [shrink(task.test[0], (64, 64)), shrink(task.test[1], (48, 80))]
    return train, test


@pytest.fixture(scope="module")
def tiny_task():
    return tiny_train_and_test()


def cases() -> list:
    params = []
    for name in METHODS.names():
        cls = METHODS.get(name)
        if cls.uses_backbone and TINY_BACKBONE not in BACKBONES:
            continue
        for labels in cls.labels:
            params.append(pytest.param(name, labels, id=f"{name}-{labels}"))
    return params


def run_method(cls: type[Method], labels: str, train, test, seed: int, saved_fit: Path | None = None):
    """Fit and predict as a run does. With ``saved_fit``, the fit goes through the harness's saving: paused
    after its first epoch (the grid's time has passed), then resumed by a fresh method as the next command
    would; returns the method, its predictions and how many slices the fit took."""
    backbone = TINY_BACKBONE if cls.uses_backbone else None
    spec = RunSpec(method=cls.name, dataset="synthetic", task="ellipse", labels=labels, shots=len(train),
                   draw=0, seed=seed, budget="quick", backbone=backbone)  # fmt: skip
    hparams = cls.resolve_hparams("quick", cls.tiny.items())
    deadline, slices = Deadline(0), 0
    while True:
        slices += 1
        checkpoint = None if saved_fit is None else FitCheckpoint(saved_fit, {}, {}, deadline=deadline)
        ctx = RunContext(spec=spec, hparams=hparams, device=resolve_device("cpu"), checkpoint=checkpoint)
        seed_everything(seed)  # as every run does; a resumed fit's saved random states must then take over
        method = cls(hparams)
        try:
            method.fit(train_items(train, "synthetic", "ellipse", labels), ctx)
        except FitPaused:
            deadline = Deadline()
            continue
        outputs = method.predict(eval_items(test, "synthetic", "ellipse", labels, with_prompt=cls.prompted), ctx)
        return method, outputs, slices


@pytest.mark.parametrize(("name", "labels"), cases())
class TestMethodContract:
    def test_declarations(self, name: str, labels: str) -> None:
        cls = METHODS.get(name)
        assert issubclass(cls, Method) and cls.name == name
        assert cls.group in GROUPS and cls.display_name
        assert set(cls.labels) <= set(LABEL_REGIMES) and set(cls.default_labels) <= set(cls.labels)
        assert set(cls.budgets) >= {"paper", "quick"}
        for budget in cls.budgets.values():
            assert isinstance(budget, cls.HParams) and dataclasses.is_dataclass(budget)
        assert set(cls.tiny) <= {f.name for f in dataclasses.fields(cls.HParams)}

    def test_fit_predict_shapes_determinism_and_resuming(self, name: str, labels: str, tiny_task, tmp_path) -> None:
        cls = METHODS.get(name)
        train, test = tiny_task
        method, first, _ = run_method(cls, labels, train, test, seed=7)
        assert len(first) == len(test)
        for probabilities, sample in zip(first, test, strict=True):
            assert probabilities.shape == sample.image.shape
            assert np.issubdtype(probabilities.dtype, np.floating)
            assert np.isfinite(probabilities).all()
            assert probabilities.min() >= 0.0 and probabilities.max() <= 1.0
        # the same fit again, paused after its first epoch and resumed from what the harness saved: deterministic,
        # and resumable (the built-in epoch loops must pause; a plugin's own loop may not)
        _, second, slices = run_method(cls, labels, train, test, seed=7, saved_fit=tmp_path / "fit.pt")
        assert slices == 2 or name not in EPOCH_METHODS
        for a, b in zip(first, second, strict=True):
            np.testing.assert_allclose(a, b, atol=1e-5)
        total, trainable = method.parameter_counts()
        assert 0 <= trainable <= total
        if cls.training_free or not cls.learns_weights:
            assert trainable == 0
        else:
            assert trainable > 0
