"""Keep freed memory in the process (glibc), so that each forward pass does not fault its activations in again.

glibc's defaults give allocations above a dynamic threshold (128 KiB rising to 32 MiB) their own ``mmap`` and
return them to the system on ``free``; the heap is trimmed whenever 128 KiB are free at its top. A network's
activations are exactly such buffers, freed and re-allocated on every forward: on the 2-core CPU this
project is measured on, encoding with LiteMedSAM spent as much time in the kernel as in arithmetic (6.8 million
minor page faults for 16 images at batch 1). Raising the thresholds keeps those pages mapped between passes:
the same encoder ran 1.7–1.9× faster with 99 % fewer faults (``bench perf encode``; docs/performance.md).

The settings are glibc's ``mallopt`` knobs (the ``MALLOC_*_`` environment variables set the same ones, but only
before the process starts, which a harness cannot ask of its users). Elsewhere (macOS, musl) it does nothing.
The cost is memory held after a peak: ``bench.compute.timing`` hands it back with ``malloc_trim`` between runs, which
these settings do not prevent.
"""

from __future__ import annotations

import ctypes
import functools

# mallopt parameter numbers, from glibc's malloc.h
_M_TRIM_THRESHOLD = -1
_M_TOP_PAD = -2
_M_MMAP_THRESHOLD = -3

# 1 GiB: above any single activation of the backbones and trained networks at the batch sizes used here
MMAP_THRESHOLD_BYTES = 1 << 30
TRIM_THRESHOLD_BYTES = 1 << 30
TOP_PAD_BYTES = 64 << 20


@functools.cache
def keep_freed_memory() -> bool:
    """Apply the settings once per process; True where glibc accepted them."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc
        return False
    settings = (
        (_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES),
        (_M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES),
        (_M_TOP_PAD, TOP_PAD_BYTES),
    )
    return all(mallopt(parameter, value) == 1 for parameter, value in settings)
