"""HarDNet-85 (Chao et al., "HarDNet: A Low Memory Traffic Network", ICCV 2019), the feature extractor of AutoSAM.

Written here because neither timm nor segmentation-models-pytorch has a HarDNet. Re-implemented from the
paper and the reference notes (``baselines.md`` §3.2), not from any code:

* stem: conv 3→48 (3×3, stride 2), conv 48→96 (3×3), 3×3 max-pool with stride 2;
* six harmonic dense blocks (growth 24, 24, 28, 36, 48, 256; 8, 16, 16, 16, 16, 4 layers; channel
  multiplier 1.7), each followed by a 1×1 transition to 192, 256, 320, 480, 720, 1280 channels, with a 2×2
  max-pool after transitions 1, 3 and 5 and a dropout (p = 0.1) before the last transition;
* every conv is conv (no bias) + BatchNorm + ReLU6.

In a harmonic dense block, layer k (counting the block's input as layer 0) reads the concatenation of
layers k − 2ⁱ for every 2ⁱ that divides k; its width is growth × 1.7^(links − 1), rounded to an even number.
The block outputs the concatenation of its odd layers and its last one.

The stages are kept in one ``base`` sequence of 19 modules with conv/norm/relu sub-modules, the layout of
the released ImageNet checkpoints (``hardnet85.pth``, whose classifier ``base.19.*`` is dropped), so
:func:`load_imagenet_weights` can start from them. Nothing is downloaded.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import nn

STEM_CHANNELS = (48, 96)
GROWTH = (24, 24, 28, 36, 48, 256)
LAYERS = (8, 16, 16, 16, 16, 4)
TRANSITION_CHANNELS = (192, 256, 320, 480, 720, 1280)
POOLED_AFTER = (0, 2, 4)  # transitions (0-based) followed by a 2×2 max-pool
CHANNEL_MULTIPLIER = 1.7
# index in ``base`` of the module whose output is the feature map at 1/2, 1/4, 1/8, 1/16, 1/32
FEATURE_TAPS = (1, 4, 9, 14, 18)
FEATURE_CHANNELS = (96, 192, 320, 720, 1280)


class ConvLayer(nn.Sequential):
    """Conv (no bias) + BatchNorm + ReLU6, 'same' padding."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int = 3, stride: int = 1) -> None:
        super().__init__()
        self.add_module("conv", nn.Conv2d(in_channels, out_channels, kernel, stride, kernel // 2, bias=False))
        self.add_module("norm", nn.BatchNorm2d(out_channels))
        self.add_module("relu", nn.ReLU6(inplace=True))


def harmonic_links(layer: int) -> list[int]:
    """The earlier layers that ``layer`` (≥ 1) of a harmonic dense block reads: k − 2ⁱ for each 2ⁱ dividing k."""
    links = []
    step = 1
    while layer % step == 0 and step <= layer:
        links.append(layer - step)
        step *= 2
    return links


def layer_width(layer: int, input_channels: int, growth: int, multiplier: float = CHANNEL_MULTIPLIER) -> int:
    """Output channels of ``layer`` of a block (layer 0 is the block's input), rounded to an even number."""
    if layer == 0:
        return input_channels
    width = growth * multiplier ** (len(harmonic_links(layer)) - 1)
    return 2 * math.floor((width + 1) / 2)


class HarmonicDenseBlock(nn.Module):
    """A harmonic dense block: sparse, power-of-two shortcuts instead of DenseNet's all-to-all ones."""

    def __init__(self, input_channels: int, growth: int, depth: int) -> None:
        super().__init__()
        self.depth = depth
        widths = [layer_width(k, input_channels, growth) for k in range(depth + 1)]
        self.layers = nn.ModuleList(
            ConvLayer(sum(widths[link] for link in harmonic_links(k)), widths[k]) for k in range(1, depth + 1)
        )
        self.output_layers = [k for k in range(1, depth + 1) if k % 2 == 1 or k == depth]
        self.out_channels = sum(widths[k] for k in self.output_layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outputs = [x]
        for k, layer in enumerate(self.layers, start=1):
            links = harmonic_links(k)
            inputs = outputs[links[0]] if len(links) == 1 else torch.cat([outputs[i] for i in links], 1)
            outputs.append(layer(inputs))
        return torch.cat([outputs[k] for k in self.output_layers], 1)


class HarDNet85(nn.Module):
    """HarDNet-85 without its classifier: ``forward`` returns the feature maps at 1/2, 1/4, … of the input.

    ``levels`` (1–5) says how deep the network goes: with 4 it ends at the 1/16 map, and the 1/32 stage
    (17.5 M of its 35.4 M parameters) is neither built nor run.
    """

    def __init__(self, levels: int = len(FEATURE_TAPS)) -> None:
        super().__init__()
        if not 1 <= levels <= len(FEATURE_TAPS):
            raise ValueError(f"HarDNet-85 has feature maps at 1 to {len(FEATURE_TAPS)} levels, not {levels}")
        stages: list[nn.Module] = [
            ConvLayer(3, STEM_CHANNELS[0], stride=2),
            ConvLayer(*STEM_CHANNELS),
            nn.MaxPool2d(3, stride=2, padding=1),
        ]
        last_stage = FEATURE_TAPS[levels - 1]
        channels = STEM_CHANNELS[1]
        for index, (growth, depth, width) in enumerate(zip(GROWTH, LAYERS, TRANSITION_CHANNELS, strict=True)):
            if len(stages) > last_stage:
                break
            block = HarmonicDenseBlock(channels, growth, depth)
            stages.append(block)
            if index == len(GROWTH) - 1:
                stages.append(nn.Dropout(0.1))
            stages.append(ConvLayer(block.out_channels, width, kernel=1))
            channels = width
            if index in POOLED_AFTER:
                stages.append(nn.MaxPool2d(2, stride=2))
        self.base = nn.Sequential(*stages[: last_stage + 1])
        self.out_channels = FEATURE_CHANNELS[:levels]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = []
        for index, stage in enumerate(self.base):
            x = stage(x)
            if index in FEATURE_TAPS:
                features.append(x)
        return features


def load_imagenet_weights(network: HarDNet85, path: str | Path) -> None:
    """Start ``network`` from a released HarDNet-85 ImageNet checkpoint (a local file). Stages the network
    does not build (the classifier ``base.19``, and deeper levels than asked for) are dropped; a missing or
    wrong file is a :class:`bench.errors.BenchError`."""
    from bench.sam.checkpoints import load_weights, read_state_dict

    built = len(network.base)
    state = {key: value for key, value in read_state_dict(Path(path)).items() if _stage(key) < built}
    load_weights(network, state, Path(path), "HarDNet-85")


def _stage(key: str) -> int:
    """The ``base`` index a checkpoint key belongs to (``base.7.conv.weight`` → 7); −1 for foreign keys,
    which are kept so that the architecture check reports them."""
    parts = key.split(".")
    return int(parts[1]) if len(parts) > 2 and parts[0] == "base" and parts[1].isdigit() else -1
