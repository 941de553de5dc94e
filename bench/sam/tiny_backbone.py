"""FOR TESTS ONLY: a tiny random-weight segment-anything model with LiteMedSAM's geometry and real shapes."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import torch

from bench.sam.backbones import Backbone, LiteMedSAM
from bench.sam.batched_decoder import BatchedMaskDecoder
from bench.sam.embedding_cache import EMBEDDING_SHAPE


def tiny_sam(input_size: int = 256, seed: int = 0) -> torch.nn.Module:
    """A segment-anything ``Sam`` with one tiny encoder block and real interface shapes, for tests."""
    from segment_anything.modeling import ImageEncoderViT, PromptEncoder, Sam, TwoWayTransformer

    channels, grid = EMBEDDING_SHAPE[0], EMBEDDING_SHAPE[1:]
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        encoder = ImageEncoderViT(
            img_size=input_size, patch_size=input_size // grid[0], embed_dim=16, depth=1, num_heads=2,
            mlp_ratio=2.0, out_chans=channels, qkv_bias=True, window_size=8,
        )  # fmt: skip
        prompts = PromptEncoder(
            embed_dim=channels, image_embedding_size=grid, input_image_size=(input_size, input_size),
            mask_in_chans=4,
        )  # fmt: skip
        decoder = BatchedMaskDecoder(
            transformer_dim=channels, iou_head_depth=1, iou_head_hidden_dim=16,
            transformer=TwoWayTransformer(depth=1, embedding_dim=channels, mlp_dim=32, num_heads=2),
        )  # fmt: skip
    return Sam(encoder, prompts, decoder)


class TinyRandomSAM(LiteMedSAM):
    """FOR TESTS ONLY: a few-layer segment-anything model with random weights and LiteMedSAM geometry.

    It has the real interfaces and shapes (256² input, 256×64×64 embeddings, 256² low-res logits) so every
    SAM-based code path runs in seconds on a CPU; its masks mean nothing. Weights come from a fixed seed
    unless a checkpoint (saved from this architecture) is given.
    """

    name = "tiny-sam-test"
    display_name = "Tiny random SAM (tests only)"
    architecture = "tiny test SAM"
    preprocessing = "tiny-" + LiteMedSAM.preprocessing
    max_encode_batch = 4
    seed: ClassVar[int] = 0

    @classmethod
    def build_model(cls) -> torch.nn.Module:
        return tiny_sam(cls.input_size, cls.seed)

    @classmethod
    def load(cls, checkpoint: str | Path | None, device: torch.device | str = "cpu") -> Backbone:
        if checkpoint is not None:
            return super().load(checkpoint, device)
        return cls(cls.build_model(), f"random-seed-{cls.seed}", device)
