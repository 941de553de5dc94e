"""The weak-box losses: box emptiness, tightness prior and size prior (the one implementation).

Every method that learns from tight boxes (``prompt-module``, ``unet --labels box``) trains with
``box_loss``. The terms follow the weak-box paper (after Kervadec et al., MIDL 2020), on the foreground
probability p at the sample's own resolution:

* emptiness — binary cross-entropy pushing p → 0 on every pixel outside the box, averaged over all
  outside pixels of the batch (weight 1);
* tightness — the box is cut into bands ``BAND_WIDTH`` pixels wide along each axis (plus a remainder
  band); every line crossing a tight box meets the object, so a band of width w must hold at least w
  of foreground mass: Σ ψ(w − mass) over the bands, averaged over the batch (weight 1e-4);
* size — the soft size V = Σ p must lie in [0.5 A, 0.9 A] for box area A:
  [ψ(V − 0.9 A) + ψ(0.5 A − V)] / A, averaged over the batch (weight 1e-2);

with ψ the pseudo log-barrier of Kervadec et al. ("Constrained deep networks: Lagrangian optimization
via log-barrier extensions"), t = 5.

Band masses come from the row and column sums of p inside the box, so the tightness term costs O(H·W)
memory; materialising one full-size mask per band (as the published code does) costs O(bands·H·W).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F

from bench.data.samples import Box

BARRIER_T = 5.0
BAND_WIDTH = 5
SIZE_BOUNDS = (0.5, 0.9)
EMPTINESS_WEIGHT = 1.0
TIGHTNESS_WEIGHT = 1e-4
SIZE_WEIGHT = 1e-2


def log_barrier(z: torch.Tensor, t: float = BARRIER_T) -> torch.Tensor:
    """The pseudo log-barrier ψ_t(z) for a constraint z ≤ 0: −log(−z)/t, extended linearly past −1/t².

    The linear piece has the log branch's value and slope (t) at z = −1/t², so ψ is C¹ and finite for
    violated constraints (z > 0), where a true barrier would be infinite.
    """
    switch = -1.0 / t**2
    # log() must never see the non-negative z of the discarded branch (its NaN gradient would leak through
    # torch.where); where() rather than clamp() so the slope at z = −1/t² itself is the log branch's.
    on_log_branch = z <= switch
    log_branch = -torch.log(-torch.where(on_log_branch, z, torch.full_like(z, switch))) / t
    linear_branch = t * z - math.log(1.0 / t**2) / t + 1.0 / t
    return torch.where(on_log_branch, log_branch, linear_branch)


def _bands(lengths: torch.Tensor, band: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(widths, masses) of consecutive bands of ``band`` lines, given the mass of each line."""
    count = lengths.numel()
    padded = F.pad(lengths, (0, (-count) % band))
    masses = padded.view(-1, band).sum(1)
    widths = torch.full_like(masses, float(band))
    if count % band:
        widths[-1] = count % band
    return widths, masses


def band_masses(
    probabilities: torch.Tensor, box: Box, band: int = BAND_WIDTH
) -> tuple[torch.Tensor, torch.Tensor]:
    """Widths and foreground masses of every band of ``box`` (row bands first, then column bands).

    ``probabilities`` is H×W; a band of rows spans the box's columns and vice versa.
    """
    inside = probabilities[box.y0 : box.y1 + 1, box.x0 : box.x1 + 1]
    row_widths, row_masses = _bands(inside.sum(1), band)
    col_widths, col_masses = _bands(inside.sum(0), band)
    return torch.cat([row_widths, col_widths]), torch.cat([row_masses, col_masses])


def tightness_prior(
    probabilities: torch.Tensor, box: Box, band: int = BAND_WIDTH, t: float = BARRIER_T
) -> torch.Tensor:
    """Σ over the box's bands of ψ(width − mass) for one H×W probability map."""
    widths, masses = band_masses(probabilities, box, band)
    return log_barrier(widths - masses, t).sum()


def size_prior(
    probabilities: torch.Tensor,
    box: Box,
    bounds: tuple[float, float] = SIZE_BOUNDS,
    t: float = BARRIER_T,
    on_box_fraction: bool = False,
) -> torch.Tensor:
    """[ψ(V − upper·A) + ψ(lower·A − V)] / A for the soft size V = Σ p and the box area A.

    ``on_box_fraction`` puts the barrier on the fraction r = V / A instead: ψ(r − upper) + ψ(lower − r).
    Past the bounds both forms have the same slope (t per unit of r), but inside them the pixel form's pull
    is 1/(t·(upper·A − V)) per pixel, about A times weaker (A ≈ 10⁵ px for a fetal head), so it vanishes
    and the bounds act as walls only; the fraction form keeps the barrier's pull towards the middle of the
    bounds for every box, small or large.
    """
    size = probabilities.sum()
    area = float(box.area)
    lower, upper = bounds
    if on_box_fraction:
        fraction = size / area
        return log_barrier(fraction - upper, t) + log_barrier(lower - fraction, t)
    return (log_barrier(size - upper * area, t) + log_barrier(lower * area - size, t)) / area


def box_emptiness(logits: Sequence[torch.Tensor], boxes: Sequence[Box]) -> torch.Tensor:
    """BCE towards background on every pixel outside its box, averaged over all outside pixels of the batch.

    Computed from logits (BCE with target 0 is softplus(logit)), which stays exact where the sigmoid
    saturates. The outside sum is the image's sum minus the box's, so no outside mask is built.
    """
    total = logits[0].new_zeros(())
    outside = 0
    for logit, box in zip(logits, boxes, strict=True):
        per_pixel = F.softplus(logit)
        inside = per_pixel[box.y0 : box.y1 + 1, box.x0 : box.x1 + 1]
        total = total + per_pixel.sum() - inside.sum()
        outside += logit.numel() - box.area
    return total / max(outside, 1)


class BoxLoss(NamedTuple):
    total: torch.Tensor
    emptiness: torch.Tensor
    tightness: torch.Tensor
    size: torch.Tensor


@dataclass(frozen=True)
class BoxLossSettings:
    """The knobs of ``box_loss``; the defaults are the weak-box paper's."""

    barrier_t: float = BARRIER_T
    band_width: int = BAND_WIDTH
    size_bounds: tuple[float, float] = SIZE_BOUNDS
    emptiness_weight: float = EMPTINESS_WEIGHT
    tightness_weight: float = TIGHTNESS_WEIGHT
    size_weight: float = SIZE_WEIGHT
    size_on_box_fraction: bool = False  # the size barrier on V / A rather than on V in pixels (size_prior)


def box_loss(
    logits: Sequence[torch.Tensor], boxes: Sequence[Box], settings: BoxLossSettings = BoxLossSettings()
) -> BoxLoss:
    """The weighted weak-box loss of a batch: one H×W logit map per sample (sizes may differ), its box.

    The boxes are in each map's own pixel frame: pass logits at the sample's own resolution.
    """
    if len(logits) != len(boxes) or not len(boxes):
        raise ValueError(f"box_loss needs one box per logit map, got {len(logits)} maps, {len(boxes)} boxes")
    probabilities = [torch.sigmoid(logit) for logit in logits]
    emptiness = box_emptiness(logits, boxes)
    pairs = list(zip(probabilities, boxes, strict=True))
    t = settings.barrier_t
    tightness = torch.stack([tightness_prior(p, box, settings.band_width, t) for p, box in pairs]).mean()
    size = torch.stack(
        [size_prior(p, box, settings.size_bounds, t, settings.size_on_box_fraction) for p, box in pairs]
    ).mean()
    total = (settings.emptiness_weight * emptiness + settings.tightness_weight * tightness
             + settings.size_weight * size)  # fmt: skip
    return BoxLoss(total, emptiness, tightness, size)
