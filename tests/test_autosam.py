"""`autosam` on the tiny random SAM: prompt network, input frame, frozen backbone, training loop, record."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

from bench.data.samples import TrainItem
from bench.errors import BenchError
from bench.method import RunContext
from bench.methods.autosam import PromptNetwork, network_input
from bench.methods.hardnet import HarDNet85
from bench.records.spec import RunSpec
from bench.registry import METHODS
from bench.run.runner import run_one
from bench.run.settings import GridSettings

TINY_BACKBONE = "tiny-sam-test"
TRAINABLE = 24_052_124  # HarDNet-85 down to 1/16 (17,883,548) + decoder (6,168,576)
AutoSAM = METHODS.get("autosam")


def hparams(**changes):
    return AutoSAM.resolve_hparams("quick", {"epochs": 1, "input_size": 64, **changes}.items())


def context(hp) -> RunContext:
    spec = RunSpec("autosam", "synthetic", "ellipse", "mask", 3, 0, 0, "quick", backbone=TINY_BACKBONE)
    return RunContext(spec=spec, hparams=hp, device=torch.device("cpu"))


def items(count: int = 3) -> list[TrainItem]:
    """Small images, one of them not square, with a bright disc each."""
    rng = np.random.default_rng(0)
    out = []
    for index in range(count):
        shape = (48, 80) if index == 1 else (64, 64)
        yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]]
        mask = (yy - shape[0] // 2) ** 2 + (xx - shape[1] // 3) ** 2 <= 12**2
        image = np.where(mask, 190, 50).astype(np.uint8) + rng.integers(0, 30, shape).astype(np.uint8)
        out.append(TrainItem(f"i{index}", image, None, mask=mask))
    return out


def test_the_prompt_network_gives_a_dense_prompt_on_the_64_grid() -> None:
    torch.manual_seed(0)
    network = PromptNetwork().eval()
    with torch.no_grad():
        for size in (64, 128):
            dense = network(torch.randn(2, 3, size, size))
            assert dense.shape == (2, 256, 64, 64)
            assert dense.abs().max() <= 1  # tanh
    trainable = sum(p.numel() for p in network.parameters())
    assert trainable == TRAINABLE
    # with HarDNet's unused 1/32 stage, the original's count: the seed paper's 41.6 M
    encoder = sum(p.numel() for p in network.encoder.parameters())
    full = sum(p.numel() for p in HarDNet85().parameters()) + trainable - encoder
    assert round(full / 1e6, 1) == 41.6


def test_the_network_sees_the_image_where_the_backbone_puts_it() -> None:
    backbone = context(hparams()).backbone
    white = np.full((48, 80), 255, np.uint8)
    tensor = network_input(white, backbone, 64)
    height, width = backbone.input_shape((48, 80))
    rows = round(height * 64 / backbone.input_size)
    assert width == backbone.input_size and 0 < rows < 64
    # ImageNet-normalised once inside the image, zero (the mean colour) in the padding below it
    expected = (1 - torch.tensor(IMAGENET_DEFAULT_MEAN)) / torch.tensor(IMAGENET_DEFAULT_STD)
    assert torch.allclose(tensor[:, :rows], expected[:, None, None].expand(3, rows, 64))
    assert torch.equal(tensor[:, rows:], torch.zeros(3, 64 - rows, 64))
    # grey and three equal colour channels are the same image
    assert torch.equal(network_input(np.repeat(white[..., None], 3, 2), backbone, 64), tensor)
    assert not (network_input(np.full((64, 64), 255, np.uint8), backbone, 64) == 0).any()


def test_wrong_hyper_parameters_are_user_errors() -> None:
    with pytest.raises(BenchError, match="output must be sigmoid or min-max"):
        AutoSAM(hparams(output="softmax"))
    with pytest.raises(BenchError, match="multiple of 32"):
        AutoSAM(hparams(input_size=100))
    spec = RunSpec("autosam", "synthetic", "ellipse", "box", 3, 0, 0, "quick", backbone=TINY_BACKBONE)
    assert AutoSAM.skip(spec) == "autosam learns from mask labels, not box"


def test_gradients_pass_the_frozen_decoder_into_the_prompt_network_only() -> None:
    torch.manual_seed(0)
    method = AutoSAM(hparams())
    ctx = context(method.hparams)
    train = items()
    backbone = ctx.backbone
    embeddings = ctx.embeddings([item.image for item in train])
    inputs = method._inputs(backbone, [item.image for item in train])
    logits = method._logits_at_own_size(backbone, embeddings, inputs, [item.image.shape for item in train])
    assert [tuple(logit.shape) for logit in logits] == [item.image.shape for item in train]
    sum(
        method._loss(logit, torch.from_numpy(item.mask).float()) for logit, item in zip(logits, train, strict=True)
    ).backward()
    for name, parameter in method.network.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name
    assert all(not p.requires_grad and p.grad is None for p in backbone.model.parameters())


def test_fit_changes_the_prompt_network_and_never_the_backbone(monkeypatch) -> None:
    torch.manual_seed(0)
    method = AutoSAM(hparams(epochs=2))
    ctx = context(method.hparams)
    before = {key: value.clone() for key, value in ctx.backbone.model.state_dict().items()}
    network_before = [p.detach().clone() for p in method.network.parameters()]
    encoded: list[int] = []
    original_encode = type(ctx.backbone).encode

    def counting_encode(self, batch):
        encoded.append(len(batch))
        return original_encode(self, batch)

    monkeypatch.setattr(type(ctx.backbone), "encode", counting_encode)
    train = items()
    method.fit(train, ctx)
    after = ctx.backbone.model.state_dict()
    assert all(torch.equal(before[key], after[key]) for key in before)
    changed = [not torch.equal(a, b) for a, b in zip(network_before, method.network.parameters(), strict=True)]
    assert all(changed)
    assert sum(encoded) == len(train)  # each image once, for the cache; never per epoch
    total, trainable = method.parameter_counts([ctx.backbone.model])
    assert trainable == TRAINABLE
    assert total == TRAINABLE + sum(p.numel() for p in ctx.backbone.model.parameters())


def test_the_optimiser_steps_once_per_accumulation_window(monkeypatch) -> None:
    events: list[str] = []
    original_step = torch.optim.Adam.step
    original_loss = AutoSAM._loss

    def recording_step(self, *args, **kwargs):
        events.append("step")
        assert self.param_groups[0]["lr"] == 3e-4 and self.param_groups[0]["weight_decay"] == 1e-4
        return original_step(self, *args, **kwargs)

    def recording_loss(self, logits, target):
        events.append("sample")
        return original_loss(self, logits, target)

    monkeypatch.setattr(torch.optim.Adam, "step", recording_step)
    monkeypatch.setattr(AutoSAM, "_loss", recording_loss)
    torch.manual_seed(0)
    method = AutoSAM(hparams(epochs=2, batch_size=2, accumulation_steps=2))
    method.fit(items(5), context(method.hparams))
    # 5 samples, windows of 2 × 2: four samples then one, each window one step; twice
    assert "".join("s" if e == "step" else "." for e in events) == "....s.s" * 2


def test_min_max_output_normalises_each_map_to_zero_one() -> None:
    torch.manual_seed(0)
    method = AutoSAM(hparams(output="min-max"))
    ctx = context(method.hparams)
    train = items()
    method.fit(train, ctx)
    outputs = method.predict(train, ctx)
    for output, item in zip(outputs, train, strict=True):
        assert output.shape == item.image.shape
        assert output.min() == 0 and output.max() == pytest.approx(1)


def test_a_recorded_run(tmp_path) -> None:
    spec = RunSpec("autosam", "synthetic", "ellipse", "mask", 2, 0, 0, "quick", backbone=TINY_BACKBONE,
                   overrides=(("epochs", 1), ("input_size", 64)))  # fmt: skip
    record = run_one(spec, GridSettings(tmp_path, "t", device="cpu"), keep_predictions=False)
    assert record["status"] == "ok", record.get("traceback")
    assert record["params_trainable"] == TRAINABLE
    assert record["params_total"] > TRAINABLE
    assert record["hparams"]["epochs"] == 1 and record["hparams"]["output"] == "sigmoid"
    assert all(0.0 <= case["dice"] <= 1.0 for case in record["cases"])
