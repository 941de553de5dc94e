"""`bench perf gpu-check`: one run of every method on a GPU, to see in minutes that a grid will be right and fast.

Each method gets one run (its first label regime, the first task, draw 0, seed 0, ``paper`` budget by default)
through the harness's own runner, inline in this process, after the runs' images are encoded (so no fit time
holds encoding), into a results folder of its own: the records are what a grid would write. Each row says the
fit seconds and seconds per epoch, the CUDA start-up paid before the stopwatch, the run's own peak memory, the
mean Dice and the status; a failed run is a row with its error, and the check goes on.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from bench.compute.device import Numerics, resolve_device
from bench.data.resolved import DatasetPlugins
from bench.errors import BenchError
from bench.records.spec import RunSpec
from bench.registry import METHODS
from bench.run.grid import GridRequest, expand_grid
from bench.run.runner import encode_grid, run_one
from bench.run.settings import GridSettings


@dataclass(frozen=True)
class GpuCheckSettings:
    methods: tuple[str, ...]
    dataset: str
    task: str | None
    data_root: Path | None
    budget: str
    shots: int
    backbone: str
    checkpoint: Path | None
    device: str
    numerics: Numerics
    overrides: tuple[tuple[str, object], ...]


def check_device(name: str) -> str:
    """The device to check on; a machine without CUDA ends here in one line, unless ``cpu`` is asked for."""
    device = resolve_device(name)  # cuda on a machine without CUDA: one line, exit 2
    if device.type != "cuda" and name != "cpu":
        raise BenchError("bench perf gpu-check needs a CUDA GPU, and this machine has none (--device cpu runs the "
                         "same check on the CPU)")  # fmt: skip
    return str(device)


def planned_runs(settings: GpuCheckSettings, datasets: DatasetPlugins) -> list[RunSpec]:
    """One runnable spec per method (its first label regime and the dataset's first task): the rest are skipped."""
    request = GridRequest(
        methods=list(settings.methods), datasets=[settings.dataset],
        tasks=[settings.task] if settings.task else None, shots=[settings.shots], labels=None, seeds=[0], draws=1,
        budget=settings.budget, backbone=settings.backbone,
        checkpoint=str(settings.checkpoint.resolve()) if settings.checkpoint else None, overrides=settings.overrides,
    )  # fmt: skip
    planned = expand_grid(request, datasets)
    chosen: dict[str, RunSpec] = {}
    for item in planned:
        if item.skip_reason is None:
            chosen.setdefault(item.spec.method, item.spec)
    missing = [name for name in settings.methods if name not in chosen]
    if missing:
        raise BenchError(f"no runnable run of {', '.join(missing)} on {settings.dataset} (every one is skipped)")
    return list(chosen.values())


def row(record: dict) -> dict[str, str]:
    """What the check prints of one record."""
    epochs = (record.get("hparams") or {}).get("epochs")
    fit = record.get("fit_seconds")
    ok = record["status"] == "ok"
    return {
        "method": record["spec"]["method"],
        "labels": record["spec"]["labels"],
        "precision": record.get("precision", "–"),
        "fit s": f"{fit:.2f}" if ok else "–",
        "fit s/epoch": f"{fit / epochs:.3f}" if ok and isinstance(epochs, int) and epochs > 0 else "–",
        "warm-up s": f"{record.get('warmup_seconds', 0.0):.2f}" if ok else "–",
        "peak MB": f"{record['peak_memory_mb']:.0f} ({record['peak_memory_kind']})"
        if ok and record.get("peak_memory_mb") is not None else "–",
        "Dice": f"{record['mean_dice']:.3f}" if ok else "–",
        "status": "ok" if ok else f"failed: {record.get('error')}",
    }


def run_gpu_check(settings: GpuCheckSettings, results: Path, progress_factory=None) -> list[dict]:
    """Every planned run, one after another in this process; their records (see the module's docstring)."""
    datasets = DatasetPlugins.resolve([settings.dataset], settings.data_root)
    runs = planned_runs(settings, datasets)
    grid = GridSettings(results, "gpu-check", datasets, settings.device, settings.numerics)
    encode_grid(runs, grid)
    records = []
    for spec in runs:
        progress = progress_factory(spec) if progress_factory else None
        extra = {"progress": progress} if progress is not None else {}
        records.append(run_one(spec, grid, **extra))
    return records


def all_methods() -> tuple[str, ...]:
    return tuple(METHODS.names())
