"""`unet --labels box`: trained with the shared weak-box losses, at each sample's own resolution."""

from __future__ import annotations

import json

import numpy as np
import torch

from bench.data.samples import Box, TrainItem, tight_box
from bench.method import RunContext
from bench.method.box_losses import box_loss
from bench.methods.unet import UNet, UNetParams
from bench.records.spec import RunSpec
from bench.run.runner import run_one
from bench.run.settings import GridSettings

TINY = UNetParams(encoder="resnet18", epochs=1, batch_size=2, input_size=32)


def disc_items(count: int, size: int) -> tuple[list[TrainItem], list[np.ndarray]]:
    """Bright discs on a dark background, labelled by their tight boxes only."""
    rng = np.random.default_rng(0)
    items, masks = [], []
    yy, xx = np.mgrid[0:size, 0:size]
    for index in range(count):
        cy, cx = rng.integers(size // 3, 2 * size // 3, size=2)
        mask = (yy - cy) ** 2 + (xx - cx) ** 2 <= (size // 5) ** 2
        image = np.where(mask, 200, 40).astype(np.uint8) + rng.integers(0, 20, (size, size)).astype(np.uint8)
        items.append(TrainItem(f"d{index}", image, None, box=tight_box(mask)))
        masks.append(mask)
    return items, masks


def context(method: str = "unet", labels: str = "box", seed: int = 0) -> RunContext:
    spec = RunSpec(method, "synthetic", "ellipse", labels, 4, 0, seed, "quick")
    return RunContext(spec=spec, hparams=TINY, device=torch.device("cpu"))


def test_box_losses_see_logits_at_the_image_size_and_the_items_boxes(monkeypatch) -> None:
    items, _ = disc_items(4, 48)  # trained at 32 px, boxes given at 48 px
    seen: list[tuple[list[tuple[int, ...]], list[Box]]] = []

    def spy(logits, boxes):
        seen.append(([tuple(logit.shape) for logit in logits], list(boxes)))
        return box_loss(logits, boxes)

    monkeypatch.setattr("bench.methods.unet.box_loss", spy)
    torch.manual_seed(0)
    UNet(TINY).fit(items, context())
    assert len(seen) == 2  # one epoch of two batches of two
    assert all(shape == (48, 48) for shapes, _ in seen for shape in shapes)
    assert sorted(box.as_xyxy() for _, boxes in seen for box in boxes) == sorted(
        item.box.as_xyxy() for item in items
    )


def test_training_on_boxes_separates_the_box_from_the_background() -> None:
    items, masks = disc_items(4, 32)
    torch.manual_seed(0)
    method = UNet(UNetParams(encoder="resnet18", epochs=8, batch_size=4, input_size=None, lr=3e-3))
    method.fit(items, context())
    probabilities = method.predict(items, context())
    pairs = list(zip(probabilities, items, masks, strict=True))
    outside = np.mean([p[~_box_mask(item.box, p.shape)].mean() for p, item, _ in pairs])
    on_object = np.mean([p[mask].mean() for p, _, mask in pairs])
    assert on_object > outside + 0.3


def _box_mask(box: Box, shape: tuple[int, int]) -> np.ndarray:
    mask = np.zeros(shape, bool)
    mask[box.y0 : box.y1 + 1, box.x0 : box.x1 + 1] = True
    return mask


def test_a_box_run_is_recorded_and_the_mask_never_reaches_the_method(tmp_path, monkeypatch) -> None:
    labels_seen: list[tuple[bool, bool]] = []
    original_fit = UNet.fit

    def watching_fit(self, train, ctx):
        labels_seen.extend((item.mask is None, item.box is not None) for item in train)
        return original_fit(self, train, ctx)

    monkeypatch.setattr(UNet, "fit", watching_fit)
    spec = RunSpec("unet", "synthetic", "ellipse", "box", 2, 0, 0, "quick",
                   overrides=(("encoder", "resnet18"), ("epochs", 1), ("input_size", 32)))  # fmt: skip
    record = run_one(spec, GridSettings(tmp_path, "t"))
    assert record["status"] == "ok", record.get("traceback")
    assert labels_seen == [(True, True), (True, True)]
    stored = json.loads((tmp_path / "t" / "runs" / f"{spec.run_id}.json").read_text())
    assert stored["spec"]["labels"] == "box"
    assert UNet.skip(spec) is None
    assert UNet.default_labels == ("mask",)
