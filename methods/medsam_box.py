"""`medsam-box`: MedSAM prompted with each test image's box, the promptable upper reference of Table 1.

No training. At test time every image is prompted with the tight box of its ground-truth mask (``--labels
box``) or with the harness's seeded jittered box (``--labels box-noisy``), decoded by the frozen backbone,
and passed through a sigmoid, then resized to the image's own size (MedSAM's inference order).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from bench.data.samples import TestItem, TrainItem
from bench.method import Method, RunContext
from bench.registry import METHODS


@dataclass(frozen=True)
class MedSAMBoxParams:
    decode_batch_size: int = 16  # images decoded together; changes speed only, never the masks


@METHODS.register
class MedSAMBox(Method):
    name = "medsam-box"
    display_name = "MedSAM (box prompt)"
    group = "Promptable"
    labels = ("box", "box-noisy")
    default_labels = ("box",)
    uses_backbone = True
    training_free = True
    prompted = True
    HParams = MedSAMBoxParams
    # nothing is trained, so the paper and quick budgets are the same (the paper prompts MedSAM ViT-B)
    budgets = {"paper": MedSAMBoxParams(), "quick": MedSAMBoxParams()}

    def fit(self, train: list[TrainItem], ctx: RunContext) -> None:
        """Training-free: the support set is not used."""

    @torch.inference_mode()
    def predict(self, items: list[TestItem], ctx: RunContext) -> list[np.ndarray]:
        backbone = ctx.backbone
        embeddings = ctx.embeddings([item.image for item in items])
        size = self.hparams.decode_batch_size
        outputs: list[np.ndarray] = []
        for start in ctx.progress(range(0, len(items), size), description=f"{self.name} decoding"):
            batch = items[start : start + size]
            if any(item.box is None for item in batch):
                raise ValueError(f"{self.name} is prompted with a box per test image, but an item has none")
            shapes = [item.image.shape[:2] for item in batch]
            boxes = backbone.boxes_to_input([item.box for item in batch], shapes)
            sparse, dense = backbone.embed_boxes(boxes)
            low_res = backbone.decode(embeddings[start : start + size].to(backbone.device), sparse, dense)
            probabilities = torch.sigmoid(low_res)
            for index, shape in enumerate(shapes):
                at_image = backbone.to_image(probabilities[index : index + 1], shape)
                outputs.append(at_image[0, 0].float().cpu().numpy())
        return outputs
