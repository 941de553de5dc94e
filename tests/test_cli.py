from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from bench.cli import app
from bench.data.dataset import Dataset
from bench.errors import BenchError
from bench.registry import DATASETS

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, list(args))


def assert_one_line_error(result, *fragments: str) -> None:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), result.output
    for fragment in fragments:
        assert fragment in result.output, result.output


def test_ls_lists_builtins() -> None:
    result = invoke("ls")
    assert result.exit_code == 0
    assert "methods:" in result.output and "unet" in result.output and "synthetic" in result.output
    assert_one_line_error(invoke("ls", "model"), "bench ls takes methods, datasets or backbones")


def test_unknown_method_suggests_the_closest(tmp_path) -> None:
    assert_one_line_error(invoke("run", "--methods", "unett", "--results", str(tmp_path)), "Did you mean 'unet'?")
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize(
    ("flags", "fragment"),
    [
        (["--shots", "0"], "--shots takes positive integers or 'all'"),
        (["--seeds", "-1"], "--seeds takes integers from 0 to 4294967295, not -1"),
        (["--datasets", "synthetc"], "Did you mean 'synthetic'?"),
        (["--tasks", "nope"], "unknown task 'nope'"),
        (["--budget", "huge"], "--budget takes auto, paper or quick"),
        (["--set", "epocs=3"], "no selected method has the hyper-parameter epocs"),
        (["--labels", "boxes"], "--labels takes mask, box, box-noisy"),
    ],
)
def test_bad_input_is_one_line_and_touches_nothing(tmp_path, flags, fragment) -> None:
    result = invoke("run", "--methods", "unet", "--results", str(tmp_path / "r"), *flags)
    assert_one_line_error(result, fragment)
    assert not (tmp_path / "r").exists()


def test_unwritable_results_folder(tmp_path, fake_methods) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    result = invoke("run", "--methods", "fake-threshold", "--shots", "2", "--results", str(blocker / "results"))
    assert_one_line_error(result, "is not writable")


class NeedsFolder(Dataset):
    name = "needs-folder"
    display_name = "Needs folder"
    tasks = ("organ",)

    def load(self, task: str):
        if not self.folder.is_dir():
            raise BenchError(f"{self.name}: no folder at {self.folder}; expected <data-root>/{self.name}/images")
        raise AssertionError("not reached in this test")


def test_missing_data_root_is_one_line_and_writes_no_record(tmp_path, fake_methods) -> None:
    DATASETS.register("needs-folder", NeedsFolder)
    try:
        result = invoke("run", "--methods", "fake-threshold", "--datasets", "needs-folder", "--data-root",
                        str(tmp_path / "nowhere"), "--results", str(tmp_path / "r"))  # fmt: skip
    finally:
        DATASETS.unregister("needs-folder")
    assert_one_line_error(result, "needs-folder: no folder at")
    assert not list((tmp_path / "r").rglob("*.json"))


def test_run_resume_and_table(tmp_path, fake_methods) -> None:
    args = ["run", "--methods", "fake-threshold,fake-boxfill", "--shots", "3", "--results", str(tmp_path)]
    first = invoke(*args)
    assert first.exit_code == 0, first.output
    assert "2 runs planned" not in first.output and "4 runs planned, 0 already done, 4 to run" in first.output
    records = sorted((tmp_path / "default" / "runs").glob("*.json"))
    assert len(records) == 4
    stamps = [p.stat().st_mtime_ns for p in records]
    reordered = ["run", "--shots", "3", "--results", str(tmp_path), "--methods", "fake-boxfill,fake-threshold"]
    second = invoke(*reordered)
    assert "Nothing left to run." in second.output
    assert [p.stat().st_mtime_ns for p in records] == stamps

    table = invoke("table", "--results", str(tmp_path), "--format", "md")
    assert table.exit_code == 0, table.output
    dice = [json.loads(p.read_text()) for p in records]
    boxfill = next(r for r in dice if r["spec"]["method"] == "fake-boxfill" and r["spec"]["task"] == "blob")
    expected = 100 * sum(c["dice"] for c in boxfill["cases"]) / len(boxfill["cases"])
    assert f"{expected:.2f}" in table.output


def test_a_record_of_an_older_default_recipe_is_run_again(tmp_path, fake_methods) -> None:
    args = ["run", "--methods", "fake-threshold", "--tasks", "blob", "--shots", "2", "--results", str(tmp_path)]
    assert invoke(*args).exit_code == 0
    path = next((tmp_path / "default" / "runs").glob("*.json"))
    record = json.loads(path.read_text())
    record["hparams"] |= {"sleep": 0.5, "retired_knob": 3}  # made when the default was sleep=0.5
    path.write_text(json.dumps(record))

    plan = invoke(*args, "--dry-run")
    assert "older" in plan.output and "re-run" in plan.output  # the plan table wraps the state cell
    again = invoke(*args)
    assert again.exit_code == 0, again.output
    assert "0 already done, 1 to run" in again.output
    assert "run again 1: recorded with an older default recipe (e.g. sleep 0.5 → 0.0)" in again.output
    assert json.loads(path.read_text())["hparams"]["sleep"] == 0.0
    assert "Nothing left to run." in invoke(*args).output  # a key the method no longer has is not compared


def test_failed_runs_end_with_exit_1_and_the_grid_goes_on(tmp_path, fake_methods) -> None:
    result = invoke("run", "--methods", "fake-exploding,fake-threshold", "--tasks", "blob", "--shots", "2",
                    "--results", str(tmp_path))  # fmt: skip
    assert result.exit_code == 1
    assert "1 ok, 1 failed" in result.output and "out of memory (simulated)" in result.output
    statuses = sorted(json.loads(p.read_text())["status"] for p in (tmp_path / "default" / "runs").glob("*.json"))
    assert statuses == ["failed", "ok"]
    retry = invoke("run", "--methods", "fake-exploding,fake-threshold", "--tasks", "blob", "--shots", "2",
                   "--results", str(tmp_path))  # fmt: skip
    assert "1 already done, 1 to run" in retry.output, "failed runs are retried, finished ones are not"


def test_dry_run_prints_the_plan_with_skips(tmp_path, fake_methods) -> None:
    result = invoke("run", "--methods", "fake-threshold,fake-boxfill", "--labels", "mask,box", "--tasks", "blob",
                    "--dry-run", "--results", str(tmp_path))  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "to run" in result.output and "skip:" in result.output
    assert not any(tmp_path.iterdir())
