"""Speed and memory benchmarks: ``bench perf encode`` and ``bench perf decode`` (the SAM-backbone paths), and
``bench perf`` itself, the whole suite written to one Markdown report (``run_suite``, ``render_report``).

Each comparison times the harness's own code path against the plainest alternative in the same process; the
micro-benchmarks alternate the two ``repeats`` times and keep the median, so a busy machine slows both alike.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import platform
import resource
import statistics
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import torch

from bench.backbones import Backbone
from bench.embedding_cache import EMBEDDING_SHAPE, cached_embeddings
from bench.errors import BenchError
from bench.paths import environment_variable
from bench.timing import Stopwatch

if TYPE_CHECKING:
    from bench.perf_loss import LossBenchmark
    from bench.spec import PlannedRun, RunSpec


def _median_rates(
    harness: Callable[[], object], reference: Callable[[], object], images: int, repeats: int, device: torch.device
) -> tuple[float, float]:
    """Images per second of each path: the two alternate ``repeats`` times and the median run counts."""
    harness_seconds, reference_seconds = [], []
    for _ in range(repeats):
        for run, seconds in ((harness, harness_seconds), (reference, reference_seconds)):
            with Stopwatch(device) as clock:
                run()
            seconds.append(clock.seconds)
    return images / statistics.median(harness_seconds), images / statistics.median(reference_seconds)


def _images(count: int, shape: tuple[int, int], seed: int) -> list[np.ndarray]:
    # the encoders' cost does not depend on content; distinct random images make every one a cache miss
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, shape, dtype=np.uint8) for _ in range(count)]


@dataclass(frozen=True)
class Comparison:
    """Images per second of the harness path and of the reference path, measured on the same images."""

    what: str
    harness: str
    reference: str
    backbone: str
    device: str
    images: int
    batch_size: int
    harness_per_second: float
    reference_per_second: float

    @property
    def ratio(self) -> float:
        return self.harness_per_second / self.reference_per_second

    def lines(self) -> list[str]:
        return [
            f"{self.what}: {self.backbone} on {self.device}, {self.images} images, "
            f"batches of {self.batch_size}",
            f"  {self.harness:<44} {self.harness_per_second:8.2f} images/s",
            f"  {self.reference:<44} {self.reference_per_second:8.2f} images/s",
            f"  ratio harness / reference: {self.ratio:.3f}",
        ]


def encode_benchmark(
    backbone: Backbone,
    images: int = 16,
    shape: tuple[int, int] = (640, 640),
    batch_size: int | None = None,
    repeats: int = 3,
    seed: int = 0,
) -> Comparison:
    """The harness's encoding path (digest, preprocess, encode, store float16 to an empty cache) against a
    bare ``image_encoder`` forward over the same, already preprocessed batches already on the device."""
    size = batch_size or backbone.encode_batch_size
    pictures = _images(images, shape, seed)
    chunks = [pictures[start : start + size] for start in range(0, images, size)]
    batches = [torch.stack([backbone.preprocess(i) for i in chunk]).to(backbone.device) for chunk in chunks]

    @torch.inference_mode()
    def bare() -> None:
        for batch in batches:
            backbone.image_encoder(batch)

    def harness() -> None:
        with tempfile.TemporaryDirectory(prefix="bench-perf-") as root:
            cached_embeddings(backbone, pictures, batch_size=size, root=Path(root))

    bare()  # warm-up: first-call allocations and kernel selection are not what is measured
    harness_rate, bare_rate = _median_rates(harness, bare, images, repeats, backbone.device)
    return Comparison(
        what="encode",
        harness="harness path (cached_embeddings, empty cache)",
        reference="bare image_encoder forward",
        backbone=backbone.name,
        device=str(backbone.device),
        images=images,
        batch_size=size,
        harness_per_second=harness_rate,
        reference_per_second=bare_rate,
    )


def decode_benchmark(backbone: Backbone, images: int = 16, repeats: int = 3, seed: int = 0) -> Comparison:
    """One box per image: ``Backbone.decode`` on the whole batch against a loop of one-image decodes."""
    generator = torch.Generator().manual_seed(seed)
    embeddings = torch.randn((images, *EMBEDDING_SHAPE), generator=generator).to(backbone.device)
    corners = torch.rand((images, 2), generator=generator) * backbone.input_size / 2
    boxes = torch.cat([corners, corners + backbone.input_size / 3], dim=1).to(backbone.device)

    @torch.inference_mode()
    def batched() -> None:
        backbone.decode(embeddings, *backbone.embed_boxes(boxes))

    @torch.inference_mode()
    def one_by_one() -> None:
        for index in range(images):
            backbone.decode(embeddings[index : index + 1], *backbone.embed_boxes(boxes[index : index + 1]))

    one_by_one()  # warm-up
    batched_rate, loop_rate = _median_rates(batched, one_by_one, images, repeats, backbone.device)
    return Comparison(
        what="decode",
        harness="batched decode (one prompt per image)",
        reference="loop of one-image decodes",
        backbone=backbone.name,
        device=str(backbone.device),
        images=images,
        batch_size=images,
        harness_per_second=batched_rate,
        reference_per_second=loop_rate,
    )


# --- `bench perf`: the whole suite, one Markdown report ------------------------------------------------

EXPERIMENT = "perf"
GRID_METHODS = ("medsam-box", "prompt-module")
FIT_METHODS = ("prompt-module", "autosam", "transunet", "unet")
REFERENCE_METHOD = "prompt-module"
# every run of the suite trains at the quick budget, `epochs` cut to the suite's value where a method has it
BUDGET = "quick"
CACHE_VARIABLE = "BENCH_CACHE"
PAGE_MIB = resource.getpagesize() / 2**20  # the resident set grows by whole pages
SECTIONS = (
    "encoding throughput",
    "cold grid vs warm embedding cache",
    "fit time per method",
    "tightness-loss memory",
    "peak memory per method",
)


@dataclass(frozen=True)
class SuiteSettings:
    """What one ``bench perf`` measures and on what; ``tiny`` runs every section in seconds (tests)."""

    dataset: str
    task: str
    data_root: Path  # resolved, so that pointing $BENCH_CACHE elsewhere mid-suite cannot move it
    shots: int
    epochs: int
    backbone: str
    checkpoint: Path | None
    device: str
    tiny: bool
    command: str
    encode_images: int = 4
    encode_repeats: int = 3
    loss_size: int = 640
    loss_batch: int = 4
    loss_repeats: int = 5


@dataclass
class SuiteResult:
    """Every figure of the report, straight from the benchmarks and the run records."""

    settings: SuiteSettings
    started: dt.datetime
    machine: dict[str, str]
    encode: Comparison
    encode_shape: tuple[int, int]  # the dataset's image size, which the encoding benchmark's images take
    cold_seconds: float
    warm_seconds: float
    cold_records: list[dict]
    warm_records: list[dict]
    fit_records: list[dict]
    loss: LossBenchmark
    extra_records: list[dict]
    skipped: dict[str, str]  # method → why it cannot run on the suite's data
    section_seconds: dict[str, float]


def default_dataset(data_root: Path) -> tuple[str, str]:
    """HC18's fetal heads when the data root holds the release, else the embedded synthetic ellipses."""
    from bench.registry import DATASETS

    return ("hc18", "head") if DATASETS.get("hc18")(data_root).folder.is_dir() else ("synthetic", "ellipse")


def machine_description(device: torch.device) -> dict[str, str]:
    """What the numbers were measured on: CPU, GPU, threads, library versions."""
    from bench.runner import device_name

    cores = os.cpu_count() or 0
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else cores
    return {
        "CPU": f"{_cpu_model()}, {usable} of {cores} logical cores usable",
        "GPU": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none",
        "device measured": device_name(device),
        "torch threads": f"{torch.get_num_threads()} (OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')})",
        "versions": f"torch {torch.__version__}, Python {platform.python_version()}, {platform.platform()}",
    }


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _planned(settings: SuiteSettings, methods: Sequence[str], cheap: bool = False) -> list[PlannedRun]:
    """One run per method on the suite's data: the quick budget, ``epochs`` set where the method has it, seed 0,
    support draw 0, each method's own label regime. In tiny mode, and for ``cheap`` runs (section 5's, which only
    measure memory), the method's own ``tiny`` overrides too."""
    from bench.registry import METHODS
    from bench.spec import expand_grid

    planned = []
    for name in methods:
        method_cls = METHODS.get(name)
        overrides = dict(method_cls.tiny) if settings.tiny or cheap else {}
        if "epochs" in {field.name for field in dataclasses.fields(method_cls.HParams)}:
            overrides["epochs"] = settings.epochs
        planned += expand_grid(
            methods=[name], datasets=[settings.dataset], tasks=[settings.task], shots=[settings.shots], labels=None,
            seeds=None, draws=None, budget=BUDGET, backbone=settings.backbone,
            checkpoint=str(settings.checkpoint.resolve()) if settings.checkpoint else None,
            overrides=tuple(sorted(overrides.items())),
        )  # fmt: skip
    return planned


def _runnable(settings: SuiteSettings, methods: Sequence[str]) -> list[RunSpec]:
    """The runs of ``methods``; a method that declines the suite's data stops the suite with its reason."""
    specs = []
    for item in _planned(settings, methods):
        if item.skip_reason is not None:
            raise BenchError(
                f"{item.spec.method} cannot run on {settings.dataset}/{settings.task}: {item.skip_reason}; "
                "choose another --dataset"
            )
        specs.append(item.spec)
    return specs


def _run_grid(
    specs: Sequence[RunSpec], results: Path, settings: SuiteSettings, progress_factory: Callable | None
) -> tuple[float, list[dict]]:
    """Wall seconds of running ``specs`` as `bench run` does (inline executor) and their records, in order."""
    from bench.executors import execute
    from bench.store import record_path

    with Stopwatch(settings.device) as clock:
        summaries = execute(
            specs, results, EXPERIMENT, settings.data_root, settings.device, progress_factory=progress_factory
        )
    for summary in summaries:
        if summary["status"] != "ok":  # a failed run has no numbers worth reporting
            raise BenchError(f"perf run {summary['run_id']} failed: {summary['error']}")
    return clock.seconds, [json.loads(record_path(results, EXPERIMENT, spec.run_id).read_text()) for spec in specs]


def check_inputs(settings: SuiteSettings) -> None:
    """Load the dataset and the backbone and plan every run, so that a bad input fails in one line before
    anything is measured (both stay loaded for the suite: they are memoised per process)."""
    from bench import data
    from bench.backbones import load_backbone

    task = data.load_task(settings.dataset, settings.task, settings.data_root)
    if len(task.train) < settings.shots:
        raise BenchError(
            f"{settings.dataset}/{settings.task} has {len(task.train)} training images; --shots {settings.shots} "
            "needs more"
        )
    load_backbone(settings.backbone, settings.checkpoint, settings.device)
    _runnable(settings, (*GRID_METHODS, *FIT_METHODS))


def run_suite(
    settings: SuiteSettings,
    progress_factory: Callable[[RunSpec], Callable] | None = None,
    on_section: Callable[[int, str], None] | None = None,
) -> SuiteResult:
    """Run every section of ``bench perf`` in this process, one after another, and collect their figures.

    The grids run in a temporary results folder against a temporary embedding cache (the user's cache is never
    read or written); the dataset and the backbone are loaded before any clock starts.
    """
    from bench import data
    from bench.backbones import load_backbone
    from bench.perf_loss import tightness_benchmark
    from bench.registry import METHODS

    check_inputs(settings)
    started = dt.datetime.now().astimezone()
    device = torch.device(settings.device)
    task = data.load_task(settings.dataset, settings.task, settings.data_root)
    backbone = load_backbone(settings.backbone, settings.checkpoint, device)
    grid = _runnable(settings, GRID_METHODS)
    fits = _runnable(settings, FIT_METHODS)
    extra = [name for name in METHODS.names() if name not in {*GRID_METHODS, *FIT_METHODS}]
    extra_planned = _planned(settings, extra, cheap=True)
    seconds: dict[str, float] = {}

    def section(number: int) -> Stopwatch:
        if on_section is not None:
            on_section(number, SECTIONS[number - 1])
        return Stopwatch(device)

    with tempfile.TemporaryDirectory(prefix="bench-perf-") as scratch, environment_variable(
        CACHE_VARIABLE, str(Path(scratch) / "cache")
    ):  # the harness's cache (bench.paths.cache_dir reads $BENCH_CACHE at each use) in the scratch folder
        root = Path(scratch)
        shape = task.test[0].image.shape[:2]
        with section(1) as clock:
            encode = encode_benchmark(backbone, settings.encode_images, shape, repeats=settings.encode_repeats)
        seconds[SECTIONS[0]] = clock.seconds
        with section(2) as clock:
            cold_seconds, cold_records = _run_grid(grid, root / "cold", settings, progress_factory)
            warm_seconds, warm_records = _run_grid(grid, root / "warm", settings, progress_factory)
        seconds[SECTIONS[1]] = clock.seconds
        with section(3) as clock:  # the cache is warm now: fit times hold training alone, no encoding
            _, fit_records = _run_grid(fits, root / "fit", settings, progress_factory)
        seconds[SECTIONS[2]] = clock.seconds
        with section(4) as clock:
            loss = tightness_benchmark(
                settings.loss_size, settings.loss_batch, repeats=settings.loss_repeats, device=settings.device
            )
        seconds[SECTIONS[3]] = clock.seconds
        with section(5) as clock:
            runnable = [item.spec for item in extra_planned if item.skip_reason is None]
            _, extra_records = _run_grid(runnable, root / "extra", settings, progress_factory)
        seconds[SECTIONS[4]] = clock.seconds
    return SuiteResult(
        settings=settings, started=started, machine=machine_description(device), encode=encode, encode_shape=shape,
        cold_seconds=cold_seconds, warm_seconds=warm_seconds, cold_records=cold_records, warm_records=warm_records,
        fit_records=fit_records, loss=loss, extra_records=extra_records,
        skipped={item.spec.method: item.skip_reason for item in extra_planned if item.skip_reason is not None},
        section_seconds=seconds,
    )  # fmt: skip


# --- the Markdown report -------------------------------------------------------------------------------


def _table(rows: list[dict]) -> str:
    # every cell preformatted as text, so that tabulate keeps the chosen precision
    return pd.DataFrame(rows).to_markdown(index=False, disable_numparse=True)


def _overrides(record: dict) -> str:
    return ", ".join(f"{key}={value}" for key, value in sorted(record["spec"]["overrides"].items())) or "–"


def _epochs(record: dict) -> int:
    return int(record["hparams"]["epochs"])


def render_report(result: SuiteResult) -> str:
    """``results/perf.md``: the machine, the command, and one section per measurement."""
    from bench.runner import git_revision

    settings = result.settings
    parts = [
        "# Performance",
        "",
        f"Measured {result.started:%Y-%m-%d %H:%M %Z} by `{settings.command}`"
        f" (git {(git_revision() or 'unknown')[:10]}), in {sum(result.section_seconds.values()):.0f} s.",
        "",
        *[f"* {name}: {value}" for name, value in result.machine.items()],
        "",
        f"Data: {settings.dataset}/{settings.task}, {settings.shots} training images (support draw 0, seed 0);"
        f" backbone {settings.backbone}; {BUDGET} budget with epochs={settings.epochs} for every method that has"
        " epochs. Every figure below was measured in this one process, side by side with the one it is compared"
        " with: absolute numbers move with the machine's load, ratios are what to read.",
    ]
    if settings.tiny:
        parts += ["", "**Tiny mode** (a random-weight test backbone, tiny inputs): the numbers exercise the suite and"
                  " mean nothing about the methods."]  # fmt: skip
    parts += _encode_section(result) + _grid_section(result) + _fit_section(result) + _loss_section(result)
    parts += _memory_section(result)
    parts += ["", "## Wall time per section", "",
              _table([{"section": f"{number}. {name}", "seconds": f"{result.section_seconds[name]:.1f}"}
                      for number, name in enumerate(SECTIONS, 1)])]  # fmt: skip
    return "\n".join(parts) + "\n"


def _encode_section(result: SuiteResult) -> list[str]:
    encode = result.encode
    height, width = result.encode_shape
    return [
        "", "## 1. Encoding throughput", "",
        f"{encode.images} random images of the dataset's size ({height}×{width}), batches of "
        f"{min(encode.batch_size, encode.images)}, on {encode.device}; the two paths alternate"
        f" {result.settings.encode_repeats}× and the median counts. The harness path digests, preprocesses,"
        " encodes and stores float16 embeddings into an empty (cold) on-disk cache each time; the bare path is the"
        " image encoder's forward alone on the same batches, already preprocessed and on the device.",
        "",
        _table([{"path": encode.harness, "images/s": f"{encode.harness_per_second:.3f}"},
                {"path": encode.reference, "images/s": f"{encode.reference_per_second:.3f}"}]),
        "",
        f"Harness ÷ bare: **{encode.ratio:.3f}**.",
    ]  # fmt: skip


def _grid_section(result: SuiteResult) -> list[str]:
    def totals(records: list[dict]) -> dict[str, int]:
        return {kind: sum(record["embeddings"][kind] for record in records) for kind in ("encoded", "cached")}

    cold, warm = totals(result.cold_records), totals(result.warm_records)
    runs = ", ".join(f"{record['spec']['method']} ({record['spec']['labels']}; {_overrides(record)})"
                     for record in result.cold_records)  # fmt: skip
    rows = [
        {"grid": "cold: empty embedding cache", "wall s": f"{result.cold_seconds:.1f}",
         "images encoded": str(cold["encoded"]), "embeddings read from cache": str(cold["cached"])},
        {"grid": "warm: the same runs, cache filled by the cold grid", "wall s": f"{result.warm_seconds:.1f}",
         "images encoded": str(warm["encoded"]), "embeddings read from cache": str(warm["cached"])},
    ]  # fmt: skip
    return [
        "", "## 2. Cold grid vs warm embedding cache", "",
        f"The runs {runs} executed as `bench run` does (inline executor), first against an empty embedding cache,"
        " then again into a fresh results folder with the cache the first pass filled. The backbone and the"
        " dataset were loaded before either clock started.",
        "",
        _table(rows),
        "",
        f"Cold ÷ warm: **{result.cold_seconds / result.warm_seconds:.2f}×** the wall time.",
    ]  # fmt: skip


def _fit_section(result: SuiteResult) -> list[str]:
    records = result.fit_records
    reference = next(record for record in records if record["spec"]["method"] == REFERENCE_METHOD)
    reference_per_epoch = reference["fit_seconds"] / _epochs(reference)
    rows = []
    for record in records:
        per_epoch = record["fit_seconds"] / _epochs(record)
        rows.append({
            "method": record["spec"]["method"], "labels": record["spec"]["labels"], "overrides": _overrides(record),
            "epochs": str(_epochs(record)), "fit s": f"{record['fit_seconds']:.2f}", "s/epoch": f"{per_epoch:.3f}",
            "fit ÷ prompt module": f"{record['fit_seconds'] / reference['fit_seconds']:.2f}",
            "s/epoch ÷ prompt module": f"{per_epoch / reference_per_epoch:.2f}",
            "peak memory MiB": _memory(record),
        })  # fmt: skip
    return [
        "", "## 3. Fit time per method", "",
        f"One run each, one after another, on the same {result.settings.shots} training images, with the embedding"
        " cache warm (section 2), so a SAM-based fit holds no encoding. Fit seconds and peak memory are the run"
        " records' own (`fit_seconds`, `peak_memory_mb`).",
        "",
        _table(rows),
    ]  # fmt: skip


def _loss_section(result: SuiteResult) -> list[str]:
    loss = result.loss
    rows = [{"variant": name, "peak MiB": f"{values['peak_mb']:.1f}", "ms per forward + backward":
             f"{values['seconds'] * 1e3:.2f}", "loss": f"{values['loss']:.6g}"}
            for name, values in loss.results.items()]  # fmt: skip
    fast_peak = next(iter(loss.results.values()))["peak_mb"]
    # below one page the resident set cannot tell the row/column sums' memory from nothing: no ratio
    memory = (f"**{loss.ratio('peak_mb'):.1f}×** the memory" if fast_peak > PAGE_MIB
              else "no memory ratio (the row/column sums added less than a page)")  # fmt: skip
    return [
        "", "## 4. Tightness-loss memory: row/column sums vs band masks", "",
        f"Forward + backward of the tightness prior on a batch of {loss.batch} random {loss.size}×{loss.size} maps on"
        f" {loss.device}, centred box {loss.box.width}×{loss.box.height} ({loss.bands} bands), each variant in a"
        f" fresh process (`bench perf loss`); median of {result.settings.loss_repeats} timed steps.",
        "",
        _table(rows),
        "",
        f"Band masks ÷ row/column sums: {memory}, **{loss.ratio('seconds'):.1f}×** the time.",
    ]  # fmt: skip


def _memory(record: dict) -> str:
    return "–" if record.get("peak_memory_mb") is None else f"{record['peak_memory_mb']:.0f}"


def _memory_section(result: SuiteResult) -> list[str]:
    passes = [("2 cold", result.cold_records), ("2 warm", result.warm_records), ("3", result.fit_records),
              ("5", result.extra_records)]  # fmt: skip
    rows = [
        {"method": record["spec"]["method"], "section": section, "labels": record["spec"]["labels"],
         "overrides": _overrides(record), "images encoded": str(record["embeddings"]["encoded"]),
         "peak memory MiB": _memory(record), "measure": record.get("peak_memory_kind") or "–"}
        for section, records in passes for record in records
    ]  # fmt: skip
    rows.sort(key=lambda row: row["method"])
    rows += [{"method": name, "section": "–", "labels": "–", "overrides": "–", "images encoded": "–",
              "peak memory MiB": f"not run: {reason}", "measure": "–"} for name, reason in result.skipped.items()]
    return [
        "", "## 5. Peak memory per run", "",
        "Every run of this suite, by method. Methods no other section runs had one cheap run here: the quick budget"
        " with the method's own `tiny` overrides (e.g. fewer optimisation steps; see the overrides column)."
        " `cpu-rss-increase`:"
        " the rise of the process's resident set over the run's fit and prediction; `cuda-allocator`: the CUDA"
        " allocator's peak. A run that encodes images (cold grid) also holds the encoder's activations.",
        "",
        _table(rows),
    ]  # fmt: skip
