"""`bench perf decode`: batched mask decoding against a loop of one-image decodes."""

from __future__ import annotations

import torch

from bench.perf.comparison import Comparison, median_rates
from bench.sam.backbones import Backbone
from bench.sam.embedding_cache import EMBEDDING_SHAPE


def decode_benchmark(backbone: Backbone, images: int = 16, repeats: int = 3, seed: int = 0) -> Comparison:
    """One box per image: ``Backbone.decode`` on the whole batch against a loop of one-image decodes."""
    generator = torch.Generator().manual_seed(seed)
    embeddings = torch.randn((images, *EMBEDDING_SHAPE), generator=generator).to(backbone.device)
    corners = torch.rand((images, 2), generator=generator) * backbone.input_size / 2
    boxes = torch.cat([corners, corners + backbone.input_size / 3], dim=1).to(backbone.device)

    @torch.inference_mode()
    def batched() -> None:
        backbone.decode(embeddings, *backbone.embed_boxes(boxes))

    @torch.inference_mode()
    def one_by_one() -> None:
        for index in range(images):
            backbone.decode(embeddings[index : index + 1], *backbone.embed_boxes(boxes[index : index + 1]))

    one_by_one()  # warm-up
    batched_rate, loop_rate = median_rates(batched, one_by_one, images, repeats, backbone.device)
    return Comparison(
        what="decode",
        harness="batched decode (one prompt per image)",
        reference="loop of one-image decodes",
        backbone=backbone.name,
        device=str(backbone.device),
        images=images,
        batch_size=images,
        harness_per_second=batched_rate,
        reference_per_second=loop_rate,
    )
