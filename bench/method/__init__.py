"""The method contract every plugin implements, and the context the harness hands it.

A plugin declares what it can learn from and its budgets, then implements ``fit`` and ``predict``. Data,
seeds, timing, metrics and storage belong to the harness.
"""

from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from bench.data.samples import TestItem, TrainItem
from bench.errors import BenchError
from bench.progress import no_progress  # noqa: F401 (plugins take the progress helper from here)
from bench.records.descriptions import GROUPS  # noqa: F401 (plugins and the contract tests read it from here)

if TYPE_CHECKING:
    import torch

    from bench.method.resumable import FitCheckpoint
    from bench.records.spec import RunSpec

@dataclass
class RunContext:
    """What the harness gives a method: the spec, its resolved hyper-parameters, device and helpers."""

    spec: RunSpec
    hparams: Any
    device: torch.device
    progress: Callable[..., Iterator] = no_progress
    # one dict of JSON-able scalars (or lists of them) per ``log`` call, stored in the record as ``training_log``
    training_log: list[dict] = dataclasses.field(default_factory=list)
    # where the harness saves a fit that ``epochs`` runs, to go on with it in a later command; None: never saved
    checkpoint: FitCheckpoint | None = None

    def log(self, **values: Any) -> None:
        """Record how training went, kept in the run's record: an entry with an ``epoch`` is a point of the
        training curves (loss terms, sizes); one without is a fact about the whole run (the support boxes)."""
        self.training_log.append(values)

    def epochs(self, count: int, state: dict[str, Any], description: str) -> Iterator[int]:
        """A training loop's epochs, ``range(count)`` under a progress bar, which the harness may save and resume.

        ``state`` names everything the fit changes from epoch to epoch: modules, optimiser, schedule (anything
        with ``state_dict``/``load_state_dict``) and the method's ``torch.Generator``s. A fit killed, or paused by
        ``bench run --stop-after``, goes on from its last saved epoch the next time the run is run
        (``bench.method.resumable``), with the result an uninterrupted fit would have had.
        """
        if self.checkpoint is None:
            return iter(self.progress(range(count), description=description))
        return self.checkpoint.epochs(count, state, self.training_log, self.progress, description)

    @property
    def seed(self) -> int:
        return self.spec.seed

    @property
    def backbone(self) -> Any:
        """The frozen SAM-family backbone named by the spec, built once per process and device."""
        from bench.sam.backbones import load_backbone

        if self.spec.backbone is None:
            raise BenchError(f"method '{self.spec.method}' does not declare uses_backbone = True")
        return load_backbone(self.spec.backbone, self.spec.checkpoint, self.device)

    def embeddings(self, images: Sequence[np.ndarray]) -> torch.Tensor:
        """Image embeddings (N×256×64×64) through the shared on-disk cache; cached images are not encoded."""
        from bench.sam.embedding_cache import cached_embeddings

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
    learns_weights: ClassVar[bool] = True  # False: fit reads the support set but trains nothing (PerSAM)
    prompted: ClassVar[bool] = False  # receives each test image's box as a prompt
    HParams: ClassVar[type]
    budgets: ClassVar[dict[str, Any]]  # {"paper": HParams(...), "quick": HParams(...)}
    # Overrides of the quick budget that make a run take seconds on tiny images: the contract tests use
    # them, so every plugin is exercised by the existing tests (benchopt's "test config" idea).
    tiny: ClassVar[dict[str, Any]] = {}
    # Hyper-parameters a label regime never reads (e.g. the weak-box loss knobs under mask labels): a change of
    # their default does not make that regime's earlier records outdated (bench.run.current.recipe_changes)
    unused_hparams: ClassVar[dict[str, frozenset[str]]] = {}
    # What a record made before a hyper-parameter existed ran with, per key; a record lacking a key not listed
    # here is taken to have run with today's default of that key
    former_hparams: ClassVar[dict[str, Any]] = {}

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
        return dataclasses.replace(cls.budgets[budget], **dict(cls.coerce_overrides(overrides)))

    @classmethod
    def coerce_overrides(cls, overrides: Iterable[tuple[str, object]]) -> tuple[tuple[str, object], ...]:
        """``overrides`` converted to the declared types of the hyper-parameters; a key the method lacks or
        a value that does not fit its type is the user's mistake and fails with one line."""
        types = typing.get_type_hints(cls.HParams)
        known = sorted(types)
        coerced = []
        for key, value in overrides:
            if key not in types:
                raise BenchError(f"{cls.name} has no hyper-parameter {key}; it has {', '.join(known)}")
            try:
                coerced.append((key, _coerce(value, types[key])))
            except (TypeError, ValueError):
                shown = value if isinstance(value, str) else json.dumps(value)
                raise BenchError(
                    f"--set {key}={shown}: {cls.name}'s hyper-parameter {key} takes {_type_name(types[key])}"
                ) from None
        return tuple(sorted(coerced))

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

    def state_dict(self) -> dict[str, torch.Tensor]:
        """What ``fit`` learned, as tensors a saved model holds (``bench run --save-models``).

        By default: the state of every network in an attribute (``modules()``: the ones the parameter counts
        come from, buffers such as BatchNorm statistics included) as ``<attribute>.<key>``, and every tensor
        held directly in an attribute (PerSAM's reference feature) as ``<attribute>``, all on the CPU. A
        training-free method holds none and saves nothing. Override both hooks for state kept elsewhere.
        """
        import torch

        state: dict[str, torch.Tensor] = {}
        for attribute, value in vars(self).items():
            if isinstance(value, torch.nn.Module):
                state.update({f"{attribute}.{key}": tensor.detach().cpu() for key, tensor in
                              value.state_dict().items()})  # fmt: skip
            elif isinstance(value, torch.Tensor):
                state[attribute] = value.detach().cpu()
        return state

    def load_state_dict(self, state: dict[str, torch.Tensor], device: torch.device) -> None:
        """Put back what ``state_dict`` returned, into a method built with the same hyper-parameters, with its
        networks and tensors on ``device``. A state that does not fit raises BenchError (one line)."""
        import torch

        held = vars(self)
        by_module: dict[str, dict[str, torch.Tensor]] = {}
        for key, tensor in state.items():
            attribute, _, inner = key.partition(".")
            kept_as_tensor = attribute in held and isinstance(held[attribute], (torch.Tensor, type(None)))
            if inner and isinstance(held.get(attribute), torch.nn.Module):
                by_module.setdefault(attribute, {})[inner] = tensor
            elif not inner and kept_as_tensor:
                setattr(self, attribute, tensor.to(device))
            else:
                raise BenchError(f"the saved state holds '{key}', which {self.name} does not have")
        modules = {name: value for name, value in held.items() if isinstance(value, torch.nn.Module)}
        untrained = [name for name, module in modules.items() if module.state_dict() and name not in by_module]
        if untrained:
            raise BenchError(f"the saved state holds nothing for {self.name}'s {', '.join(untrained)}")
        for attribute, module_state in by_module.items():
            try:
                held[attribute].load_state_dict(module_state)
            except RuntimeError as error:
                first = str(error).strip().splitlines()[-1].strip()
                raise BenchError(f"the saved state does not fit {self.name}'s {attribute} ({first})") from None
            held[attribute].to(device)

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


_TRUE, _FALSE = {"true", "yes", "on", "1"}, {"false", "no", "off", "0"}


def _coerce(value: object, annotation: Any) -> object:
    """``value`` (as ``--set`` parsed it: JSON where it parses, else text) as an instance of ``annotation``.

    Handles what hyper-parameters are declared as: int, float, bool, str, ``X | None`` and tuples.
    Raises TypeError or ValueError when the value does not fit.
    """
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(annotation)
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null")):
            if type(None) in options:
                return None
        for option in (o for o in options if o is not type(None)):
            try:
                return _coerce(value, option)
            except (TypeError, ValueError):
                continue
        raise ValueError(value)
    if origin is tuple:
        items = typing.get_args(annotation)
        if isinstance(value, str):
            value = [part.strip() for part in value.split(",") if part.strip()]
        if not isinstance(value, (list, tuple)):
            value = [value]
        if len(items) == 2 and items[1] is Ellipsis:
            return tuple(_coerce(item, items[0]) for item in value)
        if items and len(items) != len(value):
            raise ValueError(value)
        return tuple(_coerce(item, kind) for kind, item in zip(items, value, strict=True)) if items else tuple(value)
    if annotation is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, (str, int)) and str(value).lower() in _TRUE | _FALSE:
            return str(value).lower() in _TRUE
        raise ValueError(value)
    if annotation is int:
        if isinstance(value, str):  # an item of a comma-separated tuple
            value = json.loads(value.strip())
        if isinstance(value, bool):
            raise TypeError(value)
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, int):
            return value
        raise ValueError(value)
    if annotation is float:
        if isinstance(value, str):
            value = float(value)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError(value)
        if not math.isfinite(value):
            raise ValueError(value)
        return float(value)
    if annotation is str:
        if isinstance(value, (dict, list)) or value is None:
            raise TypeError(value)
        return value if isinstance(value, str) else json.dumps(value)
    if isinstance(annotation, type) and not isinstance(value, annotation):
        raise TypeError(value)
    return value


def _type_name(annotation: Any) -> str:
    """'an int', 'a float or None', 'a tuple of int' — for the one-line error."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(option) for option in typing.get_args(annotation))
    if annotation is type(None):
        return "None"
    if origin is tuple:
        kinds = [a.__name__ for a in typing.get_args(annotation) if a is not Ellipsis]
        return f"a comma-separated tuple of {' and '.join(dict.fromkeys(kinds)) or 'values'}"
    name = getattr(annotation, "__name__", str(annotation))
    return f"an {name}" if name[0] in "aeiou" else f"a {name}"
