"""`bench perf`: the whole suite in one process, section after section, and everything its report needs.

The grids run as ``bench run`` runs them (inline executor) in a temporary results folder against a temporary
embedding cache, so the user's results and cache are neither read nor written.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import platform
import resource
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from bench.compute.timing import Stopwatch
from bench.data.resolved import DatasetPlugins
from bench.errors import BenchError
from bench.paths import environment_variable
from bench.perf.comparison import Comparison
from bench.perf.encode import encode_benchmark
from bench.perf.roofline import ENCODER, MATMUL_SIZE, Roofline, RooflineSettings, measure_roofline
from bench.perf.train_step import trained_methods
from bench.records.spec import BUDGETS

if TYPE_CHECKING:
    from bench.perf.loss import LossBenchmark
    from bench.records.spec import PlannedRun, RunSpec


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
    "roofline",
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
    matmul_size: int = MATMUL_SIZE
    matmul_repeats: int = 5
    roofline_budgets: tuple[str, ...] = BUDGETS
    roofline_shots: int | None = None  # support images of the measured training steps; None: ``shots``


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
    roofline: Roofline
    section_seconds: dict[str, float]


def default_dataset(data_root: Path) -> tuple[str, str]:
    """HC18's fetal heads when the data root holds the release, else the embedded synthetic ellipses."""
    from bench.registry import DATASETS

    return ("hc18", "head") if DATASETS.get("hc18")(data_root).folder.is_dir() else ("synthetic", "ellipse")


def machine_description(device: torch.device) -> dict[str, str]:
    """What the numbers were measured on: CPU, GPU, threads, library versions."""
    from bench.run.runner import device_name

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


def _planned(
    settings: SuiteSettings, datasets: DatasetPlugins, methods: Sequence[str], cheap: bool = False
) -> list[PlannedRun]:
    """One run per method on the suite's data: the quick budget, ``epochs`` set where the method has it, seed 0,
    support draw 0, each method's own label regime. In tiny mode, and for ``cheap`` runs (section 5's, which only
    measure memory), the method's own ``tiny`` overrides too."""
    from bench.registry import METHODS
    from bench.run.grid import GridRequest, expand_grid

    planned = []
    for name in methods:
        method_cls = METHODS.get(name)
        overrides = dict(method_cls.tiny) if settings.tiny or cheap else {}
        if "epochs" in {field.name for field in dataclasses.fields(method_cls.HParams)}:
            overrides["epochs"] = settings.epochs
        request = GridRequest(
            methods=[name], datasets=[settings.dataset], tasks=[settings.task], shots=[settings.shots], labels=None,
            seeds=None, draws=None, budget=BUDGET, backbone=settings.backbone,
            checkpoint=str(settings.checkpoint.resolve()) if settings.checkpoint else None,
            overrides=tuple(sorted(overrides.items())),
        )  # fmt: skip
        planned += expand_grid(request, datasets)
    return planned


def _runnable(settings: SuiteSettings, datasets: DatasetPlugins, methods: Sequence[str]) -> list[RunSpec]:
    """The runs of ``methods``; a method that declines the suite's data stops the suite with its reason."""
    specs = []
    for item in _planned(settings, datasets, methods):
        if item.skip_reason is not None:
            raise BenchError(
                f"{item.spec.method} cannot run on {settings.dataset}/{settings.task}: {item.skip_reason}; "
                "choose another --dataset"
            )
        specs.append(item.spec)
    return specs


def _run_grid(
    specs: Sequence[RunSpec], results: Path, settings: SuiteSettings, datasets: DatasetPlugins,
    progress_factory: Callable | None,
) -> tuple[float, list[dict]]:  # fmt: skip
    """Wall seconds of running ``specs`` as `bench run` does (inline executor) and their records, in order. The
    runs read the suite's ``datasets``, loaded before any clock starts."""
    from bench.records.store import existing_record
    from bench.run.executors import execute
    from bench.run.settings import GridSettings

    grid = GridSettings(results, EXPERIMENT, datasets, settings.device)
    with Stopwatch(settings.device) as clock:
        summaries = execute(specs, grid, progress_factory=progress_factory)
    for summary in summaries:
        if summary["status"] != "ok":  # a failed run has no numbers worth reporting
            raise BenchError(f"perf run {summary['run_id']} failed: {summary['error']}")
    return clock.seconds, [existing_record(results, EXPERIMENT, spec.run_id) for spec in specs]


def suite_datasets(settings: SuiteSettings) -> DatasetPlugins:
    """The suite's dataset, resolved once: every section reads it through these plugins."""
    return DatasetPlugins.resolve([settings.dataset], settings.data_root)


def check_inputs(settings: SuiteSettings, datasets: DatasetPlugins) -> None:
    """Load the dataset (into ``datasets``) and the backbone and plan every run, so that a bad input fails in one
    line before anything is measured (both stay loaded for the suite: the backbone is memoised per process)."""
    from bench.sam.backbones import load_backbone

    task = datasets.task(settings.dataset, settings.task)
    if len(task.train) < settings.shots:
        raise BenchError(
            f"{settings.dataset}/{settings.task} has {len(task.train)} training images; --shots {settings.shots} "
            "needs more"
        )
    load_backbone(settings.backbone, settings.checkpoint, settings.device)
    _runnable(settings, datasets, (*GRID_METHODS, *FIT_METHODS))


@contextmanager
def scratch_cache() -> Iterator[Path]:
    """A temporary folder whose ``cache/`` is the harness's cache for the block (``bench.paths.cache_dir`` reads
    $BENCH_CACHE at each use): the user's cache is neither read nor filled."""
    with tempfile.TemporaryDirectory(prefix="bench-perf-") as scratch, environment_variable(
        CACHE_VARIABLE, str(Path(scratch) / "cache")
    ):
        yield Path(scratch)


def roofline_settings(settings: SuiteSettings) -> RooflineSettings:
    """The suite's roofline: the encoder and every trained method, on the suite's data."""
    return RooflineSettings(
        backbone=settings.backbone, checkpoint=settings.checkpoint, device=settings.device, dataset=settings.dataset,
        task=settings.task, data_root=settings.data_root, shots=settings.roofline_shots or settings.shots,
        tiny=settings.tiny, paths=(ENCODER, *trained_methods()), budgets=settings.roofline_budgets,
        encoder_images=settings.encode_images, encoder_repeats=settings.encode_repeats,
        matmul_size=settings.matmul_size, matmul_repeats=settings.matmul_repeats,
    )  # fmt: skip


def run_suite(
    settings: SuiteSettings,
    datasets: DatasetPlugins,
    progress_factory: Callable[[RunSpec], Callable] | None = None,
    on_section: Callable[[int, str], None] | None = None,
) -> SuiteResult:
    """Run every section of ``bench perf`` in this process, one after another, and collect their figures.

    The grids run in a temporary results folder against a temporary embedding cache (the user's cache is never
    read or written); the dataset (``datasets``: ``suite_datasets``) and the backbone are loaded before any
    clock starts.
    """
    from bench.perf.loss import tightness_benchmark
    from bench.registry import METHODS
    from bench.sam.backbones import load_backbone

    check_inputs(settings, datasets)
    started = dt.datetime.now().astimezone()
    device = torch.device(settings.device)
    task = datasets.task(settings.dataset, settings.task)
    backbone = load_backbone(settings.backbone, settings.checkpoint, device)
    grid = _runnable(settings, datasets, GRID_METHODS)
    fits = _runnable(settings, datasets, FIT_METHODS)
    extra = [name for name in METHODS.names() if name not in {*GRID_METHODS, *FIT_METHODS}]
    extra_planned = _planned(settings, datasets, extra, cheap=True)
    seconds: dict[str, float] = {}

    def section(number: int) -> Stopwatch:
        if on_section is not None:
            on_section(number, SECTIONS[number - 1])
        return Stopwatch(device)

    with scratch_cache() as root:
        shape = task.test[0].image.shape[:2]
        with section(1) as clock:
            encode = encode_benchmark(backbone, settings.encode_images, shape, repeats=settings.encode_repeats)
        seconds[SECTIONS[0]] = clock.seconds
        with section(2) as clock:
            cold_seconds, cold_records = _run_grid(grid, root / "cold", settings, datasets, progress_factory)
            warm_seconds, warm_records = _run_grid(grid, root / "warm", settings, datasets, progress_factory)
        seconds[SECTIONS[1]] = clock.seconds
        with section(3) as clock:  # the cache is warm now: fit times hold training alone, no encoding
            _, fit_records = _run_grid(fits, root / "fit", settings, datasets, progress_factory)
        seconds[SECTIONS[2]] = clock.seconds
        with section(4) as clock:
            loss = tightness_benchmark(
                settings.loss_size, settings.loss_batch, repeats=settings.loss_repeats, device=settings.device
            )
        seconds[SECTIONS[3]] = clock.seconds
        with section(5) as clock:
            runnable = [item.spec for item in extra_planned if item.skip_reason is None]
            _, extra_records = _run_grid(runnable, root / "extra", settings, datasets, progress_factory)
        seconds[SECTIONS[4]] = clock.seconds
        with section(6) as clock:  # the support images' embeddings are cached: training steps read them
            roofline = measure_roofline(roofline_settings(settings), datasets)
        seconds[SECTIONS[5]] = clock.seconds
    return SuiteResult(
        settings=settings, started=started, machine=machine_description(device), encode=encode, encode_shape=shape,
        cold_seconds=cold_seconds, warm_seconds=warm_seconds, cold_records=cold_records, warm_records=warm_records,
        fit_records=fit_records, loss=loss, extra_records=extra_records, roofline=roofline,
        skipped={item.spec.method: item.skip_reason for item in extra_planned if item.skip_reason is not None},
        section_seconds=seconds,
    )  # fmt: skip
