"""How fast a hot path could run without changing what it computes: its matrix products and convolutions
replayed one by one.

``OpRecorder`` notes every call of an operator that ``FlopCounterMode`` counts (``mm``, ``addmm``, ``bmm``,
convolutions forward and backward, fused attention, …) with its arguments' shapes, strides and dtypes.
``replay_seconds`` then runs each distinct call alone on random tensors of the same layout, on the same device
and threads, and sums the medians times the calls. That sum is what those operators cost when each runs at
its own shape's speed with nothing around it: the element-wise work between them (activations, norms, copies,
the optimiser) counts zero. A path timed at ``t`` against a bound ``b`` can get at most ``t / b`` faster unless
its matrix products themselves get faster or fewer — which changes what it computes (precision, recipe) or
needs a better kernel than the one torch picks for that shape alone.
"""

from __future__ import annotations

import statistics
from collections import Counter
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_map
from torch.utils.flop_counter import FlopCounterMode

from bench.compute.timing import repeat_seconds


@dataclass(frozen=True)
class TensorLayout:
    shape: tuple[int, ...]
    stride: tuple[int, ...]
    dtype: torch.dtype
    device: torch.device

    def materialise(self, generator: torch.Generator) -> torch.Tensor:
        """Random values in this layout; overlapping strides (expanded tensors) share their elements, as there."""
        extent = max(1, 1 + sum((size - 1) * stride for size, stride in zip(self.shape, self.stride, strict=True)))
        if self.dtype.is_floating_point:
            values = torch.randn(extent, generator=generator).to(self.device, self.dtype)
        else:
            values = torch.zeros(extent, dtype=self.dtype, device=self.device)
        return values.as_strided(self.shape, self.stride)


def _layout(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return TensorLayout(tuple(value.shape), tuple(value.stride()), value.dtype, value.device)
    return value


def _hashable(value: Any) -> Any:
    if isinstance(value, list | tuple):
        return tuple(_hashable(item) for item in value)
    if isinstance(value, dict):
        return tuple(sorted((key, _hashable(item)) for key, item in value.items()))
    return value


class OpRecorder(TorchDispatchMode):
    """Record the calls of every FLOP-counted operator run inside it (layouts only, no data), counting repeats."""

    def __init__(self) -> None:
        super().__init__()
        self.counted_ops = set(FlopCounterMode(display=False).flop_registry)
        self.calls: Counter = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204 - torch's signature
        kwargs = kwargs or {}
        if func.overloadpacket in self.counted_ops:
            layout = (func, _hashable(tree_map(_layout, args)), _hashable(tree_map(_layout, kwargs)))
            self.calls[layout] += 1
        return func(*args, **kwargs)


def _rebuild(value: Any, generator: torch.Generator) -> Any:
    if isinstance(value, TensorLayout):
        return value.materialise(generator)
    if isinstance(value, tuple):
        return tuple(_rebuild(item, generator) for item in value)
    return value


def replay_seconds(calls: Counter, device: torch.device, repeats: int = 3) -> float:
    """Σ over the distinct recorded calls of (calls × the median seconds of the call run alone)."""
    generator = torch.Generator().manual_seed(0)
    total = 0.0
    for (func, args, kwargs), count in calls.items():
        arguments = [_rebuild(arg, generator) for arg in args]
        keywords = {key: _rebuild(value, generator) for key, value in kwargs}
        with torch.no_grad():
            func(*arguments, **keywords)  # warm-up: kernel selection, scratch space
            seconds = repeat_seconds(lambda: func(*arguments, **keywords), device, repeats)  # noqa: B023
        total += count * statistics.median(seconds)
    return total
