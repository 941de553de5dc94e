"""`bench perf encode`: the harness's encoding path against a bare image-encoder forward."""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch

from bench.perf.comparison import Comparison, median_rates, random_images
from bench.sam.backbones import Backbone
from bench.sam.embedding_cache import cached_embeddings


def encode_benchmark(
    backbone: Backbone,
    images: int = 16,
    shape: tuple[int, int] = (640, 640),
    batch_size: int | None = None,
    repeats: int = 3,
    seed: int = 0,
) -> Comparison:
    """The harness's encoding path (digest, preprocess, encode, store float16 to an empty cache) against a
    bare ``image_encoder`` forward over the same, already preprocessed batches already on the device."""
    size = batch_size or backbone.encode_batch_size
    pictures = random_images(images, shape, seed)
    chunks = [pictures[start : start + size] for start in range(0, images, size)]
    batches = [torch.stack([backbone.preprocess(i) for i in chunk]).to(backbone.device) for chunk in chunks]

    @torch.inference_mode()
    def bare() -> None:
        for batch in batches:
            backbone.image_encoder(batch)

    def harness() -> None:
        with tempfile.TemporaryDirectory(prefix="bench-perf-") as root:
            cached_embeddings(backbone, pictures, batch_size=size, root=Path(root))

    bare()  # warm-up: first-call allocations and kernel selection are not what is measured
    harness_rate, bare_rate = median_rates(harness, bare, images, repeats, backbone.device)
    return Comparison(
        what="encode",
        harness="harness path (cached_embeddings, empty cache)",
        reference="bare image_encoder forward",
        backbone=backbone.name,
        device=str(backbone.device),
        images=images,
        batch_size=size,
        harness_per_second=harness_rate,
        reference_per_second=bare_rate,
    )
