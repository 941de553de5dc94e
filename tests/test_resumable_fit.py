"""Fits that outlive their process: a fit paused at an epoch's end (``--stop-after``) or killed after a save goes on
where it stopped in the next command, and ends where an uninterrupted fit ends."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from bench.cli import app
from bench.compute.timing import Deadline
from bench.method import RunContext
from bench.method.resumable import FitCheckpoint, FitPaused
from bench.records.spec import RunSpec
from bench.records.store import checkpoint_path, load_records
from bench.registry import METHODS
from bench.run.executors import ExecutorOptions, execute
from bench.run.runner import resolve_device, seed_everything
from bench.run.settings import GridSettings
from tests.test_method_contract import TINY_BACKBONE, run_method, tiny_train_and_test

runner = CliRunner()
# the built-in methods that train by epochs: each must pause and resume through RunContext.epochs
EPOCH_METHODS = ("unet", "transunet", "autosam", "prompt-module")


@pytest.fixture(scope="module")
def tiny_task():
    return tiny_train_and_test()


class PassesOnceStarted(Deadline):
    """A deadline that has not passed when the grid looks before starting its first run, and has passed at
    every later look: the first run starts, and its fit pauses at the end of its first epoch."""

    def __init__(self) -> None:
        super().__init__(None)
        self.looks = 0

    def passed(self) -> bool:
        self.looks += 1
        return self.looks > 1


def fit_in_slices(cls, labels: str, train, test, path, seed: int) -> tuple[int, list[np.ndarray], list[dict]]:
    """Fit one epoch and pause (the deadline has passed), then fit again from the saved state in a fresh method,
    as the next command would; the number of slices it took, the resumed method's predictions, its slices."""
    from bench.data.samples import eval_items, train_items

    spec = RunSpec(method=cls.name, dataset="synthetic", task="ellipse", labels=labels, shots=len(train), draw=0,
                   seed=seed, budget="quick", backbone=TINY_BACKBONE if cls.uses_backbone else None)  # fmt: skip
    hparams = cls.resolve_hparams("quick", cls.tiny.items())
    slices = 0
    deadline = Deadline(0)  # passed before the fit starts: it pauses after its first epoch
    while True:
        slices += 1
        checkpoint = FitCheckpoint(path, identity={"run": cls.name}, slice_info={"slice": slices}, deadline=deadline)
        ctx = RunContext(spec=spec, hparams=hparams, device=resolve_device("cpu"), checkpoint=checkpoint)
        seed_everything(seed)  # as every run does; the saved random states must then take over
        method = cls(hparams)
        try:
            method.fit(train_items(train, "synthetic", "ellipse", labels), ctx)
        except FitPaused:
            deadline = Deadline()
            continue
        outputs = method.predict(eval_items(test, "synthetic", "ellipse", labels, with_prompt=cls.prompted), ctx)
        return slices, outputs, checkpoint.slices(1.0)


@pytest.mark.parametrize("name", EPOCH_METHODS)
def test_a_fit_paused_after_an_epoch_resumes_to_the_uninterrupted_result(name: str, tiny_task, tmp_path) -> None:
    cls = METHODS.get(name)
    train, test = tiny_task
    labels = cls.default_labels[0]
    _, uninterrupted = run_method(cls, labels, train, test, seed=3)
    slices, resumed, parts = fit_in_slices(cls, labels, train, test, tmp_path / "fit.pt", seed=3)
    assert slices == 2  # it did pause, once (tiny budgets have 2 epochs)
    assert [part["epochs"] for part in parts] == [[0, 1], [1, 2]]
    assert [part["slice"] for part in parts] == [1, 2]
    for expected, got in zip(uninterrupted, resumed, strict=True):
        np.testing.assert_array_equal(got, expected)


def test_a_saved_fit_made_with_other_settings_is_not_resumed(tiny_task, tmp_path) -> None:
    cls = METHODS.get("unet")
    train, test = tiny_task
    path = tmp_path / "fit.pt"
    with pytest.raises(FitPaused):
        fit_in_slices_once(cls, train, path, identity={"hparams": "one recipe"}, deadline=Deadline(0))
    assert path.exists()
    with pytest.warns(UserWarning, match="made with other settings; training from the start"):
        first = fit_in_slices_once(cls, train, path, identity={"hparams": "another"}, deadline=Deadline())
    assert first == 0


def fit_in_slices_once(cls, train, path, identity: dict, deadline: Deadline) -> int:
    """One slice of a UNet fit; the first epoch it ran."""
    from bench.data.samples import train_items

    spec = RunSpec("unet", "synthetic", "ellipse", "mask", len(train), 0, 0, "quick")
    hparams = cls.resolve_hparams("quick", cls.tiny.items())
    checkpoint = FitCheckpoint(path, identity=identity, slice_info={}, deadline=deadline)
    cls(hparams).fit(train_items(train, "synthetic", "ellipse", "mask"),
                     RunContext(spec=spec, hparams=hparams, device=torch.device("cpu"), checkpoint=checkpoint))
    return checkpoint.slices(0.0)[-1]["epochs"][0]


def test_a_grid_paused_by_its_time_limit_goes_on_in_the_next_command(tmp_path, monkeypatch) -> None:
    args = ["run", "--methods", "prompt-module", "--backbone", TINY_BACKBONE, "--tasks", "ellipse", "--shots", "2",
            "--seeds", "0", "--draws", "1", "--budget", "quick", "--set", "epochs=3", "--set", "lr_drop_epoch=2",
            "--results", str(tmp_path / "sliced")]  # fmt: skip
    with monkeypatch.context() as patched:
        patched.setattr("bench.compute.timing.Deadline", lambda seconds: PassesOnceStarted())
        first = runner.invoke(app, [*args, "--stop-after", "8m"])
    assert first.exit_code == 0, first.output
    assert "paused after epoch 1 of 3, its fit saved" in first.output
    assert "0 ok, 0 failed, 1 paused (--stop-after 8m passed: run again to go on)" in first.output
    assert load_records(tmp_path / "sliced", "default") == []
    planned = runner.invoke(app, [*args, "--dry-run"])
    assert "to resume" in planned.output

    second = runner.invoke(app, args)
    assert second.exit_code == 0, second.output
    [record] = load_records(tmp_path / "sliced", "default")
    assert record["status"] == "ok"
    assert [part["epochs"] for part in record["fit_slices"]] == [[0, 1], [1, 3]]
    assert record["fit_seconds"] == pytest.approx(sum(part["seconds"] for part in record["fit_slices"]))
    assert [entry["epoch"] for entry in record["training_log"] if "epoch" in entry] == [0, 1, 2]
    assert not checkpoint_path(tmp_path / "sliced", "default", record["run_id"]).exists()

    whole = runner.invoke(app, [*args[:-1], str(tmp_path / "whole")])
    assert whole.exit_code == 0, whole.output
    [uninterrupted] = load_records(tmp_path / "whole", "default")
    assert "fit_slices" not in uninterrupted
    assert [case["dice"] for case in record["cases"]] == [case["dice"] for case in uninterrupted["cases"]]
    assert json.dumps(record["training_log"]) == json.dumps(uninterrupted["training_log"])


@pytest.mark.parametrize("executor", ["inline", "pool"])
def test_a_paused_run_writes_no_record_and_reports_its_epoch(tmp_path, executor: str) -> None:
    spec = RunSpec("unet", "synthetic", "ellipse", "mask", 3, 0, 0, "quick", None, None,
                   (("epochs", 2), ("input_size", 64)))  # fmt: skip
    options = ExecutorOptions(executor, 1, deadline=PassesOnceStarted())
    [summary] = execute([spec], GridSettings(tmp_path, "grid", device="cpu"), options)
    assert summary["status"] == "paused" and (summary["epochs_done"], summary["epochs"]) == (1, 2)
    assert not list(tmp_path.rglob("*.json"))
    assert checkpoint_path(tmp_path, "grid", spec.run_id).exists()
