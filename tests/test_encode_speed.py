"""The fast encoding path: allocator settings, the measured batch size, and embeddings equal to the eager ones."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from bench.sam.backbones import load_backbone
from bench.sam.embedding_cache import cached_embeddings
from bench.sam.encode_batching import REQUIRED_GAIN, EncodeBatchSizer


def drive(sizer: EncodeBatchSizer, seconds_per_image: dict[int, float], batches: int = 12) -> list[int]:
    """Feed the sizer the given per-image seconds for each size it asks for; the sizes it asked for."""
    asked = []
    for _ in range(batches):
        size = sizer.size()
        asked.append(size)
        sizer.record(size, size * seconds_per_image[size])
    return asked


def test_a_cpu_that_is_slower_per_image_in_batches_keeps_one_image_per_forward():
    sizer = EncodeBatchSizer(largest=16)
    asked = drive(sizer, {1: 0.9, 2: 1.2, 4: 1.5, 8: 2.0, 16: 3.0})
    assert asked[:3] == [1, 1, 2]  # warm-up, then 1 and 2 compared
    assert sizer.chosen == 1 and set(asked[3:]) == {1}


def test_a_device_that_gains_from_batches_grows_to_the_largest_batch():
    sizer = EncodeBatchSizer(largest=8)
    asked = drive(sizer, {1: 1.0, 2: 0.5, 4: 0.3, 8: 0.2})
    assert asked[:5] == [1, 1, 2, 4, 8]
    assert sizer.chosen == 8 and set(asked[5:]) == {8}


def test_growth_stops_at_the_first_size_without_a_clear_gain_and_keeps_the_fastest():
    sizer = EncodeBatchSizer(largest=16)
    gain_too_small = 0.5 * (1 - REQUIRED_GAIN / 2)  # faster than 2, but by less than the required gain
    drive(sizer, {1: 1.0, 2: 0.5, 4: gain_too_small, 8: 0.1, 16: 0.1})
    assert sizer.chosen == 4  # 8 never tried; of those measured, 4 was fastest


def test_warm_up_and_partial_batches_measure_nothing():
    sizer = EncodeBatchSizer(largest=4)
    sizer.record(1, 100.0)  # the first forward: a cold start, not compared
    sizer.record(3, 0.3)  # a partial last batch of another size than asked for
    assert sizer.seconds_per_image == {} and sizer.size() == 1
    assert EncodeBatchSizer(largest=1).size() == 1
    with pytest.raises(ValueError):
        EncodeBatchSizer(largest=0)


def test_cached_embeddings_at_the_measured_batch_size_equal_the_eager_batched_forward(tmp_path):
    backbone = load_backbone("tiny-sam-test")
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, size=(40 + 3 * index, 48), dtype=np.uint8) for index in range(9)]
    embeddings = cached_embeddings(backbone, images, root=tmp_path)
    assert backbone.batch_sizer.seconds_per_image, "the batch size was measured while encoding"
    with torch.inference_mode():
        eager = backbone.image_encoder(torch.stack([backbone.preprocess(image) for image in images]))
    # the cache stores float16 (see bench.sam.embedding_cache): the one stated tolerance is its rounding
    np.testing.assert_allclose(embeddings.numpy(), eager.numpy(), rtol=2**-10, atol=1e-6)


FAULTS_OF_FORWARD_PASSES = """
import resource, sys
import torch
if sys.argv[1] == "keep":
    from bench.compute.allocator import keep_freed_memory
    assert keep_freed_memory()
torch.set_num_threads(1)
model = torch.nn.Sequential(*[torch.nn.Conv2d(16, 16, 3, padding=1) for _ in range(4)]).eval()
batch = torch.rand(4, 16, 256, 256)  # 16 MiB activations, freed and re-allocated by every pass
def faults_of_passes(passes):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    with torch.inference_mode():
        for _ in range(passes):
            model(batch)
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
faults_of_passes(2)
print(faults_of_passes(5))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator settings")
def test_freed_activations_stay_mapped_so_later_passes_do_not_fault_them_in_again():
    def faults(mode: str) -> int:
        run = subprocess.run([sys.executable, "-c", FAULTS_OF_FORWARD_PASSES, mode], capture_output=True, text=True)
        assert run.returncode == 0, run.stderr
        return int(run.stdout.split()[-1])

    activation_pages = (16 << 20) // 4096
    default = faults("default")
    assert default > 2 * activation_pages  # glibc hands the buffers back on free and faults them in again
    # kept: at most a straggler of one activation (glibc's consolidation varies), against several per pass
    assert faults("keep") <= max(activation_pages, default // 10)


def test_a_caller_batch_larger_than_the_backbones_limit_is_preloaded_whole(tmp_path):
    backbone = load_backbone("tiny-sam-test")
    rng = np.random.default_rng(1)
    images = [rng.integers(0, 256, size=(32, 32), dtype=np.uint8) for _ in range(11)]
    batch = 3 * backbone.max_encode_batch  # more than the two backbone batches preprocessed ahead by default
    embeddings = cached_embeddings(backbone, images, batch_size=batch, root=tmp_path)
    with torch.inference_mode():
        eager = backbone.image_encoder(torch.stack([backbone.preprocess(image) for image in images]))
    np.testing.assert_allclose(embeddings.numpy(), eager.numpy(), rtol=2**-10, atol=1e-6)
