"""`bench perf` without a subcommand: the whole suite in tiny mode, its report, and its one-line errors."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from bench.cli import app
from bench.data.dataset import Dataset, load_task
from bench.data.samples import Task
from bench.registry import DATASETS, METHODS
from bench.sam.backbones import load_backbone

SECTIONS = (
    "## 1. Encoding throughput",
    "## 2. Cold grid vs warm embedding cache",
    "## 3. Fit time per method",
    "## 4. Tightness-loss memory",
    "## 5. Peak memory per run",
    "## 6. Roofline",
    "## Wall time per section",
)
TRAINED = {"prompt-module", "autosam", "persam-f", "unet", "transunet"}


class PerfEllipses(Dataset):
    """Three training and three test images of the synthetic dataset, so that every run takes about a second."""

    name = "perf-ellipses"
    display_name = "Perf ellipses"
    tasks = ("ellipse",)
    needs_data_root = False

    def load(self, task: str) -> Task:
        full = load_task("synthetic", "ellipse")
        return Task(self.name, task, train=full.train[:3], val=full.val[:1], test=full.test[:3])


@pytest.fixture
def perf_ellipses():
    DATASETS.register(PerfEllipses.name, PerfEllipses)
    yield PerfEllipses
    DATASETS.unregister(PerfEllipses.name)


def tiny_suite(out: Path, *extra: str) -> list[str]:
    return ["perf", "--tiny", "--dataset", "perf-ellipses", "--shots", "3", "--epochs", "1", "--device", "cpu",
            "--out", str(out), *extra]  # fmt: skip


def section(report: str, heading: str) -> str:
    start = report.index(heading)
    following = report.find("\n## ", start + len(heading))
    return report[start : following if following >= 0 else len(report)]


def table(text: str) -> list[dict[str, str]]:
    """The rows of the first Markdown table in ``text``, by column name."""
    lines = [line for line in text.splitlines() if line.startswith("|")]
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    return [dict(zip(header, (cell.strip() for cell in line.strip("|").split("|")), strict=True))
            for line in lines[2:]]  # fmt: skip


def bold_number(text: str) -> float:
    return float(re.search(r"\*\*([0-9.]+)(?:×| GFLOP/s)?\*\*", text).group(1))


def encoder_flops_by_shapes(backbone, image: np.ndarray) -> int:
    """FLOPs of the image encoder on one image from the shapes a forward pass sees, sharing nothing with torch's
    FLOP counter: 2 × multiply-adds of every convolution and linear layer, and of segment-anything's attention
    products (q·kᵀ and weights·v: 2 × 2 × windows × tokens² × channels, over all heads)."""
    from segment_anything.modeling.image_encoder import Attention

    total = 0

    def layer(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        nonlocal total
        if isinstance(module, nn.Linear):
            fan_in = module.in_features
        else:
            fan_in = module.in_channels // module.groups * math.prod(module.kernel_size)
        total += 2 * output.numel() * fan_in

    def attention(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        nonlocal total
        windows, height, width, channels = inputs[0].shape
        total += 2 * 2 * windows * (height * width) ** 2 * channels

    hooks = [module.register_forward_hook(attention if isinstance(module, Attention) else layer)
             for module in backbone.image_encoder.modules() if isinstance(module, (nn.Conv2d, nn.Linear, Attention))]
    try:
        with torch.inference_mode():
            backbone.image_encoder(backbone.preprocess(image)[None].to(backbone.device))
    finally:
        for hook in hooks:
            hook.remove()
    return total


def check_roofline_rows(rows: list[dict[str, str]], matmul: float) -> None:
    """Every measured row: positive counts and rates, and rates that agree with each other (4 digits each)."""
    for row in rows:
        per_image, rate, fraction = (float(row[key]) for key in ("GFLOP / image", "GFLOP/s", "÷ matmul rate"))
        per_second = float(row["images/s"])
        assert per_image > 0 and rate > 0 and fraction > 0 and per_second > 0, row
        assert rate == pytest.approx(per_image * per_second, rel=3e-3)
        assert fraction == pytest.approx(rate / matmul, rel=3e-3)
        # the products alone run no slower than the whole path: timed ÷ alone ≥ 1 within timing noise, and alone
        # reaches the achieved fraction of the matmul rate times that bound
        bound, alone = float(row["speed-up bound"].rstrip("×")), float(row["products alone ÷ matmul rate"])
        assert bound > 0.5 and alone == pytest.approx(fraction * bound, rel=2e-2), row


def test_the_suite_reports_every_section_with_measured_numbers(tmp_path, perf_ellipses, isolated_cache) -> None:
    out = tmp_path / "reports" / "perf.md"
    result = CliRunner().invoke(app, tiny_suite(out))
    assert result.exit_code == 0, result.output
    report = out.read_text()
    assert [heading in report for heading in SECTIONS] == [True] * len(SECTIONS)
    assert f"torch {torch.__version__}" in report and "CPU: " in report and "torch threads: " in report
    assert "`bench perf --out " in report and "--tiny`" in report and "Measured 2" in report

    encode = section(report, SECTIONS[0])
    harness, bare = (float(row["images/s"]) for row in table(encode))
    assert harness > 0 and bare > 0
    assert bold_number(encode) == pytest.approx(harness / bare, abs=2e-3)

    grid = section(report, SECTIONS[1])
    cold, warm = table(grid)
    assert float(cold["wall s"]) > 0 and float(warm["wall s"]) > 0
    # cold: medsam-box encodes the 3 test images, the prompt module its 3 support images; warm: nothing
    assert (int(cold["images encoded"]), int(warm["images encoded"])) == (6, 0)
    read = {name: int(row["embeddings read from cache"]) for name, row in (("cold", cold), ("warm", warm))}
    assert read["warm"] == int(cold["images encoded"]) + read["cold"]
    assert bold_number(grid) == pytest.approx(float(cold["wall s"]) / float(warm["wall s"]), rel=0.1)

    fits = {row["method"]: row for row in table(section(report, SECTIONS[2]))}
    assert set(fits) == {"prompt-module", "autosam", "transunet", "unet"}
    reference = float(fits["prompt-module"]["s/epoch"])
    for row in fits.values():
        assert row["epochs"] == "1" and float(row["fit s"]) > 0 and float(row["peak memory MiB"]) >= 0
        per_epoch = float(row["s/epoch"])
        assert per_epoch == pytest.approx(float(row["fit s"]), abs=1e-2)
        # one epoch, so s/epoch is the fit time to 3 decimals: the printed ratio (2 decimals) must lie in the
        # range those rounded times allow, which is wide when a tiny fit takes a few hundredths of a second
        lowest, highest = (per_epoch - 5e-4) / (reference + 5e-4), (per_epoch + 5e-4) / (reference - 5e-4)
        assert lowest - 5e-3 <= float(row["fit ÷ prompt module"]) <= highest + 5e-3

    loss = {row["variant"]: row for row in table(section(report, SECTIONS[3]))}
    assert set(loss) == {"row/column sums", "band masks"}
    assert len({row["loss"] for row in loss.values()}) == 1  # the two formulations compute the same value
    assert all(float(row["ms per forward + backward"]) > 0 for row in loss.values())

    memory = table(section(report, SECTIONS[4]))
    measured = {row["method"] for row in memory if re.fullmatch(r"\d+", row["peak memory MiB"])}
    assert measured == set(METHODS.names())  # every registered method, the extra ones included
    assert {row["measure"] for row in memory} == {"cpu-rss-increase"}

    roofline = section(report, SECTIONS[5])
    matmul = bold_number(roofline)
    assert matmul > 0 and "512² matrices on cpu" in roofline
    rows = {row["hot path"]: row for row in table(roofline)}
    assert set(rows) == {"encoder forward (tiny-sam-test)", *TRAINED}
    check_roofline_rows(list(rows.values()), matmul)
    encoder = rows.pop("encoder forward (tiny-sam-test)")
    image = np.random.default_rng(1).integers(0, 256, (256, 256), dtype=np.uint8)
    by_shapes = encoder_flops_by_shapes(load_backbone("tiny-sam-test", None, "cpu"), image)
    assert float(encoder["GFLOP / image"]) == pytest.approx(by_shapes / 1e9, rel=1e-3)
    # tiny mode: each method's quick budget, one pass over one support image in at least one optimiser step
    assert {row["budget"] for row in rows.values()} == {"quick"}
    assert all(re.fullmatch(r"one pass: 1 image in [1-9]\d* optimiser steps?", row["measured"])
               for row in rows.values())

    walls = table(section(report, SECTIONS[6]))
    assert len(walls) == 6 and all(float(row["seconds"]) > 0 for row in walls)
    # the suite measured against its own temporary cache: the user's was neither read nor filled
    assert not list(isolated_cache.rglob("*.npy"))


def test_roofline_alone_measures_the_chosen_paths_and_budgets(tmp_path, perf_ellipses, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["perf", "roofline", "--tiny", "--dataset", "perf-ellipses", "--shots", "2",
                                      "--only", "unet", "--device", "cpu"])  # fmt: skip
    assert result.exit_code == 0, result.output
    matmul = float(re.search(r"matmul rate: ([0-9.]+) GFLOP/s", result.output).group(1))
    rows = {row["budget"]: row for row in table(result.output)}
    assert set(rows) == {"paper", "quick"} and {row["hot path"] for row in rows.values()} == {"unet"}
    check_roofline_rows(list(rows.values()), matmul)
    # tiny mode trains both at 64²: the paper budget's ResNet-34 encoder does more work per image than ResNet-18
    assert float(rows["paper"]["GFLOP / image"]) > float(rows["quick"]["GFLOP / image"])
    # UNet's batches of 4 hold both support images: one optimiser step per pass
    assert {row["measured"] for row in rows.values()} == {"one pass: 2 images in 1 optimiser step"}
    assert not (tmp_path / "results").exists()


@pytest.mark.parametrize(
    ("options", "message"),
    [(["--only", "unett"], "Did you mean 'unet'?"), (["--only", "medsam-box"], "unknown hot path 'medsam-box'"),
     (["--budget", "fast"], "--budget takes paper or quick"), (["--shots", "50"], "has 3 training images")],
)  # fmt: skip
def test_roofline_refuses_bad_input_in_one_line(perf_ellipses, options, message) -> None:
    result = CliRunner().invoke(app, ["perf", "roofline", "--tiny", "--dataset", "perf-ellipses", *options])
    assert result.exit_code == 2, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and message in errors[0], result.output


def test_subcommands_still_run_without_the_suite(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    decoded = CliRunner().invoke(
        app, ["perf", "decode", "--backbone", "tiny-sam-test", "--images", "2", "--repeats", "1", "--device", "cpu"]
    )
    assert decoded.exit_code == 0, decoded.output
    assert "decode: tiny-sam-test" in decoded.output
    assert not (tmp_path / "results").exists()  # the suite's callback did not run


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--dataset", "nope"], "nope"),
        (["--task", "head"], "has no task 'head'"),
        (["--shots", "50"], "has 3 training images"),
        (["--backbone", "nope"], "nope"),
    ],
)
def test_bad_input_ends_in_one_error_line_and_writes_nothing(tmp_path, perf_ellipses, options, message) -> None:
    out = tmp_path / "perf.md"
    result = CliRunner().invoke(app, tiny_suite(out, *options))
    assert result.exit_code == 2, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and message in errors[0], result.output
    assert "Traceback" not in result.output and not out.exists()


def test_a_folder_as_the_report_is_refused(tmp_path, perf_ellipses) -> None:
    result = CliRunner().invoke(app, tiny_suite(tmp_path))
    assert result.exit_code == 2 and "is a folder" in result.output
