"""A tiny trained method plugin: a four-layer CNN learning the structure from the support masks.

The second worked example of docs/adding-a-method.md (the first, training-free, is otsu_threshold.py):

    bench run --plugin examples/tiny_cnn.py --methods tiny-cnn --datasets synthetic --shots 1,10
    bench table
    pytest tests/test_method_contract.py --bench-plugin examples/tiny_cnn.py -k tiny-cnn

Everything but the network and its training loop is the harness's job: the support set of k images under
the run's label regime, the seeds (Python, NumPy and torch are seeded before the method is built), the
device, timing, parameter counts, metrics and the record.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from bench.data.samples import TestItem, TrainItem
from bench.method import Method, RunContext
from bench.method.training import bce_dice_loss, epoch_batches, images_to_tensor, masks_to_tensor, probabilities_at
from bench.registry import METHODS


@dataclass(frozen=True)
class TinyCNNParams:
    channels: int = 16
    epochs: int = 200  # the report's time per epoch is the fit time over this field
    batch_size: int = 4
    lr: float = 1e-2  # at 1e-3 a net this small still predicts background everywhere after 20 epochs
    input_size: int = 64  # images are resized to input_size² for training and back for prediction


@METHODS.register  # under its name below
class TinyCNN(Method):
    name = "tiny-cnn"
    display_name = "Tiny CNN (example)"
    group = "Automatic — fully trained"
    # It learns from masks: `bench run --labels box` skips it with the reason (the inherited skip()).
    labels = ("mask",)
    default_labels = ("mask",)
    HParams = TinyCNNParams
    budgets = {
        # A made-up method has no published values: "paper" is its full schedule.
        "paper": TinyCNNParams(),
        # quick: half the epochs, a few seconds per 10-shot run on a 2-core CPU
        "quick": TinyCNNParams(epochs=100),
    }
    # The overrides the contract tests run it with (tests/test_method_contract.py), so they take seconds.
    tiny = {"epochs": 2, "input_size": 32}

    def __init__(self, hparams: TinyCNNParams) -> None:
        super().__init__(hparams)
        width = hparams.channels
        # Dilations 1, 2, 4 give each output pixel a 15-pixel field of view: enough to tell a region's
        # inside from its rim at 64 px, in about 5,000 parameters.
        self.network = nn.Sequential(
            nn.Conv2d(1, width, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(width, width, 3, padding=2, dilation=2),
            nn.ReLU(),
            nn.Conv2d(width, width, 3, padding=4, dilation=4),
            nn.ReLU(),
            nn.Conv2d(width, 1, 1),
        )
        # The record's parameter counts come from every torch module held in an attribute (Method.modules).

    def fit(self, train: list[TrainItem], ctx: RunContext) -> None:
        # Under the mask regime every item has .mask; under a box regime it would have .box and no mask.
        hp = self.hparams
        images = images_to_tensor([item.image for item in train], hp.input_size).to(ctx.device)
        masks = masks_to_tensor([item.mask for item in train], hp.input_size).to(ctx.device)
        self.network.to(ctx.device).train()
        optimiser = torch.optim.Adam(self.network.parameters(), lr=hp.lr)
        generator = torch.Generator().manual_seed(ctx.seed)  # the batch order follows the run's seed
        # ctx.epochs draws the bar `bench run` shows for the epochs of the current run, and saves the fit (what
        # `state` names) so that a killed or --stop-after-paused run goes on from its last saved epoch
        state = {"network": self.network, "optimiser": optimiser, "generator": generator}
        for _ in ctx.epochs(hp.epochs, state, description=f"{self.name} epochs"):
            for batch in epoch_batches(len(train), hp.batch_size, generator):
                loss = bce_dice_loss(self.network(images[batch]), masks[batch])
                optimiser.zero_grad(set_to_none=True)
                loss.backward()
                optimiser.step()

    @torch.no_grad()
    def predict(self, items: list[TestItem], ctx: RunContext) -> list[np.ndarray]:
        self.network.eval()
        outputs = []
        for item in items:
            logits = self.network(images_to_tensor([item.image], self.hparams.input_size).to(ctx.device))
            outputs.append(probabilities_at(logits, item.image.shape))  # back at the image's own size
        return outputs
