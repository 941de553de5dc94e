"""HarDNet-85 (AutoSAM's feature extractor): link rule, widths, feature maps, parameter count, weights."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from bench.errors import BenchError
from bench.methods.hardnet import ConvLayer, HarDNet85, HarmonicDenseBlock, harmonic_links, load_imagenet_weights


@pytest.fixture(scope="module")
def hardnet() -> HarDNet85:
    torch.manual_seed(0)
    return HarDNet85().eval()


def test_layer_k_reads_the_layers_k_minus_each_power_of_two_dividing_k() -> None:
    assert harmonic_links(1) == [0]
    assert harmonic_links(3) == [2]
    assert harmonic_links(6) == [5, 4]
    assert harmonic_links(8) == [7, 6, 4, 0]
    assert harmonic_links(12) == [11, 10, 8]
    assert harmonic_links(16) == [15, 14, 12, 8, 0]


def test_the_first_block_has_the_widths_worked_out_by_hand() -> None:
    # growth 24 × 1.7^(links − 1), rounded to an even number: 24, 40.8 → 40, 69.36 → 70, 117.9 → 118
    block = HarmonicDenseBlock(96, growth=24, depth=8)
    widths = [layer.conv.out_channels for layer in block.layers]
    assert widths == [24, 40, 24, 70, 24, 40, 24, 118]
    # layer 8 reads layers 7, 6, 4 and the block input
    assert block.layers[7].conv.in_channels == 24 + 40 + 70 + 96
    assert block.out_channels == 4 * 24 + 118  # layers 1, 3, 5, 7 and the last


def test_a_block_outputs_its_odd_layers_and_its_last_one() -> None:
    torch.manual_seed(0)
    block = HarmonicDenseBlock(16, growth=8, depth=6).eval()
    outputs: list[torch.Tensor] = []
    for layer in block.layers:
        layer.register_forward_hook(lambda _module, _inputs, output: outputs.append(output))
    with torch.no_grad():
        result = block(torch.randn(2, 16, 8, 8))
    expected = torch.cat([outputs[k - 1] for k in (1, 3, 5, 6)], 1)
    assert result.shape[1] == block.out_channels
    assert torch.equal(result, expected)


def test_five_feature_maps_from_one_half_to_one_thirty_second(hardnet: HarDNet85) -> None:
    with torch.no_grad():
        features = hardnet(torch.randn(1, 3, 64, 96))
    assert [tuple(f.shape[1:]) for f in features] == [
        (96, 32, 48), (192, 16, 24), (320, 8, 12), (720, 4, 6), (1280, 2, 3),
    ]  # fmt: skip


def test_every_conv_is_bias_free_and_followed_by_batchnorm_and_relu6(hardnet: HarDNet85) -> None:
    convs = [m for m in hardnet.modules() if isinstance(m, nn.Conv2d)]
    layers = [m for m in hardnet.modules() if isinstance(m, ConvLayer)]
    assert len(convs) == len(layers) == 2 + sum((8, 16, 16, 16, 16, 4)) + 6
    assert all(conv.bias is None for conv in convs)
    assert all([type(m) for m in layer] == [nn.Conv2d, nn.BatchNorm2d, nn.ReLU6] for layer in layers)


def test_the_parameter_count_is_the_published_one(hardnet: HarDNet85) -> None:
    classifier = 1280 * 1000 + 1000  # the ImageNet head this feature extractor leaves out
    total = sum(p.numel() for p in hardnet.parameters()) + classifier
    assert round(total / 1e6, 1) == 36.7  # HarDNet-85 in Chao et al., ICCV 2019


def test_fewer_levels_build_and_run_only_the_shallower_stages(hardnet: HarDNet85) -> None:
    torch.manual_seed(1)
    shallow = HarDNet85(levels=4).eval()
    shallow.load_state_dict({k: v for k, v in hardnet.state_dict().items() if int(k.split(".")[1]) < 15})
    images = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        deep_features, shallow_features = hardnet(images), shallow(images)
    assert shallow.out_channels == (96, 192, 320, 720)
    assert len(shallow_features) == 4
    assert all(torch.equal(a, b) for a, b in zip(deep_features, shallow_features, strict=False))
    with pytest.raises(ValueError, match="1 to 5 levels"):
        HarDNet85(levels=6)


def test_imagenet_weights_load_from_a_local_checkpoint(hardnet: HarDNet85, tmp_path) -> None:
    released = dict(hardnet.state_dict())
    released["base.19.3.weight"] = torch.zeros(1000, 1280)  # the classifier of a released checkpoint
    released["base.19.3.bias"] = torch.zeros(1000)
    path = tmp_path / "hardnet85.pth"
    torch.save(released, path)
    torch.manual_seed(1)
    shallow = HarDNet85(levels=4)
    load_imagenet_weights(shallow, path)
    assert all(torch.equal(value, released[key]) for key, value in shallow.state_dict().items())

    torch.save({"conv.weight": torch.zeros(3)}, tmp_path / "other.pth")
    with pytest.raises(BenchError, match="is not a HarDNet-85 state dict"):
        load_imagenet_weights(shallow, tmp_path / "other.pth")
    with pytest.raises(BenchError, match="does not exist"):
        load_imagenet_weights(shallow, tmp_path / "missing.pth")
