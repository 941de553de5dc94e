"""Backbones: preprocessing geometry, batched decoding, checkpoint loading and its errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from bench.data.samples import Box, tight_box
from bench.errors import BenchError
from bench.sam.backbones import (
    Backbone,
    BatchedMaskDecoder,
    LiteMedSAM,
    MedSAMViTB,
    SAMViTB,
    load_backbone,
)
from bench.sam.tiny_backbone import TinyRandomSAM, tiny_sam


def with_tiny_model(backbone_cls: type[Backbone]) -> Backbone:
    """The backbone's own preprocessing and geometry around a tiny random model of the right input size."""
    return backbone_cls(tiny_sam(backbone_cls.input_size), "geometry-test", "cpu")


GEOMETRY_BACKBONES = [LiteMedSAM, MedSAMViTB, SAMViTB, TinyRandomSAM]


@pytest.mark.parametrize("backbone_cls", GEOMETRY_BACKBONES, ids=lambda cls: cls.name)
@pytest.mark.parametrize("shape", [(300, 500), (500, 300)], ids=["wide", "tall"])
def test_box_drawn_on_the_image_survives_the_round_trip(backbone_cls: type[Backbone], shape) -> None:
    backbone = with_tiny_model(backbone_cls)
    box = Box(x0=230, y0=60, x1=290, y1=250) if shape[1] > shape[0] else Box(x0=60, y0=230, x1=250, y1=290)
    image = np.full(shape, 20, dtype=np.uint8)
    image[box.y0 : box.y1 + 1, box.x0 : box.x1 + 1] = 200

    pixels = backbone.preprocess(image)
    assert pixels.shape == (3, backbone.input_size, backbone.input_size) and pixels.dtype == torch.float32
    rows, cols = backbone.input_shape(shape)
    assert torch.count_nonzero(pixels[:, rows:]) + torch.count_nonzero(pixels[:, :, cols:]) == 0  # padding
    channel = pixels[0, :rows, :cols].numpy()
    found = tight_box(channel > (channel[0, 0] + channel.max()) / 2)  # the top-left pixel is background
    # the box prompt lands where the drawn box went (within one resized pixel of the inclusive corners)
    scale = max(backbone.box_scale(shape))
    expected = backbone.box_to_input(box, shape)[0].numpy()
    assert np.allclose(found.as_xyxy(), expected, atol=1 + scale), (found, expected)

    # a low-res logit map of the found box, brought back to the image, covers the drawn box's pixels
    step = backbone.input_size / 256
    low_res = torch.full((1, 1, 256, 256), -10.0)
    rows_low = slice(int(found.y0 / step), int(found.y1 / step) + 1)
    cols_low = slice(int(found.x0 / step), int(found.x1 / step) + 1)
    low_res[..., rows_low, cols_low] = 10.0
    back = backbone.to_image(low_res, shape)
    assert back.shape == (1, 1, *shape)
    tolerance = 2 * step / min(backbone.box_scale(shape)) + 1  # two low-res pixels in image pixels
    assert np.allclose(tight_box(back[0, 0].numpy() > 0).as_xyxy(), box.as_xyxy(), atol=tolerance)


def test_preprocessing_intensities() -> None:
    image = np.tile(np.linspace(40, 160, 500).astype(np.uint8), (300, 1))
    lite = with_tiny_model(LiteMedSAM).preprocess(image)
    rows, cols = with_tiny_model(LiteMedSAM).input_shape(image.shape)
    assert (rows, cols) == (154, 256)
    inside = lite[:, :rows, :cols]
    assert torch.isclose(inside.min(), torch.tensor(0.0)) and torch.isclose(inside.max(), torch.tensor(1.0))
    assert torch.count_nonzero(lite[:, rows:, :]) == 0  # zero padding, bottom only for a wide image
    assert torch.equal(lite[0], lite[1]) and torch.equal(lite[1], lite[2])  # grey repeated

    medsam = with_tiny_model(MedSAMViTB).preprocess(image)
    assert medsam.min() >= 0 and torch.isclose(medsam.max(), torch.tensor(1.0))  # no SAM mean/std

    sam = with_tiny_model(SAMViTB).preprocess(image)
    grey = sam[0, :600, :1024]
    mean, std = 123.675, 58.395  # SAM's red-channel statistics on 0–255 pixels
    assert torch.isclose(grey.min(), torch.tensor((40 - mean) / std), atol=0.05)
    assert torch.count_nonzero(sam[:, 614:, :]) == 0 and torch.count_nonzero(sam[:, 613, :]) == 3 * 1024


def decode_one_by_one(backbone: Backbone, embeddings: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    masks = []
    for index in range(len(boxes)):
        sparse, dense = backbone.embed_boxes(boxes[index : index + 1])
        masks.append(backbone.decode(embeddings[index : index + 1], sparse, dense))
    return torch.cat(masks)


def test_batched_decoding_equals_one_by_one() -> None:
    backbone = load_backbone("tiny-sam-test")
    generator = torch.Generator().manual_seed(0)
    embeddings = torch.randn((3, 256, 64, 64), generator=generator)
    boxes = torch.tensor([[10.0, 20.0, 120.0, 200.0], [50.0, 50.0, 60.0, 90.0], [0.0, 0.0, 255.0, 255.0]])
    with torch.inference_mode():
        together = backbone.decode(embeddings, *backbone.embed_boxes(boxes))
        alone = decode_one_by_one(backbone, embeddings, boxes)
    assert together.shape == (3, 1, 256, 256)
    torch.testing.assert_close(together, alone, rtol=1e-4, atol=1e-4)
    assert not torch.allclose(together[0], together[1])  # different prompts give different masks


def test_batched_decoder_matches_the_stock_decoder_it_wraps() -> None:
    from segment_anything.modeling import MaskDecoder, TwoWayTransformer

    transformer = TwoWayTransformer(depth=1, embedding_dim=256, mlp_dim=32, num_heads=2)
    stock = MaskDecoder(transformer_dim=256, transformer=transformer).eval()
    batched = BatchedMaskDecoder.like(stock).eval()
    backbone = load_backbone("tiny-sam-test")
    embeddings = torch.randn((2, 256, 64, 64), generator=torch.Generator().manual_seed(1))
    boxes = torch.tensor([[10.0, 10.0, 100.0, 100.0], [30.0, 40.0, 200.0, 90.0]])
    sparse, dense = backbone.embed_boxes(boxes)
    with torch.inference_mode():
        paired, _ = batched(embeddings, backbone.dense_pe(), sparse, dense, multimask_output=False)
        for index in range(2):
            reference, _ = stock(
                embeddings[index : index + 1], backbone.dense_pe(), sparse[index : index + 1],
                dense[index : index + 1], multimask_output=False,
            )  # fmt: skip
            torch.testing.assert_close(paired[index : index + 1], reference, rtol=1e-4, atol=1e-4)
        with pytest.raises(RuntimeError):  # the stock decoder crosses two images with two prompts
            stock(embeddings, backbone.dense_pe(), sparse, dense, multimask_output=False)


def test_litemedsam_decoder_batches_too() -> None:
    backbone = load_backbone("litemedsam")
    assert backbone.cache_key.startswith("litemedsam/79d8c9dca6db4d69-")  # the packaged weights' digest
    embeddings = torch.randn((2, 256, 64, 64), generator=torch.Generator().manual_seed(2))
    boxes = torch.tensor([[10.0, 20.0, 120.0, 200.0], [50.0, 50.0, 60.0, 90.0]])
    with torch.inference_mode():
        together = backbone.decode(embeddings, *backbone.embed_boxes(boxes))
        alone = decode_one_by_one(backbone, embeddings, boxes)
    torch.testing.assert_close(together, alone, rtol=1e-4, atol=1e-4)


def test_to_image_is_differentiable() -> None:
    backbone = load_backbone("tiny-sam-test")
    embeddings = torch.randn((1, 256, 64, 64))
    boxes = torch.tensor([[10.0, 20.0, 120.0, 200.0]], requires_grad=True)
    logits = backbone.to_image(backbone.decode(embeddings, *backbone.embed_boxes(boxes)), (300, 500))
    logits.sigmoid().mean().backward()
    assert boxes.grad is not None and torch.count_nonzero(boxes.grad) > 0


# --- checkpoints ----------------------------------------------------------------------------------------


def test_tiny_checkpoint_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "tiny.pth"
    model = tiny_sam(seed=5)
    torch.save({"model": model.state_dict(), "epoch": 3}, path)  # a training script's wrapper
    loaded = load_backbone("tiny-sam-test", path)
    for name, tensor in model.state_dict().items():
        assert torch.equal(loaded.model.state_dict()[name], tensor), name
    assert loaded.checkpoint_digest != load_backbone("tiny-sam-test").checkpoint_digest
    assert not any(p.requires_grad for p in loaded.model.parameters())


def test_missing_checkpoint(tmp_path: Path) -> None:
    with pytest.raises(BenchError, match="does not exist"):
        load_backbone("medsam-vit-b", tmp_path / "nope.pth")


def test_vit_backbones_need_a_checkpoint() -> None:
    with pytest.raises(BenchError, match="needs its weights: pass --checkpoint"):
        load_backbone("sam-vit-h")


def test_not_a_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "notes.pth"
    path.write_text("these are not weights")
    with pytest.raises(BenchError, match="is not a PyTorch checkpoint"):
        load_backbone("medsam-vit-b", path)


def test_pickled_code_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "object.pth"
    torch.save({"model": Box(0, 0, 1, 1)}, path)  # arbitrary objects need weights_only=False: refused
    with pytest.raises(BenchError, match="weights_only=True"):
        load_backbone("tiny-sam-test", path)


def test_wrong_size_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "tiny.pth"
    torch.save(tiny_sam().state_dict(), path)
    with pytest.raises(BenchError, match=r"is not a ViT-B SAM state dict \(\d+ tensors of the wrong shape"):
        load_backbone("medsam-vit-b", path)


def test_bad_checkpoint_is_one_line_and_exit_2(tmp_path: Path) -> None:
    from bench.cli import app

    path = tmp_path / "tiny.pth"
    torch.save(tiny_sam().state_dict(), path)
    arguments = ["run", "--methods", "medsam-box", "--backbone", "medsam-vit-b", "--checkpoint", str(path),
                 "--results", str(tmp_path / "results")]  # fmt: skip
    result = CliRunner().invoke(app, arguments)
    assert result.exit_code == 2
    assert "is not a ViT-B SAM state dict" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "results" / "default" / "runs").exists() or not any(
        (tmp_path / "results" / "default" / "runs").iterdir()
    )
