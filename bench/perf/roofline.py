"""`bench perf roofline`: how close the hot paths come to this machine's own matmul rate.

The ceiling is measured in the same process: a ``torch.mm`` of two ``matmul_size``² matrices (2n³ FLOPs) in the
precision the paths run in (``--precision``, ``bench.compute.device``: fp32, fp32 on TF32 tensor cores, or bfloat16), at
the process's torch thread count, the median of a few repeats after a warm-up; on a GPU timed through CUDA
events. FLOPs are counted, not estimated: ``FlopCounterMode`` counts the
matrix products and convolutions, forward and backward — the work a matmul rate bounds. Element-wise operations
are not counted, so a path they dominate shows a low fraction. No forward is both counted and timed, so
counting's overhead is never timed.

The hot paths: the encoder forward (FLOPs counted on the eager ``image_encoder``, i.e. what it computes; time of
``Backbone.encode``, the harness's call, in batches of the size the backbone chooses unless one is given) and the
training step of every trained method at its ``paper`` and ``quick`` budgets (:mod:`bench.perf.train_step`).
Per-image figures are per image-step: the FLOPs of a step over the images in it.

The last column bounds what is left: the counted calls replayed one by one at their own shapes
(:mod:`bench.perf.replay`) give the seconds the path's matrix products and convolutions take alone, and timed ÷
that is the most the path can speed up without computing something else (its element-wise work made free);
the FLOPs over those seconds, ÷ the matmul rate, is the fraction of the matmul rate the path would then reach.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import torch
from torch.utils.flop_counter import FlopCounterMode

from bench.compute.device import Numerics, active_precision, apply_numerics, autocast
from bench.compute.timing import Stopwatch, repeat_seconds
from bench.data.resolved import DatasetPlugins
from bench.errors import BenchError
from bench.perf.comparison import random_images
from bench.perf.replay import OpRecorder, replay_seconds
from bench.perf.train_step import measure_training_step, trained_methods, training_runs
from bench.records.spec import BUDGETS
from bench.registry import did_you_mean
from bench.sam.backbones import Backbone

ENCODER = "encoder"
MATMUL_SIZE = 2048


@dataclass(frozen=True)
class RooflineSettings:
    """What one roofline measures: ``paths`` holds ``ENCODER`` and trained methods' names."""

    backbone: str
    checkpoint: Path | None
    device: str
    dataset: str
    task: str
    data_root: Path
    shots: int
    tiny: bool
    paths: tuple[str, ...]
    budgets: tuple[str, ...] = BUDGETS
    encoder_images: int = 4
    encoder_repeats: int = 3
    encoder_batch: int | None = None  # None: the backbone's own choice
    matmul_size: int = MATMUL_SIZE
    matmul_repeats: int = 5
    precision: str = "auto"  # bench.compute.device's choice: the paths and the ceiling compute in it

    @property
    def methods(self) -> list[str]:
        """The trained methods whose training step is measured."""
        return [path for path in self.paths if path != ENCODER]


@dataclass(frozen=True)
class MatmulRate:
    size: int
    repeats: int
    device: str
    threads: int
    precision: str  # bench.compute.device's: fp32, tf32 or bf16, the paths' own
    gflops: float  # GFLOP per second

    def describe(self) -> str:
        threads = f"{self.threads} torch thread{'s' * (self.threads != 1)}"
        return (f"{self.precision} `torch.mm` of two {self.size}² matrices on {self.device}, {threads}, median of "
                f"{self.repeats} after a warm-up")  # fmt: skip


@dataclass(frozen=True)
class HotPath:
    """FLOPs counted and seconds timed over the same work: ``images`` image-steps (or encoded images)."""

    path: str
    budget: str
    measured: str  # what the timed work was, in words
    images: int
    flops: float
    seconds: float
    bound_seconds: float  # the counted calls alone (bench.perf.replay)

    @property
    def speedup_bound(self) -> str:
        """The most this path can speed up while computing the same products (timed ÷ its products alone), as
        text; "–" for a path that called no counted operator."""
        return f"{self.seconds / self.bound_seconds:.3g}×" if self.bound_seconds > 0 else "–"

    def products_alone_fraction(self, matmul_gflops: float) -> str:
        """The GFLOP/s of this path's matrix products and convolutions run alone, over the matmul rate, as text:
        the fraction of the matmul rate the path would reach were its element-wise work free."""
        return f"{self.flops / self.bound_seconds / 1e9 / matmul_gflops:.4g}" if self.bound_seconds > 0 else "–"

    @property
    def gflop_per_image(self) -> float:
        return self.flops / self.images / 1e9

    @property
    def gflops(self) -> float:
        return self.flops / self.seconds / 1e9

    @property
    def images_per_second(self) -> float:
        return self.images / self.seconds


@dataclass
class Roofline:
    matmul: MatmulRate
    paths: list[HotPath]
    not_measured: list[tuple[str, str, str]] = field(default_factory=list)  # (hot path, budget, why)

    def rows(self) -> list[dict[str, str]]:
        """One row per hot path, every cell text (4 significant digits): the report's table and the command's."""
        rows = [
            {"hot path": path.path, "budget": path.budget, "measured": path.measured,
             "GFLOP / image": f"{path.gflop_per_image:.4g}", "GFLOP/s": f"{path.gflops:.4g}",
             "÷ matmul rate": f"{path.gflops / self.matmul.gflops:.4g}", "images/s": f"{path.images_per_second:.4g}",
             "products alone ÷ matmul rate": path.products_alone_fraction(self.matmul.gflops),
             "speed-up bound": path.speedup_bound}
            for path in self.paths
        ]  # fmt: skip
        blank = dict.fromkeys(("GFLOP / image", "GFLOP/s", "÷ matmul rate", "images/s",
                               "products alone ÷ matmul rate", "speed-up bound"), "–")  # fmt: skip
        rows += [{"hot path": path, "budget": budget, "measured": f"not measured: {why}", **blank}
                 for path, budget, why in self.not_measured]
        return rows  # fmt: skip

    def lines(self) -> list[str]:
        """What ``bench perf roofline`` prints: the matmul rate, then the table."""
        table = pd.DataFrame(self.rows()).to_markdown(index=False, disable_numparse=True)
        return [f"matmul rate: {self.matmul.gflops:.4g} GFLOP/s ({self.matmul.describe()})", "", table]


def hot_paths(names: Sequence[str] | None) -> tuple[str, ...]:
    """``names`` checked (each the encoder or a trained method), in order, once each; None: every hot path."""
    known = [ENCODER, *trained_methods()]
    for name in names or ():
        if name not in known:
            hint = did_you_mean(name, known)
            raise BenchError(f"unknown hot path '{name}' (--only); known: {', '.join(known)}.{hint}")
    return tuple(dict.fromkeys(names or known))


def check_roofline_inputs(settings: RooflineSettings, datasets: DatasetPlugins) -> None:
    """Load the backbone and, when a training step is measured, the dataset (into ``datasets``, which the
    measurement then reads), so that a bad input fails in one line before anything is measured."""
    from bench.sam.backbones import load_backbone

    load_backbone(settings.backbone, settings.checkpoint, settings.device)  # memoised per process
    if settings.methods:
        task = datasets.task(settings.dataset, settings.task)
        if len(task.train) < settings.shots:
            raise BenchError(f"{settings.dataset}/{settings.task} has {len(task.train)} training images; --shots"
                             f" {settings.shots} needs more")  # fmt: skip


def matmul_rate(device: torch.device, size: int = MATMUL_SIZE, repeats: int = 5) -> MatmulRate:
    """GFLOP/s of a ``size``² × ``size``² matrix product on ``device`` in the precision in force (see
    ``bench.compute.device.apply_numerics``: bf16 multiplies bfloat16 matrices, as autocast would), median of
    ``repeats``."""
    precision = active_precision()
    generator = torch.Generator().manual_seed(0)
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    left, right = (torch.randn(size, size, generator=generator).to(device, dtype) for _ in range(2))
    torch.mm(left, right)  # warm-up: thread pools, kernel selection
    seconds = repeat_seconds(lambda: torch.mm(left, right), device, repeats)
    gflops = 2 * size**3 / statistics.median(seconds) / 1e9
    return MatmulRate(size, repeats, str(device), torch.get_num_threads(), precision, gflops)


def encoder_path(
    backbone: Backbone, images: int, repeats: int, batch_size: int | None = None, seed: int = 0
) -> HotPath:
    """The encoder forward on ``images`` random images in batches of ``batch_size`` (default: the backbone's
    ``encode_batch_size``): FLOPs per image counted on one batch of the eager ``image_encoder``; the median
    seconds of ``repeats`` passes of ``Backbone.encode`` over all of them."""
    size = min(batch_size or backbone.encode_batch_size, images)
    pictures = random_images(images, (backbone.input_size, backbone.input_size), seed)
    batches = [
        torch.stack([backbone.preprocess(picture) for picture in pictures[start : start + size]]).to(backbone.device)
        for start in range(0, images, size)
    ]
    recorder = OpRecorder()
    # the recorder outside the counter: inside it, it sees nothing in inference mode
    with torch.inference_mode(), recorder, FlopCounterMode(display=False) as counter:
        backbone.image_encoder(batches[0])
    flops_per_image = counter.get_total_flops() / len(batches[0])
    bound_per_image = replay_seconds(recorder.calls, backbone.device) / len(batches[0])
    backbone.encode(batches[0])  # warm-up
    seconds = []
    for _ in range(repeats):
        with Stopwatch(backbone.device) as clock:
            for batch in batches:
                backbone.encode(batch)
        seconds.append(clock.seconds)
    measured = f"{images} images in batches of {size}, median of {repeats}"
    return HotPath(f"encoder forward ({backbone.name})", "–", measured, images, flops_per_image * images,
                   statistics.median(seconds), bound_per_image * images)  # fmt: skip


def measure_roofline(settings: RooflineSettings, datasets: DatasetPlugins) -> Roofline:
    """The matmul rate, then every hot path of ``settings``, one after another in this process, the training
    steps on the data of ``datasets`` (``settings.dataset`` under ``settings.data_root``). Training runs read and
    write embeddings through the harness's cache: the caller points it where it wants them."""
    from bench.sam.backbones import load_backbone

    device = torch.device(settings.device)
    apply_numerics(Numerics(settings.precision), device)
    roofline = Roofline(matmul_rate(device, settings.matmul_size, settings.matmul_repeats), [])
    if ENCODER in settings.paths:
        backbone = load_backbone(settings.backbone, settings.checkpoint, device)
        with autocast(device):
            encoder = encoder_path(backbone, settings.encoder_images, settings.encoder_repeats, settings.encoder_batch)
        roofline.paths.append(encoder)
    runs = training_runs(settings.methods, settings.budgets, datasets, settings.dataset, settings.task,
                         settings.shots, settings.backbone, settings.checkpoint, settings.tiny)  # fmt: skip
    for method, budget, run in runs:
        with autocast(device):
            one_pass = run if isinstance(run, str) else measure_training_step(run, datasets, device)
        if isinstance(one_pass, str):  # the run could not be planned or measured: the reason
            roofline.not_measured.append((method, budget, one_pass))
            continue
        measured = (f"one pass: {one_pass.images} image{'s' * (one_pass.images != 1)} in {one_pass.steps}"
                    f" optimiser step{'s' * (one_pass.steps != 1)}")  # fmt: skip
        bound = replay_seconds(one_pass.calls, device)
        roofline.paths.append(
            HotPath(method, budget, measured, one_pass.images, one_pass.flops, one_pass.seconds, bound)
        )
    return roofline
