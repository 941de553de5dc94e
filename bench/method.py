"""The method contract every plugin implements, and the context the harness hands it.

A plugin declares what it can learn from and its budgets, then implements ``fit`` and ``predict``. Data,
seeds, timing, metrics and storage belong to the harness.
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

import numpy as np

from bench.data import TestItem, TrainItem
from bench.errors import BenchError

if TYPE_CHECKING:
    import torch

    from bench.spec import RunSpec

GROUPS = ("Promptable", "Automatic — fully trained", "Automatic — adapted", "Ours")
ItemT = TypeVar("ItemT")


def no_progress(iterable: Iterable[ItemT], total: int | None = None, description: str = "") -> Iterator[ItemT]:
    yield from iterable


@dataclass
class RunContext:
    """What the harness gives a method: the spec, its resolved hyper-parameters, device and helpers."""

    spec: RunSpec
    hparams: Any
    device: torch.device
    progress: Callable[..., Iterator] = no_progress

    @property
    def seed(self) -> int:
        return self.spec.seed

    @property
    def backbone(self) -> Any:
        """The frozen SAM-family backbone named by the spec, built once per process and device."""
        from bench.backbones import load_backbone

        if self.spec.backbone is None:
            raise BenchError(f"method '{self.spec.method}' does not declare uses_backbone = True")
        return load_backbone(self.spec.backbone, self.spec.checkpoint, self.device)

    def embeddings(self, images: Sequence[np.ndarray]) -> torch.Tensor:
        """Image embeddings (N×256×64×64) through the shared on-disk cache; cached images are not encoded."""
        from bench.backbones import cached_embeddings

        return cached_embeddings(self.backbone, images, progress=self.progress)


class Method(ABC):
    """Base class of method plugins. Subclasses set the class attributes and implement fit/predict."""

    name: ClassVar[str]
    display_name: ClassVar[str]
    group: ClassVar[str]  # one of GROUPS: where the method sits in Table 1
    labels: ClassVar[tuple[str, ...]]  # label regimes it can learn from (or, if prompted, be prompted with)
    default_labels: ClassVar[tuple[str, ...]]  # what `bench run` uses when --labels is not given
    uses_backbone: ClassVar[bool] = False
    training_free: ClassVar[bool] = False  # deterministic and untrained: run once per task, not per seed
    prompted: ClassVar[bool] = False  # receives each test image's box as a prompt
    HParams: ClassVar[type]
    budgets: ClassVar[dict[str, Any]]  # {"paper": HParams(...), "quick": HParams(...)}
    # Overrides of the quick budget that make a run take seconds on tiny images: the contract tests use
    # them, so every plugin is exercised by the existing tests (benchopt's "test config" idea).
    tiny: ClassVar[dict[str, Any]] = {}

    def __init__(self, hparams: Any) -> None:
        self.hparams = hparams

    @classmethod
    def skip(cls, spec: RunSpec) -> str | None:
        """Why this method cannot run ``spec``, or None. Subclasses extend this with their own limits."""
        if spec.labels not in cls.labels:
            return f"{cls.name} learns from {' or '.join(cls.labels)} labels, not {spec.labels}"
        return None

    @classmethod
    def resolve_hparams(cls, budget: str, overrides: Iterable[tuple[str, object]] = ()) -> Any:
        """The budget's hyper-parameters with ``--set key=value`` overrides applied (unknown keys fail)."""
        base = cls.budgets[budget]
        known = {f.name for f in dataclasses.fields(base)}
        changes = dict(overrides)
        unknown = sorted(set(changes) - known)
        if unknown:
            raise BenchError(
                f"{cls.name} has no hyper-parameter {', '.join(unknown)}; it has {', '.join(sorted(known))}"
            )
        return dataclasses.replace(base, **changes)

    @abstractmethod
    def fit(self, train: list[TrainItem], ctx: RunContext) -> None:
        """Learn from the support set. Training-free methods implement this as a no-op."""

    @abstractmethod
    def predict(self, items: list[TestItem], ctx: RunContext) -> list[np.ndarray]:
        """Foreground probabilities in [0, 1], one float array per item at that image's own size."""

    def modules(self) -> list[torch.nn.Module]:
        """Every network the method holds (frozen ones too), for the parameter counts in the record."""
        import torch

        return [value for value in vars(self).values() if isinstance(value, torch.nn.Module)]

    def parameter_counts(self, frozen: Sequence[torch.nn.Module] = ()) -> tuple[int, int]:
        """(total, trainable) parameters over ``modules()`` and ``frozen`` (the backbone the harness lends a
        method that uses one), each parameter counted once."""
        seen: dict[int, Any] = {}
        for module in [*self.modules(), *frozen]:
            for parameter in module.parameters():
                seen[id(parameter)] = parameter
        total = sum(p.numel() for p in seen.values())
        trainable = sum(p.numel() for p in seen.values() if p.requires_grad)
        return total, trainable
