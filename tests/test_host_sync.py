"""No training step of a built-in trained method reads a tensor back to the host (issue 33).

On a GPU, ``.item()``, ``float(t)``, ``.cpu()``, ``.tolist()``, ``.numpy()``, ``bool(t)`` and the like wait
for every queued kernel. This machine has no GPU, so the reads are counted on CPU tensors through patched
``torch.Tensor`` methods. Draws from the host's seeded generator (shuffles, TransUNet's augmentation) are
host data, never on the device: tensors made by ``torch.randperm/rand/randint`` with a ``generator`` are not
counted, nor torch's optimisers reading their step counters (kept on the host unless ``capturable``). A fit
reads its diagnostics back once per epoch; a read per step or per sample would make the count grow with the
number of steps or samples, so two fits with the same epochs, one of 1 step of 2 samples per epoch and one
of 2 steps of 2 samples (batch norm needs 2), must count the same reads.
"""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

from bench import load_task
from bench.data.samples import train_items
from bench.method import RunContext
from bench.records.spec import RunSpec
from bench.registry import BACKBONES, METHODS
from bench.run.runner import seed_everything
from tests.test_method_contract import TINY_BACKBONE, shrink

READS = ("item", "tolist", "numpy", "cpu", "__float__", "__int__", "__bool__", "__index__")
HOST_DRAWS = ("randperm", "rand", "randint")


class ReadCounter:
    """Counts the host reads of tensors that are not host draws, while installed."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.count = 0
        self.where: list[str] = []
        for name in READS:
            monkeypatch.setattr(torch.Tensor, name, self._counted(getattr(torch.Tensor, name), name))
        for name in HOST_DRAWS:
            monkeypatch.setattr(torch, name, self._tagged(getattr(torch, name)))

    def _counted(self, read, name: str):
        counter = self

        def counted(tensor, *args, **kwargs):
            caller = sys._getframe(1).f_code.co_filename.replace("\\", "/")
            if not getattr(tensor, "_host_draw", False) and "/torch/optim/" not in caller:
                counter.count += 1
                counter.where.append(name)
            return read(tensor, *args, **kwargs)

        return counted

    @staticmethod
    def _tagged(draw):
        def tagged(*args, **kwargs):
            tensor = draw(*args, **kwargs)
            if kwargs.get("generator") is not None:
                tensor._host_draw = True
            return tensor

        return tagged


@pytest.fixture(scope="module")
def samples():
    task = load_task("synthetic", "ellipse")
    return [shrink(sample, (32, 32)) for sample in task.train[:4]]


def reads_of_fit(name: str, labels: str, train, batch_size: int, monkeypatch) -> tuple[int, list[str]]:
    cls = METHODS.get(name)
    backbone = TINY_BACKBONE if cls.uses_backbone else None
    spec = RunSpec(method=name, dataset="synthetic", task="ellipse", labels=labels, shots=len(train), draw=0,
                   seed=0, budget="quick", backbone=backbone)  # fmt: skip
    overrides = {**cls.tiny, "epochs": 2, "batch_size": batch_size}
    if name == "autosam":
        overrides |= {"accumulation_steps": 1, "input_size": 32}
    if name in ("unet", "transunet"):
        overrides |= {"input_size": 32}
    hparams = cls.resolve_hparams("quick", overrides.items())
    ctx = RunContext(spec=spec, hparams=hparams, device=torch.device("cpu"))
    items = train_items(train, "synthetic", "ellipse", labels)
    seed_everything(0)
    method = cls(hparams)
    if cls.uses_backbone:
        ctx.embeddings([item.image for item in items])  # encoded before counting: the cache is not a step
    with monkeypatch.context() as patches:
        counter = ReadCounter(patches)
        method.fit(items, ctx)
    return counter.count, counter.where


CASES = [("prompt-module", "box"), ("prompt-module", "mask"), ("unet", "mask"), ("unet", "box"),
         ("transunet", "mask"), ("autosam", "mask")]  # fmt: skip


@pytest.mark.parametrize(("name", "labels"), CASES, ids=[f"{n}-{label}" for n, label in CASES])
def test_a_training_step_reads_nothing_back_from_the_device(name, labels, samples, monkeypatch) -> None:
    if METHODS.get(name).uses_backbone and TINY_BACKBONE not in BACKBONES:
        pytest.skip("the tiny test backbone is not registered")
    one_step, _ = reads_of_fit(name, labels, samples[:2], 2, monkeypatch)
    two_steps, where = reads_of_fit(name, labels, samples, 2, monkeypatch)
    assert two_steps == one_step, f"host reads grow with steps or samples: {one_step} → {two_steps} ({where})"
    if name == "prompt-module":  # its diagnostics are read, once per epoch: the counter sees them
        assert one_step > 0


def test_the_counter_sees_a_read_and_skips_host_draws(monkeypatch) -> None:
    with monkeypatch.context() as patches:
        counter = ReadCounter(patches)
        float(torch.ones(()) * 2)
        torch.randperm(3, generator=torch.Generator().manual_seed(0)).tolist()
        np.asarray(torch.zeros(2).numpy())
    assert counter.count == 2 and counter.where == ["__float__", "numpy"]
