"""Honest timing: CUDA is synchronised before each reading, and peak memory is each run's own."""

from __future__ import annotations

import ctypes
import gc
import os
import re
import threading
import time
from collections.abc import Callable
from pathlib import Path
from time import monotonic
from types import TracebackType

import torch

from bench.errors import BenchError


def synchronize(device: torch.device | str | None) -> None:
    if device is not None and torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


class Stopwatch:
    """Context manager measuring wall seconds; on a CUDA device, queued kernels are waited for first."""

    def __init__(self, device: torch.device | str | None = None) -> None:
        self.device = device
        self.seconds = 0.0
        self.started = 0.0  # time.perf_counter() at the start

    def __enter__(self) -> Stopwatch:
        synchronize(self.device)
        self.started = time.perf_counter()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        synchronize(self.device)
        self.seconds = time.perf_counter() - self.started


# one or more number-unit pairs, largest first by convention: "8m", "90s", "1h30m", "0.5h"
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)([hms])")
_UNIT_SECONDS = {"h": 3600.0, "m": 60.0, "s": 1.0}


def parse_duration(text: str, option: str = "--stop-after") -> float:
    """Seconds in a duration written as number-unit pairs (h, m, s): "8m", "90s", "1h30m"."""
    compact = text.strip().lower().replace(" ", "")
    parts = _DURATION_PART.findall(compact)
    if not parts or "".join(number + unit for number, unit in parts) != compact:
        raise BenchError(f"{option} takes a duration such as 8m, 90s or 1h30m, not '{text}'")
    return sum(float(number) * _UNIT_SECONDS[unit] for number, unit in parts)


class Deadline:
    """The moment after which a grid starts no new run (``bench run --stop-after``); no limit when ``seconds``
    is None. It counts from its creation, i.e. from the start of the command, loading and encoding included,
    so that the command fits the time slice it was given."""

    def __init__(self, seconds: float | None = None) -> None:
        self.seconds = seconds
        self._end = None if seconds is None else monotonic() + seconds

    def passed(self) -> bool:
        return self._end is not None and monotonic() >= self._end


def repeat_seconds(call: Callable[[], object], device: torch.device | str, repeats: int) -> list[float]:
    """The seconds each of ``repeats`` calls of ``call`` takes on ``device``.

    On a GPU through CUDA events recorded in the stream around each call and read after one synchronisation at
    the end, so a call of a few microseconds is timed without a host synchronisation around it (which would
    cost more than the call); on a CPU with the wall clock.
    """
    if torch.device(device).type != "cuda":
        seconds = []
        for _ in range(repeats):
            start = time.perf_counter()
            call()
            seconds.append(time.perf_counter() - start)
        return seconds
    events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(repeats)]
    for start, end in events:
        start.record()
        call()
        end.record()
    torch.cuda.synchronize(device)
    return [start.elapsed_time(end) / 1000 for start, end in events]


def resident_set_mb() -> float | None:
    """This process's resident set size now, from ``/proc/self/statm`` (Linux); None where there is none."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return None
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def _return_freed_memory() -> None:
    """Hand memory that earlier runs freed back to the system (glibc's ``malloc_trim``; a no-op elsewhere), so a
    run that re-uses it is not measured as needing nothing."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        return


class PeakMemory:
    """Context manager measuring one run's own peak memory, in MB, and naming what that figure is.

    On a GPU it is the CUDA allocator's peak over the block minus what was allocated when the block started
    (the resident backbone, anything an earlier run of the process still holds): the run's own rise. On a CPU
    a daemon thread samples the resident set every ``interval`` seconds (psutil is not a dependency, so it
    reads ``/proc/self/statm``) and the figure is the highest sample minus the resident set at the start: the
    memory this run added, whichever executor ran it and whatever earlier runs in the same process left behind.
    Short allocations between two samples can be missed; ``kind`` is None and ``mb`` None where the resident
    set cannot be read (not Linux).
    """

    def __init__(self, device: torch.device, interval: float = 0.01) -> None:
        self.device = device
        self.interval = interval
        self.mb: float | None = None
        self.kind: str | None = None
        self._baseline: float | None = None
        self._highest = 0.0
        self._stop = threading.Event()
        self._sampler: threading.Thread | None = None

    def _sample(self) -> None:
        while True:
            current = resident_set_mb()
            if current is not None:
                self._highest = max(self._highest, current)
            if self._stop.wait(self.interval):
                return

    def __enter__(self) -> PeakMemory:
        _return_freed_memory()  # also frees the tensors of earlier runs that only reference cycles kept alive
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._baseline = torch.cuda.memory_allocated(self.device) / 2**20
            return self
        self._baseline = resident_set_mb()
        if self._baseline is not None:
            self._highest = self._baseline
            self._sampler = threading.Thread(target=self._sample, name="peak-memory", daemon=True)
            self._sampler.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            highest = torch.cuda.max_memory_allocated(self.device) / 2**20
            self.mb, self.kind = highest - (self._baseline or 0.0), "cuda-allocator-increase"
            return
        if self._sampler is None or self._baseline is None:
            return
        self._stop.set()
        self._sampler.join()
        final = resident_set_mb()
        highest = max(self._highest, final if final is not None else 0.0)
        self.mb, self.kind = highest - self._baseline, "cpu-rss-increase"
