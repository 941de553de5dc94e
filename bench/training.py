"""Small pieces every trained method shares: tensors from images, seeded batches, resizing back."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F


def images_to_tensor(images: Sequence[np.ndarray], size: int | None = None) -> torch.Tensor:
    """N×1×S×S float tensor in [0, 1]; images are resized (bilinear) when ``size`` is given."""
    tensors = [torch.from_numpy(np.ascontiguousarray(image)).float().div_(255)[None, None] for image in images]
    if size is not None:
        tensors = [F.interpolate(t, size=(size, size), mode="bilinear", align_corners=False) for t in tensors]
    return torch.cat(tensors)


def masks_to_tensor(masks: Sequence[np.ndarray], size: int | None = None) -> torch.Tensor:
    """N×1×S×S float tensor of {0, 1} targets (area-resized when ``size`` is given, then rounded)."""
    tensors = [torch.from_numpy(np.ascontiguousarray(mask)).float()[None, None] for mask in masks]
    if size is not None:
        tensors = [F.interpolate(t, size=(size, size), mode="area").round_() for t in tensors]
    return torch.cat(tensors)


def epoch_batches(count: int, batch_size: int, generator: torch.Generator) -> Iterator[torch.Tensor]:
    """Index batches of one shuffled epoch; the shuffle comes from the run's seeded generator."""
    order = torch.randperm(count, generator=generator)
    yield from order.split(batch_size)


def probabilities_at(logits: torch.Tensor, shape: tuple[int, int]) -> np.ndarray:
    """Sigmoid of 1×1×h×w logits, bilinearly resized to the image's own ``shape``."""
    resized = F.interpolate(logits.float(), size=shape, mode="bilinear", align_corners=False)
    return torch.sigmoid(resized)[0, 0].cpu().numpy()


def bce_dice_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy plus soft Dice, equal weights (the usual fully supervised loss)."""
    bce = F.binary_cross_entropy_with_logits(logits, targets)
    probabilities = torch.sigmoid(logits)
    dims = tuple(range(1, probabilities.dim()))
    intersection = (probabilities * targets).sum(dims)
    dice = (2 * intersection + 1) / (probabilities.sum(dims) + targets.sum(dims) + 1)
    return bce + (1 - dice).mean()
