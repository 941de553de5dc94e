"""Torch-level helpers every layer above uses: device and precision, stopwatches and peak memory, the allocator."""
