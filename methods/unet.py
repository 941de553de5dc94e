"""`unet`: the paper's fully supervised UNet baseline, trained from scratch on masks.

With ``--labels box`` it learns from tight boxes with the weak-box losses of
``bench.method.box_losses`` (the same ones as ``prompt-module``): this isolates what the frozen foundation model
contributes, a comparison the paper does not make. The box losses are computed at each sample's own
resolution, where its box lives: with ``input_size`` set, the logits are upsampled bilinearly to the
image's size first (as at prediction), so the 5-pixel bands and the box area mean the same as for the
prompt module.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from bench.data.samples import TestItem, TrainItem
from bench.method import Method, RunContext
from bench.method.box_losses import box_loss
from bench.method.training import bce_dice_loss, device_batches, images_to_tensor, masks_to_tensor, probabilities_at
from bench.registry import METHODS


@dataclass(frozen=True)
class UNetParams:
    encoder: str = "resnet34"
    epochs: int = 200
    batch_size: int = 4
    lr: float = 1e-3
    weight_decay: float = 1e-4
    input_size: int | None = None  # None: train and predict at the dataset's own resolution


@METHODS.register
class UNet(Method):
    name = "unet"
    display_name = "UNet"
    group = "Automatic — fully trained"
    labels = ("mask", "box")
    default_labels = ("mask",)
    HParams = UNetParams
    budgets = {
        # paper: 200 epochs of Adam at the dataset's resolution (the paper's UNet baseline)
        "paper": UNetParams(),
        # quick: a small encoder at 128 px so a 10-shot run takes well under a minute on 2 CPU cores
        "quick": UNetParams(encoder="resnet18", epochs=40, input_size=128),
    }
    tiny = {"epochs": 2, "input_size": 64}

    def __init__(self, hparams: UNetParams) -> None:
        super().__init__(hparams)
        import segmentation_models_pytorch as smp

        self.network = smp.Unet(hparams.encoder, encoder_weights=None, in_channels=1, classes=1)

    def fit(self, train: list[TrainItem], ctx: RunContext) -> None:
        hp = self.hparams
        images = images_to_tensor([item.image for item in train], hp.input_size).to(ctx.device)
        from_boxes = train[0].mask is None
        if not from_boxes:
            masks = masks_to_tensor([item.mask for item in train], hp.input_size).to(ctx.device)
        self.network.to(ctx.device).train()
        optimiser = torch.optim.Adam(self.network.parameters(), lr=hp.lr, weight_decay=hp.weight_decay)
        generator = torch.Generator().manual_seed(ctx.seed)
        state = {"network": self.network, "optimiser": optimiser, "generator": generator}
        for _ in ctx.epochs(hp.epochs, state, description=f"{self.name} epochs"):
            for indices, batch in device_batches(len(train), hp.batch_size, generator, ctx.device):
                logits = self.network(images[batch])
                if from_boxes:
                    loss = _box_loss_at_own_size(logits, [train[index] for index in indices])
                else:
                    loss = bce_dice_loss(logits, masks[batch])
                optimiser.zero_grad(set_to_none=True)
                loss.backward()
                optimiser.step()

    @torch.no_grad()
    def predict(self, items: list[TestItem], ctx: RunContext) -> list[np.ndarray]:
        self.network.eval()
        outputs = []
        for item in items:
            image = images_to_tensor([item.image], self.hparams.input_size).to(ctx.device)
            outputs.append(probabilities_at(self.network(image), item.image.shape))
        return outputs


def _box_loss_at_own_size(logits: torch.Tensor, items: list[TrainItem]) -> torch.Tensor:
    """The weak-box loss of B×1×h×w logits, each map resized to its image's own size (its box's frame)."""
    maps = []
    for logit, item in zip(logits, items, strict=True):
        shape = item.image.shape
        if tuple(logit.shape[-2:]) != shape:
            logit = F.interpolate(logit[None], size=shape, mode="bilinear", align_corners=False)[0]
        maps.append(logit[0])
    return box_loss(maps, [item.box for item in items]).total
