"""`bench perf loss`: the tightness prior from row/column sums against one full-size mask per band.

The published code builds a full-size mask for every band of the box and multiplies it with the
probability map; ``bench.method.box_losses`` takes the band masses from the row and column sums inside the box.
Both variants run forward and backward on the same random batch, each in a fresh process (memory one
variant freed to the C heap would otherwise hide the other's allocations), after one warm-up step. On a
CPU the peak is the rise of the process's resident-set high-water mark over one step (reset first, on
Linux; glibc is told to hand large freed buffers back); on a GPU, the allocator's peak above the inputs.
"""

from __future__ import annotations

import resource
import statistics
import sys
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context

import torch

from bench.compute.timing import Stopwatch, synchronize
from bench.data.samples import Box
from bench.errors import BenchError
from bench.method.box_losses import BAND_WIDTH, BARRIER_T, log_barrier, tightness_prior
from bench.paths import environment_variable


def band_mask_tightness_prior(
    probabilities: torch.Tensor, box: Box, band: int = BAND_WIDTH, t: float = BARRIER_T
) -> torch.Tensor:
    """The reference formulation: every band as a full-size H×W mask, masses as masked sums."""
    masks = []
    widths = []
    for start in range(box.y0, box.y1 + 1, band):
        stop = min(start + band, box.y1 + 1)
        mask = torch.zeros_like(probabilities)
        mask[start:stop, box.x0 : box.x1 + 1] = 1
        masks.append(mask)
        widths.append(stop - start)
    for start in range(box.x0, box.x1 + 1, band):
        stop = min(start + band, box.x1 + 1)
        mask = torch.zeros_like(probabilities)
        mask[box.y0 : box.y1 + 1, start:stop] = 1
        masks.append(mask)
        widths.append(stop - start)
    masses = (torch.stack(masks) * probabilities).sum((1, 2))
    widths_tensor = torch.tensor(widths, dtype=probabilities.dtype, device=probabilities.device)
    return log_barrier(widths_tensor - masses, t).sum()


MMAP_THRESHOLD = "MALLOC_MMAP_THRESHOLD_"
VARIANTS: dict[str, Callable[..., torch.Tensor]] = {
    "row/column sums": tightness_prior,
    "band masks": band_mask_tightness_prior,
}


def _centred_box(size: int, fraction: float) -> Box:
    side = max(1, round(size * fraction))
    start = (size - side) // 2
    return Box(start, start, start + side - 1, start + side - 1)


def _status_mb(field: str) -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise OSError(f"no {field} in /proc/self/status")


def _start_cpu_peak() -> float:
    """Reset the resident-set high-water mark to the current size (Linux) and return the baseline in MiB.

    Elsewhere the high-water mark cannot be reset, so the baseline is the peak so far and the measured
    increase may be an underestimate.
    """
    try:
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")
        return _status_mb("VmRSS")
    except OSError:
        return _cpu_peak_mb()


def _cpu_peak_mb() -> float:
    try:
        return _status_mb("VmHWM")
    except OSError:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak / 2**20 if sys.platform == "darwin" else peak / 2**10


def _measure(variant: str, size: int, batch: int, fraction: float, repeats: int, device_name: str) -> dict:
    """Forward + backward of one variant: peak memory above the inputs, median seconds per batch."""
    device = torch.device(device_name)
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(batch, size, size, generator=generator).to(device).requires_grad_(True)
    box = _centred_box(size, fraction)
    loss_of = VARIANTS[variant]

    def step() -> float:
        probabilities = torch.sigmoid(logits)
        loss = torch.stack([loss_of(probabilities[index], box) for index in range(batch)]).mean()
        loss.backward()
        logits.grad = None
        return loss.item()

    step()  # first-call costs (autograd engine, thread pools) are not the loss's
    synchronize(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        baseline = torch.cuda.memory_allocated(device) / 2**20
    else:
        baseline = _start_cpu_peak()
    value = step()
    synchronize(device)
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device) / 2**20 - baseline
    else:
        peak = _cpu_peak_mb() - baseline
    seconds = []
    for _ in range(repeats):
        with Stopwatch(device) as clock:
            step()
        seconds.append(clock.seconds)
    return {"peak_mb": peak, "seconds": statistics.median(seconds), "loss": value}


@dataclass(frozen=True)
class LossBenchmark:
    """Peak memory (MiB above the inputs) and median seconds of forward + backward, per variant."""

    size: int
    batch: int
    box: Box
    device: str
    results: dict[str, dict]

    def ratio(self, key: str) -> float:
        """Band masks ÷ row/column sums: how many times more memory (``peak_mb``) or time (``seconds``)."""
        fast, naive = (self.results[name][key] for name in VARIANTS)
        return naive / max(fast, 1e-9)

    @property
    def bands(self) -> int:
        """Bands of ``BAND_WIDTH`` pixels across the box's rows plus its columns: the naive variant's mask count."""
        return -(-self.box.height // BAND_WIDTH) + -(-self.box.width // BAND_WIDTH)

    def lines(self) -> list[str]:
        lines = [
            f"tightness prior, forward + backward: batch {self.batch} of {self.size}×{self.size} on "
            f"{self.device}, box {self.box.width}×{self.box.height} ({self.bands} bands of {BAND_WIDTH} px)"
        ]
        for name, result in self.results.items():
            lines.append(
                f"  {name:<18} peak {result['peak_mb']:9.1f} MiB   {result['seconds'] * 1e3:9.1f} ms"
                f"   loss {result['loss']:.6g}"
            )
        lines.append(f"  band masks / row-column sums: memory × {self.ratio('peak_mb'):.1f}, "
                     f"time × {self.ratio('seconds'):.1f}")  # fmt: skip
        return lines


def tightness_benchmark(
    size: int = 640, batch: int = 4, box_fraction: float = 0.6, repeats: int = 5, device: str = "cpu"
) -> LossBenchmark:
    """Both tightness formulations on the same random batch, each in a fresh process."""
    from bench.run.runner import resolve_device

    if not 0 < box_fraction <= 1:
        raise BenchError(f"--box-fraction must lie in (0, 1], not {box_fraction}")
    torch_device = str(resolve_device(device))
    results = {}
    for variant in VARIANTS:
        # spawned children whose glibc returns every freed buffer over 128 KiB to the system: by default glibc
        # raises its mmap threshold after large frees and keeps later buffers on its heap, so after a warm-up
        # step the resident set would no longer show a step's allocations
        with environment_variable(MMAP_THRESHOLD, str(128 * 1024)), ProcessPoolExecutor(
            1, mp_context=get_context("spawn")
        ) as pool:
            job = pool.submit(_measure, variant, size, batch, box_fraction, repeats, torch_device)
            results[variant] = job.result()
    return LossBenchmark(size, batch, _centred_box(size, box_fraction), torch_device, results)
