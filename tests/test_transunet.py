"""`transunet`: the R50-ViT-B/16 network's shapes and skips, its loss, augmentation, schedule and weights."""

from __future__ import annotations

import numpy as np
import pytest
import timm
import torch
import torch.nn.functional as F
from timm.layers import resample_abs_pos_embed

from bench.data.samples import TestItem, TrainItem
from bench.errors import BenchError
from bench.method import RunContext
from bench.methods.transunet import (
    TIMM_HYBRID,
    TransUNet,
    TransUNetNetwork,
    TransUNetParams,
    augment,
    ce_dice_loss,
)
from bench.records.spec import RunSpec

TINY = TransUNetParams(epochs=2, batch_size=2, input_size=32)


def context(hparams: TransUNetParams = TINY, seed: int = 0) -> RunContext:
    spec = RunSpec("transunet", "synthetic", "ellipse", "mask", 4, 0, seed, "quick")
    return RunContext(spec=spec, hparams=hparams, device=torch.device("cpu"))


def disc(shape: tuple[int, int], seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A bright disc on a dark noisy background and its mask."""
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[0 : shape[0], 0 : shape[1]]
    centre = rng.uniform(0.35, 0.65, 2) * shape
    mask = (rows - centre[0]) ** 2 + (cols - centre[1]) ** 2 <= (min(shape) / 4) ** 2
    image = np.where(mask, 190, 50) + rng.integers(0, 30, shape)
    return image.astype(np.uint8), mask


def discs(count: int, shape: tuple[int, int]) -> list[tuple[np.ndarray, np.ndarray]]:
    return [disc(shape, seed) for seed in range(count)]


@pytest.fixture(scope="module")
def network() -> TransUNetNetwork:
    torch.manual_seed(0)
    return TransUNetNetwork(64).eval()


def test_skips_have_transunets_channels_at_one_half_quarter_and_eighth(network) -> None:
    images = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        grid, skips = network.encode(images)
        _, again = network.encode(images)  # hooks must not pile up skips across calls
    assert grid.shape == (2, 768, 4, 4)
    assert [tuple(skip.shape) for skip in skips] == [(2, 64, 32, 32), (2, 256, 16, 16), (2, 512, 8, 8)]
    assert len(again) == 3
    assert network.encoder.cls_token is None and network.encoder.pos_embed.shape == (1, 16, 768)


def test_the_decoder_is_the_cascaded_upsampler(network) -> None:
    blocks = network.decoder.blocks
    assert [block.conv1[0].in_channels for block in blocks] == [512 + 512, 256 + 256, 128 + 64, 64]
    assert [block.conv2[0].out_channels for block in blocks] == [256, 128, 64, 16]
    assert network.conv_more[0].in_channels == 768 and network.conv_more[0].out_channels == 512
    with torch.no_grad():
        assert network(torch.rand(1, 1, 64, 64)).shape == (1, 2, 64, 64)  # a batch of one, grey input


def test_paper_budget_has_transunets_parameter_count_all_trainable() -> None:
    total, trainable = TransUNet(TransUNet.budgets["paper"]).parameter_counts()
    assert 104e6 < total < 106.5e6  # 105.28 M is the count usually quoted for R50-ViT-B/16 TransUNet
    assert trainable == total


def test_non_square_image_and_a_batch_of_one_train_and_predict_at_their_own_size() -> None:
    image, mask = disc((48, 80), seed=1)
    method = TransUNet(TINY)
    method.fit([TrainItem("a", image, None, mask=mask)], context())  # BatchNorm trains on one image
    (probabilities,) = method.predict([TestItem("a", image, None)], context())
    assert probabilities.shape == (48, 80) and probabilities.dtype == np.float32
    assert np.isfinite(probabilities).all() and 0 <= probabilities.min() <= probabilities.max() <= 1


def test_loss_is_half_cross_entropy_half_dice_over_the_batch_with_background() -> None:
    torch.manual_seed(0)
    logits = torch.randn(2, 2, 6, 6)
    masks = [torch.rand(6, 6) > 0.7, torch.zeros(6, 6, dtype=torch.bool)]
    targets = torch.stack(masks).long()
    cross_entropy = F.cross_entropy(logits, targets)
    probabilities = logits.softmax(1)
    dice_losses = []
    for cls in (0, 1):  # per class over the whole batch, squared denominators (TransUNet's utils.DiceLoss)
        score, truth = probabilities[:, cls], (targets == cls).float()
        dice = (2 * (score * truth).sum() + 1e-5) / ((score * score).sum() + (truth * truth).sum() + 1e-5)
        dice_losses.append(1 - dice)
    expected = 0.5 * cross_entropy + 0.5 * torch.stack(dice_losses).mean()
    torch.testing.assert_close(ce_dice_loss(logits, masks), expected)


def test_loss_compares_logits_resized_to_each_masks_own_size() -> None:
    mask = torch.zeros(8, 12, dtype=torch.bool)
    mask[:, 6:] = True  # right half
    logits = torch.zeros(1, 2, 4, 4)
    logits[0, 1, :, 2:] = 20.0  # right half, at a quarter of the mask's size
    logits[0, 0, :, :2] = 20.0
    assert ce_dice_loss(logits, [mask]).item() < 0.01
    assert ce_dice_loss(logits, [mask.flip(1)]).item() > 5


def test_augmentation_moves_image_and_mask_together_and_draws_all_three_branches() -> None:
    mask = np.random.default_rng(0).random((20, 30)) > 0.5  # no symmetry: every transform shows
    image = np.where(mask, 200, 0).astype(np.uint8)  # the image's foreground is the mask
    generator = torch.Generator().manual_seed(0)
    flips = (mask[::-1], mask[:, ::-1])  # what rot90 by 0 or 180° then a flip gives
    kinds = {"rot90/flip": 0, "rotation": 0, "unchanged": 0}
    for _ in range(200):
        new_image, new_mask = augment(image, mask, generator)
        np.testing.assert_array_equal(new_image > 0, new_mask)
        if new_mask.shape == (30, 20) or any(np.array_equal(new_mask, flipped) for flipped in flips):
            kinds["rot90/flip"] += 1
        elif np.array_equal(new_mask, mask):
            kinds["unchanged"] += 1
        else:
            kinds["rotation"] += 1
    assert 70 < kinds["rot90/flip"] < 130 and 25 < kinds["rotation"] < 75 and 25 < kinds["unchanged"] < 75
    first = augment(image, mask, torch.Generator().manual_seed(5))
    second = augment(image, mask, torch.Generator().manual_seed(5))
    np.testing.assert_array_equal(first[1], second[1])


def test_sgd_with_polynomial_decay_per_iteration_and_batches_capped_by_the_support_set(monkeypatch) -> None:
    steps: list[tuple[float, float, float]] = []
    original_step = torch.optim.SGD.step

    def recording_step(self, closure=None):
        group = self.param_groups[0]
        steps.append((group["lr"], group["momentum"], group["weight_decay"]))
        return original_step(self, closure)

    monkeypatch.setattr(torch.optim.SGD, "step", recording_step)
    items = [TrainItem(str(i), image, None, mask=mask) for i, (image, mask) in enumerate(discs(3, (32, 32)))]
    TransUNet(TransUNetParams(epochs=3, batch_size=24, input_size=32)).fit(items, context())
    iterations = 3  # 3 epochs of one batch each: 24 is more than the 3 images
    expected = [0.01 * (1 - step / iterations) ** 0.9 for step in range(iterations)]
    assert [lr for lr, _, _ in steps] == pytest.approx(expected)
    assert all(momentum == 0.9 and decay == 1e-4 for _, momentum, decay in steps)


def test_training_separates_the_structure_from_the_background() -> None:
    pairs = discs(4, (32, 32))
    items = [TrainItem(str(i), image, None, mask=mask) for i, (image, mask) in enumerate(pairs)]
    torch.manual_seed(0)
    # a higher lr than the paper's so that 10 SGD steps suffice (separation 0.5–0.7 over seeds 0–2)
    method = TransUNet(TransUNetParams(epochs=10, batch_size=4, lr=0.05, input_size=32, augment=False))
    method.fit(items, context())
    probabilities = method.predict([TestItem(item.id, item.image, None) for item in items], context())
    on_object = np.mean([p[mask].mean() for p, (_, mask) in zip(probabilities, pairs, strict=True)])
    background = np.mean([p[~mask].mean() for p, (_, mask) in zip(probabilities, pairs, strict=True)])
    assert on_object > background + 0.3


@pytest.mark.parametrize("size", [40, 16])
def test_input_sizes_off_the_token_grid_fail_with_one_line(size: int) -> None:
    with pytest.raises(BenchError, match="multiple of 16 and at least 32"):
        TransUNet(TransUNetParams(input_size=size))


def test_pretrained_state_dict_loads_without_class_token_and_with_the_grid_resampled(tmp_path) -> None:
    torch.manual_seed(1)
    imagenet = timm.create_model(TIMM_HYBRID, pretrained=False, num_classes=0)  # class token, 14×14 grid
    path = tmp_path / "hybrid.pth"
    torch.save(imagenet.state_dict(), path)
    method = TransUNet(TransUNetParams(input_size=32, pretrained=str(path)))
    encoder = method.network.encoder
    torch.testing.assert_close(encoder.blocks[11].mlp.fc2.weight, imagenet.blocks[11].mlp.fc2.weight)
    torch.testing.assert_close(
        encoder.patch_embed.backbone.stages[2].blocks[8].conv3.weight,
        imagenet.patch_embed.backbone.stages[2].blocks[8].conv3.weight,
    )
    assert encoder.pos_embed.shape == (1, 4, 768)
    # the 14×14 grid's embedding resampled to 2×2; the class token's entry is left out
    grid_only = resample_abs_pos_embed(imagenet.pos_embed[:, 1:], [2, 2], num_prefix_tokens=0, interpolation="bilinear")
    torch.testing.assert_close(encoder.pos_embed, grid_only)


def test_pretrained_npz_is_read_by_timm_into_a_class_token_twin(tmp_path, monkeypatch) -> None:
    torch.manual_seed(2)
    imagenet = timm.create_model(TIMM_HYBRID, pretrained=False, num_classes=0)
    path = tmp_path / "R50+ViT-B_16.npz"
    path.write_bytes(b"")
    read: list[str] = []

    def timms_npz_reader(self, checkpoint_path: str, prefix: str = "") -> None:
        read.append(checkpoint_path)
        self.load_state_dict(imagenet.state_dict())

    monkeypatch.setattr(timm.models.vision_transformer.VisionTransformer, "load_pretrained", timms_npz_reader)
    encoder = TransUNet(TransUNetParams(input_size=224, pretrained=str(path))).network.encoder
    assert read == [str(path)]
    torch.testing.assert_close(encoder.pos_embed, imagenet.pos_embed[:, 1:])
    torch.testing.assert_close(encoder.norm.weight, imagenet.norm.weight)


def test_missing_or_foreign_pretrained_files_fail_with_one_line(tmp_path) -> None:
    with pytest.raises(BenchError, match="do not exist"):
        TransUNet(TransUNetParams(input_size=32, pretrained=str(tmp_path / "absent.pth")))
    foreign = tmp_path / "resnet.pth"
    torch.save(timm.create_model("resnet18", pretrained=False).state_dict(), foreign)
    with pytest.raises(BenchError, match="are not R50\\+ViT-B/16 weights") as error:
        TransUNet(TransUNetParams(input_size=32, pretrained=str(foreign)))
    assert "\n" not in str(error.value)
