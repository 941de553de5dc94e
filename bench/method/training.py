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


def shuffled_batches(count: int, batch_size: int, generator: torch.Generator) -> list[list[int]]:
    """One shuffled epoch's batches of indices, the shuffle ``epoch_batches`` draws, as Python lists."""
    positions = torch.randperm(count, generator=generator).tolist()
    return [positions[start : start + batch_size] for start in range(0, count, batch_size)]


def device_batches(
    count: int, batch_size: int, generator: torch.Generator, device: torch.device | str
) -> list[tuple[list[int], torch.Tensor]]:
    """``shuffled_batches`` as (indices, the same indices on ``device``). Both are made once per epoch, so no
    training step reads an index back from the device (a host synchronisation) nor indexes device tensors with
    CPU ones (a copy to the device per step)."""
    batches = shuffled_batches(count, batch_size, generator)
    on_device = torch.tensor([index for batch in batches for index in batch], device=device).split(batch_size)
    return list(zip(batches, on_device, strict=True))


def to_device(tensor: torch.Tensor, device: torch.device | str) -> torch.Tensor:
    """``tensor`` on ``device``; a CPU tensor bound for a GPU goes through pinned memory without blocking, so
    the host prepares the next batch while the copy runs."""
    if torch.device(device).type == "cuda" and tensor.device.type == "cpu":
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor.to(device)


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
