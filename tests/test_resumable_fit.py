"""Fits that outlive their process: a fit paused at an epoch's end (``--stop-after``) or killed after a save goes on
where it stopped in the next command, and ends where an uninterrupted fit ends. Each built-in method's pause and
resume is part of its contract (``tests/test_method_contract.py``)."""

from __future__ import annotations

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
from bench.run.settings import GridSettings
from tests.test_method_contract import tiny_train_and_test

runner = CliRunner()


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
    args = ["run", "--methods", "unet", "--tasks", "blob", "--shots", "2", "--seeds", "0", "--draws", "1",
            "--budget", "quick", "--set", "epochs=3", "--set", "input_size=32", "--results", str(tmp_path / "sliced")]
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
    assert not checkpoint_path(tmp_path / "sliced", "default", record["run_id"]).exists()

    whole = runner.invoke(app, [*args[:-1], str(tmp_path / "whole")])
    assert whole.exit_code == 0, whole.output
    [uninterrupted] = load_records(tmp_path / "whole", "default")
    assert "fit_slices" not in uninterrupted
    assert [case["dice"] for case in record["cases"]] == [case["dice"] for case in uninterrupted["cases"]]


def test_a_paused_run_writes_no_record_and_reports_its_epoch(tmp_path) -> None:
    spec = RunSpec("unet", "synthetic", "ellipse", "mask", 3, 0, 0, "quick", None, None,
                   (("epochs", 2), ("input_size", 32)))  # fmt: skip
    options = ExecutorOptions("inline", 1, deadline=PassesOnceStarted())
    [summary] = execute([spec], GridSettings(tmp_path, "grid", device="cpu"), options)
    assert summary["status"] == "paused" and (summary["epochs_done"], summary["epochs"]) == (1, 2)
    assert not list(tmp_path.rglob("*.json"))
    assert checkpoint_path(tmp_path, "grid", spec.run_id).exists()
