"""`persam` and `persam-f`: SAM personalised from reference images and masks (Zhang et al., ICLR 2024).

Re-implemented from the paper and the notes in ``shared/reference/baselines.md`` §2 (the original,
ZrrSkywalker/Personalize-SAM, is MIT-licensed); no code is copied. Both run on cached embeddings.

``persam`` (training-free):

1. target feature: the mean of the reference embedding over the mask, the mask brought to the 64×64 grid
   through the backbone's own resize and pad (bilinear to the grid, cells > 0.5);
2. cosine similarity of the target feature with every location of the test embedding, brought to the image
   through the backbone's own postprocessing; positive point at its maximum, negative point at its minimum;
3. first decoding (one mask) with the two decoder-internal changes: *target-guided attention* (a second
   softmax over attention + sigmoid of the standardised similarity, in the token→image cross-attention of
   every two-way block) and *target-semantic prompting* (the mean feature added to the tokens before every
   block and to the final attention's queries, with the original's in-place shift of the query positional
   encoding);
4. two cascaded refinements with the stock decoder, three masks each, the best by predicted IoU: the points
   plus the previous low-res logits, then also the tight box of the previous mask.

``persam-f``: the frozen decoder's three multimask outputs are mixed by two learnt weights
(``[1 - w1 - w2, w1, w2]``, starting at 1/3), trained on the reference with Dice + focal loss (AdamW, cosine
schedule). The target feature is ``(max + mean) / 2`` over the mask, the prompt the positive point only; the
prompt and the backbone are fixed, so the three logit maps are constant and are computed once. At test time
the mixed logits go through two boxed refinements.

Our choices, recorded in each run's ``hparams``:

* k > 1 references (the original is one-shot; our extension): ``k_shot="average"`` averages the k target
  features (PerSAM-F trains its two weights on all k references, mean loss); ``"pooled"`` pools the masked
  cells of all k references into one set first.
* ``attention_map``: ``"faithful"`` standardises the image-size similarity and resizes it straight to the
  64×64 grid, as the original does, which stretches a non-square image over the padded frame the embedding
  lives in; ``"fixed"`` standardises the grid similarity over the cells that cover the image instead.
* The reference mask reaches the grid through the backbone's geometry, not through pixel normalisation (the
  original's path thresholds the mask's red channel at ≈ 0.485); a structure smaller than a grid cell keeps
  the cells it covers most.
* When a step leaves an empty mask there is no box to refine with: that mask is the result (the original
  fails there).
* PerSAM-F's ``loss_longest_side``: ``None`` (paper budget) computes the loss at the reference's own size,
  as the original; the quick budget at 128 pixels on the longest side (logit maps resized bilinearly, the
  mask by area then > 0.5): the same two weights to within a few hundredths, at a fraction of the cost.

Both methods are deterministic: every seed of a support draw gives the same result; the draws are the
spread over reference choices.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from bench.data.samples import TestItem, TrainItem
from bench.errors import BenchError
from bench.method import Method, RunContext
from bench.methods.persam_steps import (
    attention_bias,
    decode,
    extreme_point,
    max_mean_feature,
    mean_feature,
    probabilities,
    references,
    refine,
    similarity,
    target_feature,
    target_guidance,
)
from bench.progress import no_progress
from bench.records.spec import RunSpec
from bench.registry import METHODS
from bench.sam.backbones import Backbone

K_SHOT = ("average", "pooled")
ATTENTION_MAPS = ("faithful", "fixed")


class _PerSAMBase(Method):
    group = "Automatic — adapted"
    labels = ("mask",)
    default_labels = ("mask",)
    uses_backbone = True

    def __init__(self, hparams: PerSAMParams | PerSAMFParams) -> None:
        super().__init__(hparams)
        if hparams.k_shot not in K_SHOT:
            raise BenchError(f"{self.name} k_shot must be {' or '.join(K_SHOT)}, not '{hparams.k_shot}'")

    @classmethod
    def skip(cls, spec: RunSpec) -> str | None:
        if spec.shots is None:
            return f"{cls.name} personalises SAM from k reference images; it has no all-data setting"
        return super().skip(spec)


@dataclass(frozen=True)
class PerSAMParams:
    # k > 1 references (our extension): "average" the k target features, or "pooled" cells of all k masks
    k_shot: str = "average"
    # "faithful": the image-size similarity resized straight to the grid, as the original; "fixed": on the grid
    attention_map: str = "faithful"


@METHODS.register
class PerSAM(_PerSAMBase):
    name = "persam"
    display_name = "PerSAM"
    learns_weights = False  # it reads the references (one run per support draw) but trains nothing
    HParams = PerSAMParams
    # nothing is trained: both budgets are the published algorithm (the paper uses SAM ViT-H)
    budgets = {"paper": PerSAMParams(), "quick": PerSAMParams()}

    def __init__(self, hparams: PerSAMParams) -> None:
        super().__init__(hparams)
        if hparams.attention_map not in ATTENTION_MAPS:
            raise BenchError(
                f"persam attention_map must be {' or '.join(ATTENTION_MAPS)}, not '{hparams.attention_map}'"
            )
        self.target: torch.Tensor | None = None

    @torch.inference_mode()
    def fit(self, train: list[TrainItem], ctx: RunContext) -> None:
        """No training: the target feature (the mean masked reference feature) is all PerSAM keeps."""
        items, embeddings = references(train, ctx)
        self.target = target_feature(ctx.backbone, items, embeddings, self.hparams.k_shot, mean_feature)

    @torch.inference_mode()
    def predict(self, items: list[TestItem], ctx: RunContext) -> list[np.ndarray]:
        backbone = ctx.backbone
        embeddings = ctx.embeddings([item.image for item in items])
        labels = torch.tensor([1, 0], device=backbone.device)
        outputs: list[np.ndarray] = []
        for item, embedding in ctx.progress(zip(items, embeddings, strict=True), total=len(items),
                                            description=f"{self.name} decoding"):  # fmt: skip
            shape = item.image.shape[:2]
            embedding = embedding.to(backbone.device)
            on_grid, at_image = similarity(backbone, embedding, self.target, shape)
            points = backbone.points_to_input([extreme_point(at_image), extreme_point(at_image, False)], shape)
            bias = attention_bias(backbone, on_grid, at_image, shape, self.hparams.attention_map)
            with target_guidance(backbone.mask_decoder, self.target.reshape(1, 1, -1), bias):
                low_res, _ = decode(backbone, embedding, points, labels, multimask=False)
            low_res = refine(backbone, embedding, points, labels, low_res, shape, boxed=(False, True))
            outputs.append(probabilities(backbone, low_res, shape))
        return outputs


class MaskMixingWeights(nn.Module):
    """PerSAM-F's only trainable part: the weights of the three multimask outputs, ``[1 - w1 - w2, w1, w2]``."""

    def __init__(self) -> None:
        super().__init__()
        self.weights = nn.Parameter(torch.full((2,), 1 / 3))

    def forward(self) -> torch.Tensor:
        return torch.cat([1 - self.weights.sum(0, keepdim=True), self.weights])


@dataclass(frozen=True)
class PerSAMFParams:
    steps: int = 1000
    lr: float = 1e-3
    adam_eps: float = 1e-4
    weight_decay: float = 0.01  # torch's AdamW default, which the original keeps
    # longest side the loss is computed at (logits and mask resized); None: the reference's own size
    loss_longest_side: int | None = None
    # k > 1 references (our extension): "average" the k target features, or "pooled" cells of all k masks
    k_shot: str = "average"


def train_mixing_weights(
    mixing: MaskMixingWeights,
    maps: list[torch.Tensor],
    targets: list[torch.Tensor],
    hp: PerSAMFParams,
    progress: Callable[..., Iterator] = no_progress,
) -> None:
    """Fit the weights to the references' constant logit maps (3×h×w each) and masks (h×w, {0, 1}): Dice
    (+1 smoothing) + focal loss (α 0.25, γ 2) per reference, averaged; AdamW with a cosine schedule."""
    import segmentation_models_pytorch as smp

    dice = smp.losses.DiceLoss("binary", from_logits=True, smooth=1.0)
    focal = smp.losses.FocalLoss("binary", alpha=0.25, gamma=2.0)
    optimiser = torch.optim.AdamW(mixing.parameters(), lr=hp.lr, eps=hp.adam_eps, weight_decay=hp.weight_decay)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, T_max=hp.steps)
    for _ in progress(range(hp.steps), description="persam-f steps"):
        weights = mixing()
        losses = []
        for logit_maps, target in zip(maps, targets, strict=True):
            logits = torch.einsum("k,khw->hw", weights, logit_maps)[None, None]
            losses.append(dice(logits, target[None, None]) + focal(logits, target[None, None]))
        loss = torch.stack(losses).mean()
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        schedule.step()


@METHODS.register
class PerSAMF(_PerSAMBase):
    name = "persam-f"
    display_name = "PerSAM-F"
    HParams = PerSAMFParams
    budgets = {
        # paper (Zhang et al., ICLR 2024; persam_f.py): AdamW lr 1e-3, eps 1e-4, cosine over 1000 steps
        "paper": PerSAMFParams(),
        # quick: the same optimisation with the loss at ≤ 128 px (25× fewer pixels than HC18's 640²): two
        # weights need no finer map, and a 10-shot fit takes ~15 s instead of minutes on one core
        "quick": PerSAMFParams(loss_longest_side=128),
    }
    tiny = {"steps": 5}

    def __init__(self, hparams: PerSAMFParams) -> None:
        super().__init__(hparams)
        self.mixing = MaskMixingWeights()
        self.target: torch.Tensor | None = None

    def _multimask(
        self, backbone: Backbone, embedding: torch.Tensor, shape: tuple[int, int]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The positive point (1×2, input frame) and the three low-res logit maps (1×3×256×256) it prompts."""
        _, at_image = similarity(backbone, embedding, self.target, shape)
        points = backbone.points_to_input([extreme_point(at_image)], shape)
        labels = torch.ones(1, dtype=torch.long, device=backbone.device)
        low_res, _ = decode(backbone, embedding, points, labels)
        return points, labels, low_res

    def _loss_shape(self, shape: tuple[int, int]) -> tuple[int, int]:
        longest = self.hparams.loss_longest_side
        if longest is None or max(shape) <= longest:
            return shape
        scale = longest / max(shape)
        return round(shape[0] * scale), round(shape[1] * scale)

    def fit(self, train: list[TrainItem], ctx: RunContext) -> None:
        hp = self.hparams
        backbone = ctx.backbone
        with torch.no_grad():
            items, embeddings = references(train, ctx)
            self.target = target_feature(backbone, items, embeddings, hp.k_shot, max_mean_feature)
            maps, targets = [], []
            for item, embedding in zip(items, embeddings, strict=True):
                shape = self._loss_shape(item.image.shape[:2])
                _, _, low_res = self._multimask(backbone, embedding, item.image.shape[:2])
                maps.append(backbone.to_image(low_res, shape)[0])
                mask = F.interpolate(torch.from_numpy(item.mask).float()[None, None], shape, mode="area")[0, 0]
                targets.append((mask > 0.5).float().to(backbone.device))
        self.mixing.to(backbone.device)
        train_mixing_weights(self.mixing, maps, targets, hp, ctx.progress)

    @torch.inference_mode()
    def predict(self, items: list[TestItem], ctx: RunContext) -> list[np.ndarray]:
        backbone = ctx.backbone
        embeddings = ctx.embeddings([item.image for item in items])
        weights = self.mixing().reshape(1, -1, 1, 1)
        outputs: list[np.ndarray] = []
        for item, embedding in ctx.progress(zip(items, embeddings, strict=True), total=len(items),
                                            description=f"{self.name} decoding"):  # fmt: skip
            shape = item.image.shape[:2]
            embedding = embedding.to(backbone.device)
            points, labels, low_res = self._multimask(backbone, embedding, shape)
            mixed = (weights * low_res).sum(1, keepdim=True)
            low_res = refine(backbone, embedding, points, labels, mixed, shape, boxed=(True, True))
            outputs.append(probabilities(backbone, low_res, shape))
        return outputs
