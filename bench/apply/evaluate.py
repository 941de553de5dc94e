"""`bench evaluate`: a run's saved model scored on other labelled images, into a record of its own.

The labelled images are a registered dataset's split (preprocessed and scored exactly as `bench run` scores
its test split) or a folder of images with a folder of masks (predicted as `bench predict` does, scored on
each input's own grid). The record (``eval_of``: the run, ``evaluated_on``: the data) sits in the run's
experiment beside the run's record, so `bench table` shows it as a row of its own, "trained on …", in the
column of the dataset it was scored on.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np

from bench.apply.predict import PREDICT_CHUNK, Framed, LoadedRun, frame_inputs, predict_masks
from bench.data import samples as data
from bench.data.dataset import Dataset
from bench.data.framing import SUFFIXES, read_source, stem
from bench.errors import BenchError
from bench.metrics import case_metrics, truth_geometry
from bench.progress import no_progress
from bench.records.descriptions import DATASET_INFO, METHOD_INFO, describe_dataset
from bench.records.store import RECORD_VERSION, record_split, write_record
from bench.run.grid import check_eval_split

# copied from the training run's record: what the evaluated model is
_FROM_RUN = (METHOD_INFO, "hparams", "params_total", "params_trainable", "support_ids")


def score_split(
    run: LoadedRun, dataset: str, split: str, task: str | None, plugin: Dataset,
    track: Callable[..., Iterator] = no_progress,
) -> tuple[list[dict], dict]:  # fmt: skip
    """Per-case metrics of the run on ``dataset``'s ``split`` (the run's task unless ``task``), read through its
    ``plugin``, and the ``dataset_info`` of the record."""
    check_eval_split(split)
    task_name = task or run.spec.task
    loaded = plugin.task(task_name)
    samples = getattr(loaded, split)
    if not samples:
        raise BenchError(f"{dataset}/{task_name} has no {split} images")
    items = data.eval_items(samples, dataset, task_name, run.spec.labels, with_prompt=run.prompted)
    cases = []
    for start in track(range(0, len(items), PREDICT_CHUNK), description="predicting"):
        chunk = samples[start : start + PREDICT_CHUNK]
        for sample, p in zip(chunk, run.method.predict(items[start : start + PREDICT_CHUNK], run.ctx), strict=True):
            probabilities = np.asarray(p, dtype=np.float32)
            cases.append(case_metrics(sample.id, probabilities, sample.mask, sample.spacing).as_dict()
                         | truth_geometry(sample.mask))  # fmt: skip
    info = describe_dataset(type(plugin), dataset, task_name, samples) | {
        key: loaded.info[key] for key in data.RECORDED_TASK_INFO if key in loaded.info
    }
    return cases, info


def truth_file(folder: Path, source_path: Path) -> Path:
    """The ground truth of an input in ``folder``: the same file name, else the same name in any format."""
    same = folder / source_path.name
    if same.is_file():
        return same
    for suffix in SUFFIXES:
        candidate = folder / f"{stem(source_path)}{suffix}"
        if candidate.is_file():
            return candidate
    raise BenchError(f"no ground truth for '{source_path.name}' in '{folder}' (same name, any image format)")


def read_truths(inputs: Sequence[Framed], folder: Path, label: int | None) -> list[np.ndarray]:
    """Each input's ground truth as a boolean mask of its shape: pixels of value ``label``, or nonzero."""
    if not folder.is_dir():
        raise BenchError(f"ground-truth folder '{folder}' does not exist")
    truths = []
    for framed in inputs:
        path = truth_file(folder, framed.source.path)
        values = read_source(path).array
        if values.shape != framed.source.array.shape:
            raise BenchError(f"ground truth '{path}' has shape {values.shape}, its image {framed.source.array.shape}")
        truths.append(values == label if label is not None else values != 0)
    return truths


def score_folder(
    run: LoadedRun, files: Sequence[Path], truth_folder: Path, label: int | None = None,
    boxes: dict | None = None, track: Callable[..., Iterator] = no_progress,
) -> tuple[list[dict], dict]:  # fmt: skip
    """Per-case metrics of the run's masks on each input's own grid against ``truth_folder``'s masks: one
    case per 2-D image, and per slice of a volume where the ground truth holds the structure."""
    inputs = frame_inputs(run, files)
    truths = read_truths(inputs, truth_folder, label)
    truth_of = {id(framed): truth for framed, truth in zip(inputs, truths, strict=True)}
    cases = []
    for framed, mask, _ in predict_masks(run, inputs, boxes, track):
        truth = truth_of[id(framed)]
        spacing = framed.source.spacing
        pairs = [(framed.source.path.name, mask, truth)] if not framed.source.is_volume else [
            (f"{framed.source.path.name}:{z}", mask[z], truth[z]) for z in range(len(truth)) if truth[z].any()
        ]  # fmt: skip
        for case_id, predicted, expected in pairs:
            cases.append(case_metrics(case_id, predicted.astype(np.float32), expected, spacing).as_dict()
                         | truth_geometry(expected))  # fmt: skip
    if not cases:
        raise BenchError(f"no ground truth in '{truth_folder}' holds the structure: nothing to score")
    spaced = all(framed.source.spacing is not None for framed in inputs)
    info = {"display_name": truth_folder.name, "task_display": run.record.get(DATASET_INFO, {}).get("task_display",
            run.spec.task), "tasks": [run.spec.task], "spacing_unit": "mm" if spaced else "px"}  # fmt: skip
    return cases, info


def evaluation_id(run_id: str, dataset: str, task: str, split: str, inputs: Sequence[Path] = ()) -> str:
    """The id of an evaluation record: the run's id and what it was scored on (folder inputs by digest)."""
    name = f"{run_id}_on_{dataset.replace(':', '-')}-{task}" + ("" if split == "test" else f"_{split}")
    if inputs:
        listing = "\n".join(str(path.resolve()) for path in sorted(inputs))
        name += "_" + hashlib.sha256(listing.encode()).hexdigest()[:8]
    return name


def write_evaluation(
    run: LoadedRun, results: Path, cases: list[dict], dataset: str, task: str, split: str, dataset_info: dict,
    evaluated_on: dict, seconds: float, device: str, inputs: Sequence[Path] = (),
) -> tuple[Path, dict]:  # fmt: skip
    """Write the evaluation's record beside the run's (atomically); returns its path and the record."""
    from bench.run.runner import git_revision, library_versions

    source = run.record
    experiment = source["experiment"]
    spec = dict(source["spec"]) | {"dataset": dataset, "task": task, "eval_split": split}
    now = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    record = {key: source[key] for key in _FROM_RUN if key in source} | {
        "record_version": RECORD_VERSION,
        "run_id": evaluation_id(source["run_id"], dataset, task, split, inputs),
        "experiment": experiment,
        "spec": spec,
        "status": "ok",
        "error": None,
        "eval_of": source["run_id"],
        "evaluated_on": evaluated_on,
        "trained_on": {"dataset": source["spec"]["dataset"], "task": source["spec"]["task"],
                       "split": record_split(source), "display": _trained_on_text(source)},  # fmt: skip
        DATASET_INFO: dataset_info,
        "cases": cases,
        "mean_dice": float(np.mean([case["dice"] for case in cases])),
        "fit_seconds": None,
        "infer_seconds_per_image": seconds / max(len(cases), 1),
        "device": device,
        "started": now,
        "finished": now,
        "versions": library_versions(),
        "git_rev": git_revision(),
    }
    return write_record(results, experiment, record), record


def _trained_on_text(record: dict) -> str:
    described = record.get(DATASET_INFO) or {}
    dataset = described.get("display_name") or record["spec"]["dataset"]
    return f"{dataset} {described.get('task_display') or record['spec']['task']}"
