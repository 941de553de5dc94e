"""`transunet`: the TransUNet baseline (Chen et al. 2021, R50-ViT-B/16 hybrid), trained from scratch on masks.

The network, assembled from timm and segmentation-models-pytorch parts (``baselines.md`` §4):

* encoder: timm's ``vit_base_r50_s16_224`` — ResNet-50 v2 (GroupNorm, weight-standardised convs, stages of
  3, 4 and 9 blocks) to stride 16, then ViT-B/16 (12 layers, 768 wide) over the 1×1-patch token grid, without
  a class token, dropout 0.1 after the position embedding and in the blocks. Created at the budget's
  ``input_size``, so the position embedding has one entry per cell of the (input_size / 16)² grid;
* skips: the CNN's outputs at 1/2 (64 ch, stem), 1/4 (256 ch, stage 1) and 1/8 (512 ch, stage 2), caught
  with forward hooks while timm's own forward runs;
* cascaded upsampler (CUP): conv 3×3 768→512 + BN + ReLU on the token grid, then smp's UNet decoder blocks
  (bilinear ×2, concatenate the skip, two conv 3×3 + BN + ReLU) to 256, 128, 64 and 16 channels — the last
  block has no skip — and a 3×3 segmentation head to 2 classes. 105,276,066 parameters at 224² (the 105.28 M
  usually quoted for TransUNet).

Differences from the released code, none of which matter when training from scratch: TF-"same" padding
rather than symmetric (timm's), weight-standardisation eps 1e-8 rather than 1e-5, 32 GroupNorm groups in the
shortcut projections rather than one per channel, dropout 0.1 also on the attention output (timm has one
rate for both), and bilinear upsampling with align_corners=False in the decoder (smp's) rather than True.

Images (grey, repeated to 3 channels as in the original) are resized to ``input_size``²; the logits are
resized back to each image's own size before the loss and the prediction. The loss is the original's:
0.5 · cross-entropy + 0.5 · soft Dice on 2-class softmax, background included. The foreground probability
is the softmax's class 1, so thresholding it at 0.5 is the original's argmax.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from bench.data.samples import TestItem, TrainItem
from bench.errors import BenchError
from bench.method import Method, RunContext
from bench.method.training import images_to_tensor, shuffled_batches, to_device
from bench.registry import METHODS

TIMM_HYBRID = "vit_base_r50_s16_224"
PATCH_STRIDE = 16
HIDDEN = 768
SKIP_CHANNELS = (64, 256, 512)  # at 1/2, 1/4 and 1/8 of the input
CUP_CHANNELS = 512  # conv_more: the token grid's channels before the first decoder block
DECODER_CHANNELS = (256, 128, 64, 16)
CLASSES = 2  # background and the structure, as a 2-class softmax like the original
PREDICT_BATCH = 16  # test images run together; changes speed only


@dataclass(frozen=True)
class TransUNetParams:
    epochs: int = 200
    batch_size: int = 24  # a support set smaller than this is one batch
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 1e-4
    lr_power: float = 0.9  # polynomial decay per iteration: lr · (1 − iteration / iterations)^power
    input_size: int = 224  # a multiple of 16; the ViT sees (input_size / 16)² tokens
    augment: bool = True  # the original's random rot90 + flip, or rotation by up to ±20°
    # a local file of ImageNet weights for the hybrid encoder: Google's R50+ViT-B_16.npz (TransUNet's), or a
    # state dict of timm's vit_base_r50_s16_224 (.safetensors or a torch file); None trains from scratch
    pretrained: str | None = None


class TransUNetNetwork(nn.Module):
    """B×1×S×S images in [0, 1] → B×2×S×S logits (S = ``input_size``)."""

    def __init__(self, input_size: int = 224) -> None:
        super().__init__()
        import timm
        from segmentation_models_pytorch.base import SegmentationHead
        from segmentation_models_pytorch.base.modules import Conv2dReLU
        from segmentation_models_pytorch.decoders.unet.decoder import UnetDecoder

        self.encoder = timm.create_model(
            TIMM_HYBRID, pretrained=False, num_classes=0, img_size=input_size,
            # global_pool "" keeps the final LayerNorm on the tokens ("avg" would move it to the pooled vector)
            class_token=False, global_pool="", pos_drop_rate=0.1, proj_drop_rate=0.1,
        )  # fmt: skip
        cnn = self.encoder.patch_embed.backbone
        self._skips: list[torch.Tensor] = []
        # timm's own feature points of a non-preact ResNetV2 (its feature_info): stem.norm (after ReLU),
        # stages 0 and 1. Hooks leave timm's forward untouched, so no timm code is copied here. They hold the
        # list, not the network: a bound method would make a reference cycle that keeps a finished run's
        # network (and its GPU memory) alive until the next garbage collection
        for module in (cnn.stem.norm, cnn.stages[0], cnn.stages[1]):
            module.register_forward_hook(functools.partial(_keep_output, self._skips))
        self.conv_more = Conv2dReLU(HIDDEN, CUP_CHANNELS, kernel_size=3, padding=1, use_norm="batchnorm")
        # smp's UNet decoder is exactly the CUP when fed [input, skips shallow→deep, token grid]: block i
        # upsamples to the next shallower resolution and concatenates that skip; the input is only a size
        self.decoder = UnetDecoder(
            encoder_channels=(3, *SKIP_CHANNELS, CUP_CHANNELS), decoder_channels=DECODER_CHANNELS,
            n_blocks=len(DECODER_CHANNELS), use_norm="batchnorm", interpolation_mode="bilinear",
        )  # fmt: skip
        self.segmentation_head = SegmentationHead(DECODER_CHANNELS[-1], CLASSES, kernel_size=3)

    def encode(self, images: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """(B×768×g×g token grid, [skip at 1/2, 1/4, 1/8]) of B×3×S×S images, g = S / 16."""
        self._skips.clear()
        tokens = self.encoder.forward_features(images)
        skips = list(self._skips)
        self._skips.clear()
        rows, cols = self.encoder.patch_embed.grid_size
        return tokens.transpose(1, 2).reshape(len(images), HIDDEN, rows, cols), skips

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        images = images.expand(-1, 3, -1, -1)
        grid, skips = self.encode(images)
        return self.segmentation_head(self.decoder([images, *skips, self.conv_more(grid)]))


@METHODS.register
class TransUNet(Method):
    name = "transunet"
    display_name = "TransUNet"
    group = "Automatic — fully trained"
    labels = ("mask",)
    default_labels = ("mask",)
    HParams = TransUNetParams
    budgets = {
        # paper: TransUNet's recipe (Chen et al. 2021; Beckschen/TransUNet train.py, trainer.py) — 224² input,
        # SGD momentum 0.9, weight decay 1e-4, lr 0.01 with poly decay (power 0.9) per iteration, batch 24,
        # 0.5 CE + 0.5 Dice, random rot90/flip or rotation; 200 epochs as in the seed paper's baseline
        "paper": TransUNetParams(),
        # quick: 64² input (4×4 tokens), 30 epochs in batches of 4: a 10-shot synthetic fit takes about 75 s of
        # one CPU core's time (Dice 0.81 ellipse, 0.83 blob). Most of the cost is per image, so small batches
        # buy SGD steps cheaply: on ellipse, 40 epochs × batch 4 gave Dice 0.84 in 100 s of CPU time,
        # 25 × 4 0.80 in 62 s, 30 × 5 0.81 in 65 s, 40 × 10 0.70 in 77 s
        "quick": TransUNetParams(epochs=30, batch_size=4, input_size=64),
    }
    tiny = {"epochs": 2, "batch_size": 2, "input_size": 32}

    def __init__(self, hparams: TransUNetParams) -> None:
        super().__init__(hparams)
        size = hparams.input_size
        # below 32² the 1/16 grid is one cell and BatchNorm cannot train on a batch of one
        if size < 2 * PATCH_STRIDE or size % PATCH_STRIDE:
            raise BenchError(f"transunet input_size must be a multiple of {PATCH_STRIDE} and at least 32, not {size}")
        self.network = TransUNetNetwork(size)
        if hparams.pretrained is not None:
            load_encoder_weights(self.network.encoder, hparams.pretrained)

    def fit(self, train: list[TrainItem], ctx: RunContext) -> None:
        hp = self.hparams
        self.network.to(ctx.device).train()
        optimiser = torch.optim.SGD(
            self.network.parameters(), lr=hp.lr, momentum=hp.momentum, weight_decay=hp.weight_decay
        )
        iterations = hp.epochs * math.ceil(len(train) / hp.batch_size)
        schedule = torch.optim.lr_scheduler.PolynomialLR(optimiser, total_iters=iterations, power=hp.lr_power)
        generator = torch.Generator().manual_seed(ctx.seed)
        state = {"network": self.network, "optimiser": optimiser, "schedule": schedule, "generator": generator}
        for _ in ctx.epochs(hp.epochs, state, description=f"{self.name} epochs"):
            for indices in shuffled_batches(len(train), hp.batch_size, generator):
                pairs = [(train[i].image, train[i].mask) for i in indices]
                if hp.augment:  # on the host, from the host's generator, while the device runs the last step
                    pairs = [augment(image, mask, generator) for image, mask in pairs]
                images = to_device(images_to_tensor([image for image, _ in pairs], hp.input_size), ctx.device)
                masks = [to_device(torch.from_numpy(np.ascontiguousarray(mask)), ctx.device) for _, mask in pairs]
                loss = ce_dice_loss(self.network(images), masks)
                optimiser.zero_grad(set_to_none=True)
                loss.backward()
                optimiser.step()
                schedule.step()

    @torch.no_grad()
    def predict(self, items: list[TestItem], ctx: RunContext) -> list[np.ndarray]:
        self.network.to(ctx.device).eval()
        outputs = []
        for start in ctx.progress(range(0, len(items), PREDICT_BATCH), description=f"{self.name} predicting"):
            chunk = items[start : start + PREDICT_BATCH]
            images = images_to_tensor([item.image for item in chunk], self.hparams.input_size).to(ctx.device)
            for logits, item in zip(self.network(images), chunk, strict=True):
                outputs.append(resized_logits(logits, item.image.shape).softmax(0)[1].float().cpu().numpy())
        return outputs


def _keep_output(outputs: list[torch.Tensor], module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
    outputs.append(output)


def resized_logits(logits: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """C×h×w logits bilinearly resized to an image's own ``shape``."""
    return F.interpolate(logits[None].float(), size=shape, mode="bilinear", align_corners=False)[0]


def ce_dice_loss(logits: torch.Tensor, masks: list[torch.Tensor]) -> torch.Tensor:
    """TransUNet's 0.5 · CE + 0.5 · Dice of B×2×S×S logits against boolean masks of any sizes.

    Each logit map is resized to its mask's size first. As in the original (trainer.py, utils.DiceLoss), the
    cross-entropy is the mean over every pixel of the batch and the Dice is taken per class over the whole
    batch, background included, with squared terms in the denominator: 1 − (2 Σpg + ε) / (Σp² + Σg² + ε).
    """
    flat_logits = torch.cat([resized_logits(logit, tuple(mask.shape)).flatten(1) for logit, mask in
                             zip(logits, masks, strict=True)], dim=1).T  # fmt: skip
    targets = torch.cat([mask.flatten() for mask in masks]).long()
    cross_entropy = F.cross_entropy(flat_logits, targets)
    probabilities = flat_logits.softmax(1)
    one_hot = F.one_hot(targets, CLASSES).float()
    smooth = 1e-5
    intersection = (probabilities * one_hot).sum(0)
    dice = (2 * intersection + smooth) / (probabilities.square().sum(0) + one_hot.sum(0) + smooth)
    return 0.5 * cross_entropy + 0.5 * (1 - dice).mean()


def augment(image: np.ndarray, mask: np.ndarray, generator: torch.Generator) -> tuple[np.ndarray, np.ndarray]:
    """TransUNet's augmentation (datasets/dataset_synapse.py), drawn from the run's seeded ``generator``.

    With probability 0.5 a rotation by k × 90° (k uniform in 0–3) then a flip along a random axis; else, with
    probability 0.5 (0.25 overall), a rotation about the centre by an integer angle in [−20°, 20°), nearest
    neighbour for image and mask alike, zeros outside. Sizes may swap (rot90); nothing else changes them.
    """
    if torch.rand((), generator=generator).item() > 0.5:
        turns = int(torch.randint(4, (), generator=generator))
        axis = int(torch.randint(2, (), generator=generator))
        return np.flip(np.rot90(image, turns), axis), np.flip(np.rot90(mask, turns), axis)
    if torch.rand((), generator=generator).item() > 0.5:
        angle = float(torch.randint(-20, 20, (), generator=generator))
        height, width = image.shape
        rotation = cv2.getRotationMatrix2D(((width - 1) / 2, (height - 1) / 2), angle, 1.0)
        rotate = {"dsize": (width, height), "flags": cv2.INTER_NEAREST, "borderValue": 0}
        return cv2.warpAffine(image, rotation, **rotate), cv2.warpAffine(mask.astype(np.uint8), rotation, **rotate) > 0
    return image, mask


def load_encoder_weights(encoder: nn.Module, path: str) -> None:
    """ImageNet weights of the R50+ViT-B/16 hybrid, from a local file, into the class-token-free ``encoder``.

    An ``.npz`` is Google's release, read by timm into a twin that has the class token (timm's reader
    expects one); anything else is a state dict of timm's ``vit_base_r50_s16_224``. As TransUNet does, the
    class token's position embedding is dropped and the grid's is resampled (bilinear) to the encoder's grid.
    """
    import timm
    from timm.layers import resample_abs_pos_embed

    file = Path(path)
    if not file.is_file():
        raise BenchError(f"transunet pretrained weights '{path}' do not exist")
    try:
        if file.suffix == ".npz":
            twin = timm.create_model(TIMM_HYBRID, pretrained=False, num_classes=0)
            twin.load_pretrained(str(file))
            state = twin.state_dict()
        elif file.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(file)
        else:
            state = torch.load(file, map_location="cpu", weights_only=True)
        state = {key: value for key, value in state.items() if key != "cls_token" and not key.startswith("head.")}
        positions = state["pos_embed"]
        side = math.isqrt(positions.shape[1])
        positions = positions[:, positions.shape[1] - side * side :]
        state["pos_embed"] = resample_abs_pos_embed(
            positions, new_size=list(encoder.patch_embed.grid_size), old_size=[side, side],
            num_prefix_tokens=0, interpolation="bilinear",
        )  # fmt: skip
        encoder.load_state_dict(state)
    except Exception as error:  # an unreadable or foreign file is the user's input: one line
        raise BenchError(
            f"transunet pretrained weights '{path}' are not R50+ViT-B/16 weights: {type(error).__name__}: "
            f"{str(error).splitlines()[0] if str(error) else ''}"
        ) from error
