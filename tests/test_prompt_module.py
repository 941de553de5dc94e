"""`prompt-module` on the tiny random SAM: architecture, initialisation, gradients, training loop, record."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bench.data.samples import Box, TrainItem, tight_box
from bench.errors import BenchError
from bench.method import RunContext
from bench.method.box_losses import box_loss
from bench.method.training import bce_dice_loss
from bench.records.spec import RunSpec
from bench.registry import METHODS
from bench.run.runner import run_one
from bench.run.settings import GridSettings

TINY_BACKBONE = "tiny-sam-test"
TRAINABLE = 2_433_984  # 32,896 + 295,168 + 8,256 + 2,097,664 (the module)
PromptModule = METHODS.get("prompt-module")


def hparams(**changes):
    return PromptModule.resolve_hparams("quick", {"epochs": 1, "lr_drop_epoch": 1, **changes}.items())


def context(hp, labels: str = "box") -> RunContext:
    spec = RunSpec("prompt-module", "synthetic", "ellipse", labels, 3, 0, 0, "quick", backbone=TINY_BACKBONE)
    return RunContext(spec=spec, hparams=hp, device=torch.device("cpu"))


def items(labels: str = "box") -> list[TrainItem]:
    """Three small images, one of them not square, with a bright disc each."""
    rng = np.random.default_rng(0)
    out = []
    for index, shape in enumerate([(64, 64), (48, 80), (64, 64)]):
        yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]]
        mask = (yy - shape[0] // 2) ** 2 + (xx - shape[1] // 3) ** 2 <= 12**2
        image = np.where(mask, 190, 50).astype(np.uint8) + rng.integers(0, 30, shape).astype(np.uint8)
        if labels == "box":
            out.append(TrainItem(f"i{index}", image, None, box=tight_box(mask)))
        else:
            out.append(TrainItem(f"i{index}", image, None, mask=mask))
    return out


def test_the_module_has_the_papers_shapes_and_parameter_count() -> None:
    torch.manual_seed(0)
    head = PromptModule(hparams()).head
    assert sum(p.numel() for p in head.parameters()) == TRAINABLE
    sparse, dense = head(torch.randn(3, 256, 64, 64))
    assert sparse.shape == (3, 2, 256)
    assert dense.shape == (3, 256, 64, 64)
    assert (dense >= 0).all()  # the dense branch ends in a ReLU


def test_unknown_init_or_size_barrier_is_a_user_error() -> None:
    with pytest.raises(BenchError, match="init must be support-box or median-box or box or default"):
        PromptModule(hparams(init="xavier"))
    with pytest.raises(BenchError, match="size_barrier_on must be pixels or box-fraction, not 'area'"):
        PromptModule(hparams(size_barrier_on="area"))


def test_box_init_starts_the_sparse_head_at_the_whole_image_box_prompt() -> None:
    train = items()
    torch.manual_seed(0)
    boxed = PromptModule(hparams(epochs=0, init="box"))
    ctx = context(boxed.hparams)
    boxed.fit(train, ctx)
    torch.manual_seed(0)
    plain = PromptModule(hparams(epochs=0, init="default"))
    plain.fit(train, context(plain.hparams))

    backbone = ctx.backbone
    whole = backbone.box_to_input(Box(0, 0, 63, 63), (64, 64))
    prompt, _ = backbone.embed_boxes(whole)
    embeddings = ctx.embeddings([item.image for item in train])
    with torch.no_grad():
        sparse_boxed, dense_boxed = boxed.head(embeddings)
        sparse_plain, dense_plain = plain.head(embeddings)
    assert torch.allclose(boxed.head.sparse.weight, 0.01 * plain.head.sparse.weight)
    assert torch.equal(boxed.head.sparse.bias, prompt.reshape(-1))
    # whatever the image, the sparse prompt is the generic one, up to the scaled-down weights
    scale = prompt.abs().mean()
    assert (sparse_boxed - prompt).abs().max() < 0.05 * scale
    assert (sparse_plain - prompt).abs().mean() > 0.5 * scale
    # only the sparse head is touched
    assert torch.equal(dense_boxed, dense_plain)


@pytest.mark.parametrize("labels", ["box", "mask"])
def test_support_box_init_starts_at_the_box_holding_every_training_box(labels: str) -> None:
    train = items(labels)
    torch.manual_seed(0)
    method = PromptModule(hparams(epochs=0))  # support-box is the default
    ctx = context(method.hparams, labels)
    method.fit(train, ctx)
    backbone = ctx.backbone
    # in the input frame each image is scaled by its own longest side, so the union takes its top from the
    # 48×80 image's box and its other sides from the square images' boxes
    corners = []
    for item in train:
        box = tight_box(item.mask) if labels == "mask" else item.box
        corners.append(backbone.box_to_input(box, item.image.shape[:2])[0].tolist())
    corners = np.array(corners)
    expected = [corners[:, 0].min(), corners[:, 1].min(), corners[:, 2].max(), corners[:, 3].max()]
    assert expected[1] == corners[1, 1] and expected[0] == corners[0, 0] < corners[1, 0]
    whole = backbone.box_to_input(Box(0, 0, 63, 63), (64, 64))[0].tolist()
    assert expected != whole
    prompt, _ = backbone.embed_boxes(torch.tensor([expected]))
    assert torch.allclose(method.head.sparse.bias, prompt.reshape(-1))


def test_gradients_reach_the_module_and_nothing_of_the_backbone() -> None:
    torch.manual_seed(0)
    method = PromptModule(hparams())
    ctx = context(method.hparams)
    train = items()
    backbone = ctx.backbone
    embeddings = ctx.embeddings([item.image for item in train])
    shapes = [item.image.shape for item in train]
    logits = method._logits_at_own_size(backbone, embeddings, shapes)
    box_loss(logits, [item.box for item in train]).total.backward()
    for name, parameter in method.head.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name
    assert all(not p.requires_grad and p.grad is None for p in backbone.model.parameters())


def test_fit_leaves_the_backbone_unchanged_and_records_the_trainable_count() -> None:
    torch.manual_seed(0)
    method = PromptModule(hparams(epochs=2))
    ctx = context(method.hparams)
    before = {key: value.clone() for key, value in ctx.backbone.model.state_dict().items()}
    head_before = [p.detach().clone() for p in method.head.parameters()]
    method.fit(items(), ctx)
    after = ctx.backbone.model.state_dict()
    assert all(torch.equal(before[key], after[key]) for key in before)
    assert any(not torch.equal(a, b) for a, b in zip(head_before, method.head.parameters(), strict=True))
    total, trainable = method.parameter_counts([ctx.backbone.model])
    assert trainable == TRAINABLE
    assert total == TRAINABLE + sum(p.numel() for p in ctx.backbone.model.parameters())


def test_losses_are_computed_at_each_samples_own_size(monkeypatch) -> None:
    calls: list[tuple[list[tuple[int, ...]], list[Box]]] = []

    def spy(logits, boxes, settings):
        calls.append(([tuple(logit.shape) for logit in logits], list(boxes)))
        return box_loss(logits, boxes, settings)

    monkeypatch.setattr("bench.methods.prompt_module.box_loss", spy)
    train = items()
    torch.manual_seed(0)
    method = PromptModule(hparams(batch_size=3))
    method.fit(train, context(method.hparams))
    assert len(calls) == 1
    shapes, boxes = calls[0]
    by_shape = sorted(zip(shapes, [b.as_xyxy() for b in boxes], strict=True))
    assert by_shape == sorted((item.image.shape, item.box.as_xyxy()) for item in train)


def test_mask_labels_train_with_bce_and_dice(monkeypatch) -> None:
    seen: list[tuple[int, ...]] = []

    def spy(logits, targets):
        seen.append(tuple(logits.shape))
        assert logits.shape == targets.shape
        return bce_dice_loss(logits, targets)

    def no_box_loss(*_):
        raise AssertionError("box losses used with mask labels")

    monkeypatch.setattr("bench.methods.prompt_module.bce_dice_loss", spy)
    monkeypatch.setattr("bench.methods.prompt_module.box_loss", no_box_loss)
    torch.manual_seed(0)
    method = PromptModule(hparams(batch_size=3))
    method.fit(items("mask"), context(method.hparams, "mask"))
    assert sorted(seen) == sorted([(1, 1, 64, 64), (1, 1, 48, 80), (1, 1, 64, 64)])


def test_schedule_and_batches_follow_the_hparams(monkeypatch) -> None:
    rates: list[float] = []
    original_step = torch.optim.Adam.step

    def recording_step(self, *args, **kwargs):
        rates.append(self.param_groups[0]["lr"])
        assert self.param_groups[0]["weight_decay"] == 1e-4
        return original_step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.Adam, "step", recording_step)
    torch.manual_seed(0)
    method = PromptModule(hparams(epochs=2, lr_drop_epoch=1, batch_size=2))
    method.fit(items(), context(method.hparams))
    # 3 images in batches of 2: two steps an epoch; lr × 0.1 after epoch 1
    assert rates == pytest.approx([1e-3] * 2 + [1e-4] * 2)


def test_training_never_runs_the_image_encoder_per_epoch(monkeypatch) -> None:
    torch.manual_seed(0)
    method = PromptModule(hparams(epochs=2))
    ctx = context(method.hparams)
    encoded: list[int] = []
    original = type(ctx.backbone).encode

    def counting_encode(self, batch):
        encoded.append(len(batch))
        return original(self, batch)

    monkeypatch.setattr(type(ctx.backbone), "encode", counting_encode)
    train = items()
    method.fit(train, ctx)
    assert sum(encoded) == len(train)  # each image once, for the cache
    PromptModule(hparams(epochs=2)).fit(train, ctx)
    assert sum(encoded) == len(train)  # a second run reads the cache only


def test_a_recorded_run(tmp_path) -> None:
    spec = RunSpec("prompt-module", "synthetic", "ellipse", "box", 2, 0, 0, "quick", backbone=TINY_BACKBONE,
                   overrides=(("epochs", 1),))  # fmt: skip
    record = run_one(spec, GridSettings(tmp_path, "t", device="cpu"))
    assert record["status"] == "ok", record.get("traceback")
    assert record["params_trainable"] == TRAINABLE
    assert record["params_total"] > TRAINABLE
    assert record["hparams"]["init"] == "support-box" and record["hparams"]["epochs"] == 1
    assert all(0.0 <= case["dice"] <= 1.0 for case in record["cases"])


def test_loss_settings_come_from_the_hparams_and_t_grows_per_epoch(monkeypatch) -> None:
    seen: list = []

    def spy(logits, boxes, settings):
        seen.append(settings)
        return box_loss(logits, boxes, settings)

    monkeypatch.setattr("bench.methods.prompt_module.box_loss", spy)
    hp = hparams(epochs=3, batch_size=3, barrier_growth=2.0, size_lower=0.6, size_weight=0.5, band_width=7,
                 size_barrier_on="box-fraction")  # fmt: skip
    method = PromptModule(hp)
    ctx = context(method.hparams)
    method.fit(items(), ctx)
    assert [s.barrier_t for s in seen] == [5.0, 10.0, 20.0]
    assert {(s.size_bounds, s.size_weight, s.band_width, s.size_on_box_fraction) for s in seen} == {
        ((0.6, 0.9), 0.5, 7, True)
    }
    # the training log: the support boxes once, then one entry per epoch with each term and size / box area
    facts, *epochs = ctx.training_log
    assert facts["support_box_area"] == pytest.approx([item.box.area / item.image.size for item in items()])
    assert [entry["epoch"] for entry in epochs] == [0, 1, 2]
    assert {"loss", "emptiness", "tightness", "size"} <= set(epochs[0]) and len(epochs[0]["size_over_box_area"]) == 3
    assert all(0 <= size <= 1 / min(item.box.area / item.image.size for item in items())
               for size in epochs[0]["hard_size_over_box_area"])  # fmt: skip


def test_median_box_init_starts_at_each_coordinates_median() -> None:
    train = items()
    method = PromptModule(hparams(epochs=0, init="median-box"))
    ctx = context(method.hparams)
    method.fit(train, ctx)
    corners = np.array([ctx.backbone.box_to_input(item.box, item.image.shape[:2])[0].tolist() for item in train])
    expected = np.median(corners, axis=0).tolist()  # three boxes: the middle value of each coordinate
    assert expected != [corners[:, 0].min(), corners[:, 1].min(), corners[:, 2].max(), corners[:, 3].max()]
    prompt, _ = ctx.backbone.embed_boxes(torch.tensor([expected]))
    assert torch.allclose(method.head.sparse.bias, prompt.reshape(-1))


@pytest.mark.parametrize(("warmup", "expected"), [
    (0, [1e-3] * 4 + [1e-4] * 2),  # the paper's: full lr, × 0.1 from epoch lr_drop_epoch on
    (2, [2.5e-4, 5e-4, 7.5e-4, 1e-3, 1e-4, 1e-4]),  # linear warm-up over 2 epochs of 2 steps each
])  # fmt: skip
def test_learning_rate_schedule(monkeypatch, warmup: int, expected: list[float]) -> None:
    rates: list[float] = []
    original_step = torch.optim.Adam.step

    def recording_step(self, *args, **kwargs):
        rates.append(self.param_groups[0]["lr"])
        return original_step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.Adam, "step", recording_step)
    method = PromptModule(hparams(epochs=3, lr_drop_epoch=2, batch_size=2, warmup_epochs=warmup))
    method.fit(items(), context(method.hparams))  # 3 images in batches of 2: 2 steps per epoch
    assert rates == pytest.approx(expected)


def test_a_changed_box_loss_default_outdates_box_records_only() -> None:
    from bench.run.current import jsonable, recipe_changes

    def record_and_spec(labels: str) -> tuple[dict, RunSpec]:
        spec = RunSpec("prompt-module", "hc18", "head", labels, 10, 0, 0, "paper", "litemedsam")
        hparams = jsonable(vars(PromptModule.resolve_hparams("paper")))
        return {"hparams": hparams | {"band_width": hparams["band_width"] + 1}}, spec

    assert recipe_changes(*record_and_spec("mask")) == {}  # mask training never reads the box-loss knobs
    record, spec = record_and_spec("box")
    assert recipe_changes(record, spec) == {"band_width": (record["hparams"]["band_width"], 5)}
