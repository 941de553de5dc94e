"""`autosam`: AutoSAM (Shaharabany et al., "AutoSAM: Adapting SAM to Medical Images by Overloading the Prompt
Encoder", BMVC 2023), re-implemented from the paper and the reference notes (``baselines.md`` §3).

A prompt network replaces SAM's prompt encoder: HarDNet-85 (:mod:`bench.methods.hardnet`) reads the image,
a small decoder fuses its 1/16, 1/8 and 1/4 maps (×2 bilinear up, concatenate, two 3×3 convs, BatchNorm,
leaky ReLU; twice) and a head (3×3 conv 192→256, BatchNorm, ReLU, 3×3 conv 256→256, tanh) gives a
256-channel map, resized to the decoder's 64×64 grid: the **dense** prompt embedding. There are no sparse
tokens. The backbone's frozen mask decoder turns the image embedding (from the shared cache: the image
encoder never runs during training) and that dense prompt into the mask, and only the prompt network learns,
with gradients passed through the frozen decoder. Loss: BCE + soft Dice (the original's Tversky loss with
α = β = 0.5), per sample at its own resolution (``backbone.to_image``) like the other methods here, where
the original uses the 256² low-resolution map of the padded frame.

Parameters: HarDNet-85 without its classifier has 35,389,212 and the decoder 6,168,576, 41,557,788 in all:
the 41.6 M the seed paper gives. The original computes HarDNet's 1/32 stage (17,505,664 parameters) but
never uses it, so those weights never learn and never change the output; this prompt network does not build
it and trains 24,052,124 parameters (``params_trainable`` in the record).

Deviations from the original code, on purpose:

* the image is ImageNet-normalised **once** (the original normalises SAM's input twice, a bug that shows
  its ViT a nearly constant image);
* the **last** model is tested, like every method here (the original keeps the epoch with the best test
  IoU, which is model selection on the test set);
* the prompt network sees the image laid out as the backbone lays it out (LiteMedSAM and SAM: longest side
  to the frame, zero-padded bottom/right after normalisation, i.e. at the mean colour; MedSAM ViT-B:
  stretched), at ``input_size`` instead of the backbone's side, so its 64×64 output lies on the image
  embedding's grid also for non-square images; resizing is bilinear with antialiasing, half-pixel aligned;
* ``output="sigmoid"`` (default): the logits go through a sigmoid, BCE works on the logits and predictions
  are probabilities thresholded at 0.5 by the harness. ``output="min-max"`` is the original's per-image
  min-max normalisation of the logits (here at the image's own size, not in the padded frame), used for the
  loss and the prediction: a relative threshold, so an image without the structure still gets foreground;
* no data augmentation (the original jitters colours, flips and warps): the embeddings come from the
  cache, so the image seen by the prompt network must stay the one the backbone encoded;
* gradient accumulation averages the loss over each window of ``batch_size × accumulation_steps`` shuffled
  samples (the last window of an epoch may be shorter) and steps once per window;
* HarDNet-85 starts from random weights unless ``hardnet_weights`` names a local copy of the released
  ImageNet checkpoint (the original downloads it; nothing here does).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from bench.data.samples import TestItem, TrainItem
from bench.errors import BenchError
from bench.method import Method, RunContext
from bench.method.training import bce_dice_loss, device_batches
from bench.methods.hardnet import HarDNet85, load_imagenet_weights
from bench.registry import METHODS
from bench.sam.embedding_cache import EMBEDDING_SHAPE

OUTPUTS = ("sigmoid", "min-max")


class FuseUp(nn.Module):
    """Upsample the deeper map to the skip's size, concatenate, two 3×3 convs, BatchNorm, leaky ReLU."""

    def __init__(self, deep_channels: int, skip_channels: int, out_channels: int) -> None:
        super().__init__()
        self.convs = nn.Sequential(
            nn.Conv2d(deep_channels + skip_channels, out_channels, 3, padding=1),
            nn.Conv2d(out_channels, out_channels, 3, padding=1),
            nn.BatchNorm2d(out_channels),
            nn.LeakyReLU(),
        )

    def forward(self, deep: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        upsampled = F.interpolate(deep, size=skip.shape[-2:], mode="bilinear", align_corners=False)
        return self.convs(torch.cat([upsampled, skip], 1))


class PromptNetwork(nn.Module):
    """Image (B×3×S×S, ImageNet-normalised) → dense prompt embedding (B×256×64×64) in [−1, 1]."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder = HarDNet85(levels=4)  # maps at 1/2, 1/4, 1/8, 1/16; the 1/32 stage is unused
        _, quarter, eighth, sixteenth = self.encoder.out_channels
        self.fuse_eighth = FuseUp(sixteenth, eighth, eighth)
        self.fuse_quarter = FuseUp(eighth, quarter, quarter)
        channels, *grid = EMBEDDING_SHAPE
        self.grid = tuple(grid)
        self.head = nn.Sequential(
            nn.Conv2d(quarter, channels, 3, padding=1),
            nn.BatchNorm2d(channels),
            nn.ReLU(),
            nn.Conv2d(channels, channels, 3, padding=1),
            nn.Tanh(),
        )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        _, quarter, eighth, sixteenth = self.encoder(images)
        dense = self.head(self.fuse_quarter(self.fuse_eighth(sixteenth, eighth), quarter))
        return F.interpolate(dense, size=self.grid, mode="bilinear", align_corners=False)


def network_input(image: np.ndarray, backbone, size: int) -> torch.Tensor:
    """3×size×size: the image where the backbone puts it in its input frame, ImageNet-normalised once and
    zero-padded (bottom/right) like the backbone's own input."""
    from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

    height, width = backbone.input_shape(image.shape[:2])
    rows, cols = round(height * size / backbone.input_size), round(width * size / backbone.input_size)
    pixels = torch.from_numpy(np.ascontiguousarray(image)).float().div_(255)
    pixels = pixels[None].expand(3, -1, -1) if pixels.dim() == 2 else pixels.permute(2, 0, 1)
    resized = F.interpolate(pixels[None], (rows, cols), mode="bilinear", align_corners=False, antialias=True)[0]
    mean = torch.tensor(IMAGENET_DEFAULT_MEAN)[:, None, None]
    std = torch.tensor(IMAGENET_DEFAULT_STD)[:, None, None]
    return F.pad((resized - mean) / std, (0, size - cols, 0, size - rows))


def min_max(logits: torch.Tensor) -> torch.Tensor:
    """The original's output normalisation: logits rescaled to [0, 1] over the whole map."""
    low, high = logits.min(), logits.max()
    return (logits - low) / (high - low).clamp_min(1e-8)


@dataclass(frozen=True)
class AutoSAMParams:
    epochs: int = 200
    input_size: int = 512  # the prompt network's input side (the original's Idim; a multiple of 32)
    batch_size: int = 3
    accumulation_steps: int = 4  # the optimiser steps once per batch_size × accumulation_steps samples
    lr: float = 3e-4
    weight_decay: float = 1e-4  # coupled L2 (torch.optim.Adam), as in the original
    output: str = "sigmoid"  # "sigmoid", or "min-max": the original's per-image min-max of the logits
    hardnet_weights: str | None = None  # a local HarDNet-85 ImageNet checkpoint; None: random initialisation
    decode_batch_size: int = 8  # test images run together; changes speed only


@METHODS.register
class AutoSAM(Method):
    name = "autosam"
    display_name = "AutoSAM"
    group = "Automatic — adapted"
    labels = ("mask",)
    default_labels = ("mask",)
    uses_backbone = True
    HParams = AutoSAMParams
    budgets = {
        # paper: the original's train.py (Shaharabany et al., BMVC 2023) — Idim 512, Adam lr 3e-4, weight
        # decay 1e-4, batch 3 with gradient accumulation over 4 steps; 200 epochs, the last one tested (the
        # original's 5000 epochs are a loop ceiling: it keeps the epoch with the best test IoU)
        "paper": AutoSAMParams(),
        # quick: 128² input (HarDNet then costs about twice the frozen decoder per image), batch 2 without
        # accumulation so a 10-shot epoch makes 5 steps, 10 epochs: a 10-shot synthetic run fits in about a
        # minute on 2 CPU cores. 256² or fewer steps left synthetic Dice far lower at that cost
        "quick": AutoSAMParams(epochs=10, input_size=128, batch_size=2, accumulation_steps=1),
    }
    tiny = {"epochs": 2, "input_size": 64}

    def __init__(self, hparams: AutoSAMParams) -> None:
        super().__init__(hparams)
        if hparams.output not in OUTPUTS:
            raise BenchError(f"autosam output must be {' or '.join(OUTPUTS)}, not '{hparams.output}'")
        if hparams.input_size <= 0 or hparams.input_size % 32:
            raise BenchError(f"autosam input_size must be a positive multiple of 32, not {hparams.input_size}")
        self.network = PromptNetwork()
        if hparams.hardnet_weights is not None:
            load_imagenet_weights(self.network.encoder, hparams.hardnet_weights)

    def _inputs(self, backbone, images: list[np.ndarray]) -> torch.Tensor:
        return torch.stack([network_input(image, backbone, self.hparams.input_size) for image in images])

    def _logits_at_own_size(
        self, backbone, embeddings: torch.Tensor, inputs: torch.Tensor, shapes: list[tuple[int, int]]
    ) -> list[torch.Tensor]:
        dense = self.network(inputs)
        no_sparse = embeddings.new_zeros(len(embeddings), 0, embeddings.shape[1])
        low_res = backbone.decode(embeddings, no_sparse, dense)
        return [backbone.to_image(low_res[i : i + 1], shape)[0, 0] for i, shape in enumerate(shapes)]

    def _loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if self.hparams.output == "sigmoid":
            return bce_dice_loss(logits[None, None], target[None, None])
        normalised = min_max(logits)
        overlap = (2 * (normalised * target).sum() + 1) / (normalised.sum() + target.sum() + 1)
        return F.binary_cross_entropy(normalised, target) + 1 - overlap

    def _probabilities(self, logits: torch.Tensor) -> np.ndarray:
        scores = torch.sigmoid(logits) if self.hparams.output == "sigmoid" else min_max(logits)
        return scores.float().cpu().numpy()

    def fit(self, train: list[TrainItem], ctx: RunContext) -> None:
        hp = self.hparams
        backbone = ctx.backbone
        embeddings = ctx.embeddings([item.image for item in train]).to(ctx.device)
        inputs = self._inputs(backbone, [item.image for item in train]).to(ctx.device)
        shapes = [item.image.shape[:2] for item in train]
        targets = [torch.from_numpy(item.mask).float().to(ctx.device) for item in train]
        self.network.to(ctx.device).train()
        optimiser = torch.optim.Adam(self.network.parameters(), lr=hp.lr, weight_decay=hp.weight_decay)
        generator = torch.Generator().manual_seed(ctx.seed)
        window = hp.batch_size * hp.accumulation_steps
        state = {"network": self.network, "optimiser": optimiser, "generator": generator}
        for _ in ctx.epochs(hp.epochs, state, description=f"{self.name} epochs"):
            for window_indices, samples in device_batches(len(train), window, generator, ctx.device):
                optimiser.zero_grad(set_to_none=True)
                for start in range(0, len(window_indices), hp.batch_size):
                    indices = window_indices[start : start + hp.batch_size]
                    batch = samples[start : start + hp.batch_size]
                    logits = self._logits_at_own_size(
                        backbone, embeddings[batch], inputs[batch], [shapes[i] for i in indices]
                    )
                    losses = [self._loss(logit, targets[i]) for logit, i in zip(logits, indices, strict=True)]
                    (torch.stack(losses).sum() / len(samples)).backward()
                optimiser.step()

    @torch.no_grad()
    def predict(self, items: list[TestItem], ctx: RunContext) -> list[np.ndarray]:
        backbone = ctx.backbone
        self.network.to(ctx.device).eval()
        embeddings = ctx.embeddings([item.image for item in items])
        size = self.hparams.decode_batch_size
        outputs: list[np.ndarray] = []
        for start in ctx.progress(range(0, len(items), size), description=f"{self.name} decoding"):
            chunk = items[start : start + size]
            inputs = self._inputs(backbone, [item.image for item in chunk]).to(ctx.device)
            batch = embeddings[start : start + size].to(ctx.device)
            logits = self._logits_at_own_size(backbone, batch, inputs, [item.image.shape[:2] for item in chunk])
            outputs.extend(self._probabilities(logit) for logit in logits)
        return outputs
