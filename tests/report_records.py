"""Hand-written run records for the report tests, with the keys and layout bench/run/runner.py writes.

Records describe their method from the attribute-only classes here, as the runner describes a plugin.
Written with ``described=False`` they are records of version 1, from before records described themselves:
the report then asks the registry, where the ``report_methods`` fixture registers these classes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bench.data.samples import write_json_atomic
from bench.method import Method
from bench.records.descriptions import DATASET_INFO, METHOD_INFO, declared, describe_dataset, describe_method
from bench.records.predictions import save_predictions
from bench.records.spec import RunSpec
from bench.records.store import prediction_path, record_path
from bench.registry import DATASETS
from bench.run.runner import RECORD_VERSION


def _method(
    name: str, display: str, group: str, labels: str = "mask", training_free: bool = False, prompted: bool = False
) -> type:
    attributes = {"name": name, "display_name": display, "group": group, "training_free": training_free,
                  "prompted": prompted, "default_labels": (labels,)}  # fmt: skip
    # a Method subclass, as the registry takes only those; never instantiated (fit and predict stay abstract)
    return type(display.replace(" ", ""), (Method,), attributes)


TEST_METHODS = {
    "rep-medsam": _method("rep-medsam", "MedSAM", "Promptable", "box", training_free=True, prompted=True),
    "rep-unet": _method("rep-unet", "UNet", "Automatic — fully trained"),
    "rep-autosam": _method("rep-autosam", "AutoSAM", "Automatic — adapted"),
    # a display name with LaTeX's special characters, to see them escaped; trained on boxes by default
    "rep-ours": _method("rep-ours", "Prompt_module & 100%", "Ours", "box"),
}


def write_record(
    results: Path,
    method: str,
    dice: dict[str, float],
    *,
    dataset: str = "synthetic",
    task: str = "ellipse",
    labels: str = "mask",
    shots: int | None = 10,
    draw: int = 0,
    seed: int = 0,
    budget: str = "quick",
    backbone: str | None = None,
    experiment: str = "exp",
    fit_seconds: float = 10.0,
    epochs: int | None = 20,
    params_trainable: int = 250_000,
    overrides: dict | None = None,
    status: str = "ok",
    error: str | None = None,
    method_info: dict | None = None,
    described: bool = True,
    spacing_unit: str = "px",
    finished: str = "2024-06-01T10:01:00+00:00",
) -> dict:
    """Write one record like ``runner.run_one`` does; ``dice`` maps test-case ids to their Dice.

    ``method_info`` is the record's description of its method (default: from ``TEST_METHODS``, none for
    other names); ``described=False`` writes a version-1 record, without descriptions. ``overrides`` are the
    run's ``--set`` values, part of its spec and run id.
    """
    spec = RunSpec(method, dataset, task, labels, shots, draw, seed, budget, backbone,
                   overrides=tuple(sorted((overrides or {}).items())))
    ok = status == "ok"
    cases = [
        {"id": case, "dice": value, "hd95": round(40.0 * (1 - value), 3), "tp": 100, "fp": 5, "fn": 5}
        for case, value in dice.items()
    ]
    record = {
        "record_version": RECORD_VERSION if described else 1,
        "run_id": spec.run_id,
        "experiment": experiment,
        "spec": spec.canonical(),
        "status": status,
        "error": error,
        "cases": cases if ok else [],
        "started": "2024-06-01T10:00:00+00:00",
        "finished": finished,
        "versions": {"python": "3.11.7"},
        "git_rev": None,
        "device": "cpu (x86_64, 2 threads)",
    }
    if described:
        if method_info is None and method in TEST_METHODS:
            method_info = describe_method(TEST_METHODS[method], method)
        if method_info is not None:
            record[METHOD_INFO] = method_info
        if ok:  # the runner takes the unit from the test split's spacings: synthetic has none
            record[DATASET_INFO] = {**describe_dataset(declared(DATASETS, dataset), dataset, task),
                                    "spacing_unit": spacing_unit}  # fmt: skip
    if ok:
        record.update(
            mean_dice=float(np.mean(list(dice.values()))),
            support_ids=[f"syn{i:03d}" for i in range(shots or 3)],
            hparams={"epochs": epochs} if epochs is not None else {},
            fit_seconds=fit_seconds,
            infer_seconds_per_image=0.02,
            peak_memory_mb=512.0,
            params_total=1_000_000,
            params_trainable=params_trainable,
        )
    else:
        record["traceback"] = f"Traceback (most recent call last):\n{error}"
    write_json_atomic(record_path(results, experiment, spec.run_id), record)
    return record


def write_predictions(
    results: Path, record: dict, masks: dict[str, np.ndarray], experiment: str = "exp"
) -> Path:
    """The run's predictions file, written by the runner's own writer."""
    path = prediction_path(results, experiment, record["run_id"])
    ids = list(masks)
    save_predictions(path, ids, [masks[case].astype(np.float32) for case in ids])
    return path
