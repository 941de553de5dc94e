"""Honest timing: CUDA is synchronised before each reading, and peak memory comes from the right place."""

from __future__ import annotations

import resource
import sys
import time
from types import TracebackType

import torch


def synchronize(device: torch.device | str | None) -> None:
    if device is not None and torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


class Stopwatch:
    """Context manager measuring wall seconds; on a CUDA device, queued kernels are waited for first."""

    def __init__(self, device: torch.device | str | None = None) -> None:
        self.device = device
        self.seconds = 0.0
        self._start = 0.0

    def __enter__(self) -> Stopwatch:
        synchronize(self.device)
        self._start = time.perf_counter()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        synchronize(self.device)
        self.seconds = time.perf_counter() - self._start


def reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_mb(device: torch.device) -> float:
    """Peak allocated CUDA memory on a GPU; on a CPU the process's peak resident set size.

    The CPU figure is process-wide: with the inline executor it is the maximum over every run so far in
    that process, so compare CPU peaks from the process-pool executor (one run per process on Python ≥ 3.11).
    """
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10
