"""The saved-model contract, for every registered method and both examples: fit → save → load into a fresh
instance → the same predictions, under every label regime it declares (tiny images, the tiny backbone)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from bench.data.samples import eval_items
from bench.errors import BenchError
from bench.method import RunContext
from bench.records.descriptions import METHOD_INFO, describe_method
from bench.records.spec import RunSpec
from bench.registry import METHODS, load_plugin_file
from bench.run.runner import resolve_device
from bench.run.saved_models import build_method, model_path, read_saved_model, save_model
from bench.sam.backbones import load_backbone
from tests import test_method_contract as contract
from tests.test_method_contract import tiny_task  # noqa: F401 (the contract tests' fixture, requested by name)

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
EXAMPLE_FILES = {"otsu": EXAMPLES / "otsu_threshold.py", "tiny-cnn": EXAMPLES / "tiny_cnn.py"}
EXAMPLE_LABELS = {"otsu": ("mask",), "tiny-cnn": ("mask",)}


def cases() -> list:
    params = list(contract.cases())
    for name, labels in EXAMPLE_LABELS.items():
        params += [pytest.param(name, regime, id=f"{name}-{regime}") for regime in labels]
    return params


@pytest.fixture
def registered(request: pytest.FixtureRequest) -> None:
    """The example plugin of this case registered for the test, forgotten afterwards."""
    name = request.node.callspec.params["name"]
    if name not in EXAMPLE_FILES:
        yield
        return
    load_plugin_file(EXAMPLE_FILES[name])
    yield
    METHODS.unregister(name)


def spec_of(cls, labels: str, shots: int) -> RunSpec:
    """The spec ``contract.run_method`` runs with (seed 3)."""
    return RunSpec(method=cls.name, dataset="synthetic", task="ellipse", labels=labels, shots=shots, draw=0,
                   seed=3, budget="quick", backbone=contract.TINY_BACKBONE if cls.uses_backbone else None)  # fmt: skip


@pytest.mark.parametrize(("name", "labels"), cases())
def test_saved_model_predicts_as_the_fitted_one(name: str, labels: str, registered, tiny_task, tmp_path) -> None:  # noqa: F811
    cls = METHODS.get(name)
    train, test = tiny_task
    method, fitted, _ = contract.run_method(cls, labels, train, test, seed=3)
    spec = spec_of(cls, labels, len(train))
    device = resolve_device("cpu")
    backbone = load_backbone(spec.backbone, None, device) if cls.uses_backbone else None
    state = method.state_dict()
    assert all(isinstance(tensor, torch.Tensor) for tensor in state.values())
    if cls.training_free:
        assert state == {}  # nothing to keep: it predicts as it is
    else:
        assert state  # a trained method (or PerSAM, its reference feature) has something to keep
    path = model_path(tmp_path, "e", spec.run_id)
    entry = save_model(path, method, spec, backbone)
    record = {"run_id": spec.run_id, "experiment": "e", "spec": spec.canonical(), "saved_model": entry,
              METHOD_INFO: describe_method(cls, name)}  # fmt: skip

    model = read_saved_model(record, tmp_path)
    fresh = build_method(model, device)
    ctx = RunContext(spec=spec, hparams=model.hparams, device=device)
    reloaded = fresh.predict(eval_items(test, "synthetic", "ellipse", labels, with_prompt=cls.prompted), ctx)
    for before, after in zip(fitted, reloaded, strict=True):
        np.testing.assert_allclose(after, before, rtol=0, atol=1e-6)


def test_a_state_that_does_not_fit_is_refused_in_one_line(tiny_task) -> None:  # noqa: F811
    cls = METHODS.get("unet")
    method = cls(cls.resolve_hparams("quick", cls.tiny.items()))
    state = method.state_dict()
    with pytest.raises(BenchError, match="holds 'decoder.weight'"):
        method.load_state_dict(state | {"decoder.weight": torch.zeros(1)}, torch.device("cpu"))
    key = next(iter(state))
    with pytest.raises(BenchError, match="does not fit unet's network"):
        method.load_state_dict(state | {key: torch.zeros(1)}, torch.device("cpu"))
    with pytest.raises(BenchError, match="holds nothing for unet's network"):
        method.load_state_dict({}, torch.device("cpu"))
