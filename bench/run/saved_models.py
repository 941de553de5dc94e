"""Saved models: what a run trained, kept beside its record (`bench run --save-models`) and read back by
`bench predict` and `bench evaluate`.

``results/<experiment>/models/<run_id>.pt`` holds the method's trained state (``Method.state_dict``: the
prompt module's head, never the frozen backbone), its hyper-parameters, its spec, and the backbone by name
and checkpoint digest. It is written to a temporary file and renamed, with the umask's permissions; the run
record names the file and its sha256 (``saved_model``). It is read with ``torch.load(weights_only=True)``, so
it holds tensors and plain values only. Training-free methods save nothing: they predict as they are. A
grid's runs save their models when its settings say so (``GridSettings.save_models``, from ``--save-models``).
"""

from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from bench.errors import BenchError
from bench.method import Method
from bench.paths import atomic_write
from bench.records.descriptions import METHOD_INFO
from bench.records.spec import RunSpec
from bench.records.store import experiment_folder
from bench.sam.checkpoints import file_digest

MODEL_FORMAT = 1
SAVED_MODEL = "saved_model"  # the record's key: {"file": "models/<run_id>.pt", "sha256": ...}


def models_folder(results: Path, experiment: str) -> Path:
    return experiment_folder(results, experiment) / "models"


def model_path(results: Path, experiment: str, run_id: str) -> Path:
    return models_folder(results, experiment) / f"{run_id}.pt"


def lacks_saved_model(record: dict | None) -> bool:
    """Whether a finished run of a trained method has no saved model (`bench run --save-models` runs it again)."""
    if not record or record.get("status") != "ok" or (record.get(METHOD_INFO) or {}).get("training_free"):
        return False
    return SAVED_MODEL not in record


def backbone_identity(backbone: Any | None) -> dict | None:
    """How a model file names the backbone it was trained with: name and checkpoint digest."""
    if backbone is None:
        return None
    return {"name": backbone.name, "checkpoint_digest": backbone.checkpoint_digest}


def save_model(path: Path, method: Method, spec: RunSpec, backbone: Any | None) -> dict:
    """Write ``method``'s trained state to ``path`` atomically; returns the record's ``saved_model`` entry."""
    payload = {
        "format": MODEL_FORMAT,
        "spec": spec.canonical(),
        "hparams": dataclasses.asdict(method.hparams),
        "backbone": backbone_identity(backbone),
        "state": method.state_dict(),
    }
    with atomic_write(path) as stream:
        torch.save(payload, stream)
    return {"file": f"{path.parent.name}/{path.name}", "sha256": file_digest(path)}


@dataclass
class SavedModel:
    """A run's model as read back: the spec and hyper-parameters it ran with, and its trained state."""

    spec: RunSpec
    hparams: Any
    state: dict[str, torch.Tensor]
    backbone: dict | None


def read_saved_model(record: dict, results: Path) -> SavedModel:
    """The saved model of the run ``record`` (found under ``results``), checked against the record's digest.

    A training-free run needs no file: its model is its hyper-parameters. Every problem (no saved model,
    a missing, truncated or foreign file) is one BenchError line that says what to do.
    """
    from bench.registry import METHODS

    spec = RunSpec.from_dict(record["spec"])
    method_cls = METHODS.get(spec.method)
    run_id = record["run_id"]
    if method_cls.training_free:
        return SavedModel(spec, hparams_from(method_cls, None, spec), {}, None)
    entry = record.get(SAVED_MODEL)
    if not isinstance(entry, dict) or not isinstance(entry.get("file"), str):
        raise BenchError(
            f"run {run_id} has no saved model: run it again with --save-models added to the `bench run` "
            "command that made it (the run id stays the same)"
        )
    path = experiment_folder(results, record["experiment"]) / entry["file"]
    if not path.is_file():
        raise BenchError(f"the model file of run {run_id}, '{path}', is missing; re-run it with --save-models")
    if file_digest(path) != entry.get("sha256"):
        raise BenchError(
            f"model file '{path}' is damaged or was replaced (its sha256 differs from the one in run {run_id}'s "
            "record); re-run it with --save-models"
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # a file damaged after its digest was taken, or not ours: one line either way
        raise BenchError(f"'{path}' is not a readable model file ({type(error).__name__})") from error
    if not isinstance(payload, dict) or payload.get("format") != MODEL_FORMAT or not isinstance(
        payload.get("state"), dict
    ):
        raise BenchError(f"'{path}' is not a medsam-bench model file of format {MODEL_FORMAT}")
    hparams = hparams_from(method_cls, payload.get("hparams") or {}, spec)
    return SavedModel(spec, hparams, payload["state"], payload.get("backbone"))


def hparams_from(method_cls: type[Method], saved: object, spec: RunSpec) -> Any:
    """The hyper-parameters a model file was saved with; a training-free run's: its budget and overrides."""
    if saved is None:
        return method_cls.resolve_hparams(spec.budget, spec.overrides)
    try:
        return method_cls.HParams(**saved)  # type: ignore[arg-type]
    except TypeError:
        raise BenchError(
            f"run {spec.run_id} was saved with hyper-parameters this version of {spec.method} does not have"
        ) from None


def check_backbone(model: SavedModel, backbone: Any | None, run_id: str) -> None:
    """Refuse, in one line, a model trained with another backbone or checkpoint than ``backbone``."""
    if model.backbone is None or backbone is None:
        return
    if model.backbone.get("name") != backbone.name:
        raise BenchError(
            f"run {run_id} was trained with backbone {model.backbone.get('name')}, not {backbone.name}"
        )
    if model.backbone.get("checkpoint_digest") != backbone.checkpoint_digest:
        raise BenchError(
            f"run {run_id} was trained with another {backbone.name} checkpoint (sha256 "
            f"{str(model.backbone.get('checkpoint_digest'))[:12]}…, this one {backbone.checkpoint_digest[:12]}…);"
            " pass the one it was trained with as --checkpoint"
        )


def build_method(model: SavedModel, device: torch.device) -> Method:
    """A fresh instance of the run's method with its trained state on ``device``."""
    from bench.registry import METHODS

    method = METHODS.get(model.spec.method)(model.hparams)
    if model.state:
        method.load_state_dict(dict(model.state), device)
    return method
