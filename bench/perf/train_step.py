"""The training step of each trained method, measured through the method's own ``fit``.

A method runs as ``bench run`` runs it: the spec planned at the budget (seed 0, support draw 0, the method's
first default label regime), its hyper-parameters resolved, a ``RunContext``, the seed set, a fresh model,
``fit`` on the support set. Two things change: its passes over the support set (``epochs``, or ``steps`` where it
has no epochs: each of PerSAM-F's steps reads every reference) are set to ``PASSES``, and the context's
``progress`` marks where each pass begins and the last one ends — every method wraps its epoch loop in
``ctx.progress`` for its progress bar, so no plugin needs a hook of its own. The support set's embeddings are
cached before ``fit`` starts, so the first loop ``fit`` wraps is its passes (and that it had ``PASSES`` items is
checked).

Pass 1 takes the first-call costs; pass 2 runs under ``FlopCounterMode`` and ``OpRecorder`` (the matrix
products and convolutions it calls, for :mod:`bench.perf.replay`); pass 3 is timed (CUDA-synchronised at
both ends), and torch's global optimiser-step hook counts its steps. Counting and timing are separate passes of
one fit, so counting's overhead is never timed, and neither pass holds ``fit``'s setup (reading embeddings,
building tensors, PerSAM-F's constant logit maps). A pass visits each support image once.
"""

from __future__ import annotations

import dataclasses
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import torch
from torch.optim.optimizer import register_optimizer_step_post_hook
from torch.utils.flop_counter import FlopCounterMode

from bench.compute.timing import synchronize
from bench.data.resolved import DatasetPlugins
from bench.perf.replay import OpRecorder
from bench.records.spec import RunSpec

# the hyper-parameter that sets how many passes over the support set a fit makes, in order of preference
PASS_HPARAMS = ("epochs", "steps")
PASSES = 3  # warm-up, counted, timed
COUNTED, TIMED = 2, 3
ItemT = TypeVar("ItemT")


@dataclass(frozen=True)
class PassMeasure:
    """One pass over the support set: FLOPs and the FLOP-counted calls of pass 2, seconds and optimiser steps of
    pass 3."""

    images: int
    steps: int
    flops: float
    seconds: float
    calls: Counter


def trained_methods() -> list[str]:
    """Registered methods that learn weights by training (not training-free, not PerSAM's feature read-out)."""
    from bench.registry import METHODS

    classes = {name: METHODS.get(name) for name in METHODS.names()}
    return [name for name, cls in classes.items() if cls.learns_weights and not cls.training_free]


def pass_hparam(method: str) -> str | None:
    """The hyper-parameter that sets ``method``'s passes over the support set, or None where it has none."""
    from bench.registry import METHODS

    names = {field.name for field in dataclasses.fields(METHODS.get(method).HParams)}
    return next((name for name in PASS_HPARAMS if name in names), None)


def training_runs(
    methods: Sequence[str], budgets: Sequence[str], datasets: DatasetPlugins, dataset: str, task: str, shots: int,
    backbone: str, checkpoint: Path | None, tiny: bool,
) -> list[tuple[str, str, RunSpec | str]]:  # fmt: skip
    """(method, budget, the run whose fit is measured, or why there is none) for every method and budget: the
    budget with ``PASSES`` passes, on top of the method's ``tiny`` overrides in tiny mode. ``datasets``: the
    resolved plugins, ``dataset`` among them."""
    from bench.registry import METHODS
    from bench.run.grid import GridRequest, expand_grid

    runs: list[tuple[str, str, RunSpec | str]] = []
    for method in methods:
        knob = pass_hparam(method)
        for budget in budgets:
            if knob is None:
                runs.append((method, budget, f"no {' or '.join(PASS_HPARAMS)} hyper-parameter to set passes with"))
                continue
            overrides = {**(METHODS.get(method).tiny if tiny else {}), knob: PASSES}
            request = GridRequest(
                methods=[method], datasets=[dataset], tasks=[task], shots=[shots], labels=None, seeds=[0], draws=1,
                budget=budget, backbone=backbone, checkpoint=str(checkpoint.resolve()) if checkpoint else None,
                overrides=tuple(sorted(overrides.items())),
            )  # fmt: skip
            planned = expand_grid(request, datasets)[0]
            runs.append((method, budget, planned.spec if planned.skip_reason is None else planned.skip_reason))
    return runs


class _MarkedPasses:
    """``RunContext.progress`` for a measured fit: the first loop it wraps is taken as the passes; pass 2 runs
    under the FLOP counter, pass 3 on the clock. Loops it wraps later (nested ones) pass through unmarked."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.counter = FlopCounterMode(display=False)
        self.recorder = OpRecorder()
        self.counting = False
        self.boundaries = 0  # pass starts, then the end of the last pass
        self.seconds = 0.0
        self.steps = 0  # optimiser steps in the timed pass
        self._wrapped = False
        self._start = 0.0

    def __call__(self, iterable: Iterable[ItemT], total: int | None = None, description: str = "") -> Iterator[ItemT]:
        if self._wrapped:
            yield from iterable
            return
        self._wrapped = True
        for item in iterable:
            self._boundary()
            yield item
        self._boundary()

    def _boundary(self) -> None:
        """The end of pass ``boundaries`` (1-based) and the start of the next."""
        if self.boundaries == COUNTED - 1:
            self.recorder.__enter__()  # outside the counter: inside it, it would see nothing in inference mode
            self.counter.__enter__()
            self.counting = True
        elif self.boundaries == COUNTED:
            self.stop_counting()
            synchronize(self.device)
            self._start = time.perf_counter()
        elif self.boundaries == TIMED:
            synchronize(self.device)
            self.seconds = time.perf_counter() - self._start
        self.boundaries += 1

    def stop_counting(self) -> None:
        if self.counting:
            self.counter.__exit__(None, None, None)
            self.recorder.__exit__(None, None, None)
            self.counting = False

    def after_step(self, optimiser: torch.optim.Optimizer, args: tuple, kwargs: dict) -> None:
        if self.boundaries == TIMED:
            self.steps += 1


def measure_training_step(spec: RunSpec, datasets: DatasetPlugins, device: torch.device) -> PassMeasure | str:
    """FLOPs and seconds of one pass of ``spec``'s fit over its support set, or why they cannot be measured."""
    from bench.data import samples as data
    from bench.method import RunContext
    from bench.registry import METHODS
    from bench.run.runner import seed_everything
    from bench.sam.backbones import cached_embeddings, load_backbone

    method_cls = METHODS.get(spec.method)
    hparams = method_cls.resolve_hparams(spec.budget, spec.overrides)
    task = datasets.task(spec.dataset, spec.task)
    by_id = task.by_id("train")
    support = [by_id[sample_id] for sample_id in data.support_ids(task, spec.shots, spec.draw)]
    train = data.train_items(support, spec.dataset, spec.task, spec.labels)
    if method_cls.uses_backbone:  # cached now, so that reading them in fit wraps no loop in ctx.progress
        cached_embeddings(load_backbone(spec.backbone, spec.checkpoint, device), [item.image for item in train])
    passes = _MarkedPasses(device)
    seed_everything(spec.seed)
    method = method_cls(hparams)
    handle = register_optimizer_step_post_hook(passes.after_step)
    try:
        method.fit(train, RunContext(spec=spec, hparams=hparams, device=device, progress=passes))
    finally:
        handle.remove()
        passes.stop_counting()
    if passes.boundaries != PASSES + 1:
        return f"the first loop its fit shows progress for is not its {PASSES} passes over the support set"
    if passes.steps == 0:
        return "its fit took no optimiser step in a pass"
    flops = passes.counter.get_total_flops()
    return PassMeasure(len(train), passes.steps, flops, passes.seconds, passes.recorder.calls)
