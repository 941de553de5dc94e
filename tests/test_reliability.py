"""Reliability: methods in any order in one process, typed --set values, and bad inputs of every kind.

Each bad input must end in one clear line with the right exit code (2 for the user's mistakes, 1 for
failed runs), no traceback, no partial file and no lost record.
"""

from __future__ import annotations

import errno
import itertools
import json
import os
import pickle
import random
import signal
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from bench import cli, load_task
from bench.cli import app
from bench.errors import BenchError
from bench.method import Method
from bench.paths import atomic_write, remove_stale_temporaries
from bench.records import store
from bench.registry import METHODS
from bench.sam import backbones
from tests.release_fixtures import write_camus_patient, write_hc18_release
from tests.test_cli import assert_one_line_error
from tests.test_method_contract import run_method, shrink
from tests.test_runner import PLUGIN

runner = CliRunner()
MAIN = [sys.executable, "-c", "from bench.cli import main; main()"]


def sam_methods() -> list[str]:
    return [name for name in METHODS.names() if METHODS.get(name).uses_backbone]


@pytest.fixture(scope="module")
def tiny_images():
    task = load_task("synthetic", "ellipse")
    return [shrink(s, (64, 64)) for s in task.train[:2]], [shrink(task.test[0], (48, 80))]


@pytest.mark.parametrize(("first", "second"), list(itertools.permutations(sam_methods(), 2)))
def test_sam_methods_run_in_any_order_in_one_process(tiny_images, first: str, second: str) -> None:
    # the backbone is built by whichever method needs it first: inside inference mode when that is a predict
    backbones._load.cache_clear()
    train, test = tiny_images
    for name in (first, second, first):
        cls = METHODS.get(name)
        _, outputs, _ = run_method(cls, cls.default_labels[0], train, test, seed=0)
        assert outputs[0].shape == test[0].image.shape


# --- --set values take the declared types ----------------------------------------------------------------


@dataclass(frozen=True)
class TypedParams:
    epochs: int = 1
    lr: float = 1e-3
    augment: bool = True
    encoder: str = "resnet18"
    input_size: int | None = None
    milestones: tuple[int, ...] = (50,)


class Typed(Method):
    name = "typed"
    display_name = "Typed"
    group = "Automatic — fully trained"
    labels = default_labels = ("mask",)
    HParams = TypedParams
    budgets = {"paper": TypedParams(), "quick": TypedParams()}

    def fit(self, train, ctx) -> None:  # pragma: no cover - never run
        raise AssertionError

    def predict(self, items, ctx):  # pragma: no cover - never run
        raise AssertionError


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("epochs", 3, 3), ("epochs", 3.0, 3), ("lr", 1, 1.0), ("lr", 0.5, 0.5),
        ("augment", False, False), ("augment", "no", False), ("augment", "on", True),
        ("encoder", "resnet34", "resnet34"), ("encoder", 34, "34"),
        ("input_size", None, None), ("input_size", "none", None), ("input_size", 128, 128),
        ("milestones", [10, 20], (10, 20)), ("milestones", "10,20", (10, 20)), ("milestones", 7, (7,)),
    ],
)  # fmt: skip
def test_set_values_are_converted_to_the_declared_type(key: str, value: object, expected: object) -> None:
    hparams = Typed.resolve_hparams("quick", [(key, value)])
    assert getattr(hparams, key) == expected and type(getattr(hparams, key)) is type(expected)


@pytest.mark.parametrize(
    ("key", "value", "fragment"),
    [
        ("epochs", "abc", "typed's hyper-parameter epochs takes an int"),
        ("epochs", 2.5, "takes an int"),
        ("epochs", True, "takes an int"),
        ("lr", "fast", "typed's hyper-parameter lr takes a float"),
        ("lr", float("nan"), "takes a float"),
        ("augment", "maybe", "takes a bool"),
        ("input_size", "big", "takes an int or None"),
        ("milestones", "1,x", "takes a comma-separated tuple of int"),
        ("encoder", [1], "takes a str"),
        ("epocs", 3, "typed has no hyper-parameter epocs"),
    ],
)
def test_set_values_that_do_not_fit_fail_in_one_line(key: str, value: object, fragment: str) -> None:
    with pytest.raises(BenchError, match=fragment):
        Typed.resolve_hparams("quick", [(key, value)])


def test_a_set_value_of_the_wrong_type_runs_nothing(tmp_path) -> None:
    result = runner.invoke(app, ["run", "--methods", "unet", "--set", "epochs=abc", "--results", str(tmp_path / "r")])
    assert_one_line_error(result, "--set epochs=abc: unet's hyper-parameter epochs takes an int")
    assert not (tmp_path / "r").exists()


def test_equal_set_values_of_different_spelling_are_one_run(tmp_path) -> None:
    from tests.conftest import expand

    def run_id(value: object) -> str:
        planned = expand(["unet"], ["synthetic"], ["blob"], [2], None, None, None, "quick", "litemedsam",
                         overrides=(("epochs", value),))  # fmt: skip
        return planned[0].spec.run_id

    assert run_id(3) == run_id(3.0)


# --- checkpoints ------------------------------------------------------------------------------------------


def test_a_pickle_that_is_no_checkpoint_prints_our_line_only(tmp_path) -> None:
    not_a_checkpoint = tmp_path / "model.pth"
    not_a_checkpoint.write_bytes(pickle.dumps({"weights": {1, 2}}, protocol=4))  # torch warns on protocol 4
    completed = subprocess.run([*MAIN, "run", "--methods", "medsam-box", "--backbone", "sam-vit-b",
                                "--checkpoint", str(not_a_checkpoint), "--results", str(tmp_path / "r")],
                               capture_output=True, text=True, timeout=300)  # fmt: skip
    assert completed.returncode == 2
    lines = [line for line in (completed.stdout + completed.stderr).splitlines() if line.strip()]
    assert len(lines) == 1 and "is not a PyTorch checkpoint" in lines[0], lines
    assert not (tmp_path / "r").exists()


# --- the command line, fuzzed ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("flags", "fragment"),
    [
        (["--methods", ","], "--methods was given an empty value"),
        (["--datasets", ""], "--datasets was given an empty value"),
        (["--tasks", ""], "--tasks was given an empty value"),
        (["--labels", " "], "--labels was given an empty value"),
        (["--shots", ""], "--shots was given an empty value"),
        (["--shots", "1.5"], "--shots takes positive integers"),
        (["--seeds", "99999999999999999999"], "--seeds takes integers from 0 to 4294967295"),
        (["--seeds", "1,,x"], "--seeds takes integers ≥ 0 separated by commas, not 'x'"),
        (["--draws", "0"], "--draws must be at least 1"),
        (["--jobs", "0"], "--jobs takes an integer ≥ 1, not 0"),
        (["--executor", "threads"], "--executor takes inline, pool, submitit, slurm"),
        (["--device", "gpu0"], "--device takes auto, cpu or cuda[:N], not 'gpu0'"),
        (["--device", "meta"], "--device takes auto, cpu or cuda[:N], not 'meta'"),
        (["--experiment", "../outside"], "--experiment takes one folder name"),
        (["--experiment", "/tmp/abs"], "--experiment takes one folder name"),
        (["--experiment", "a/b"], "--experiment takes one folder name"),
        (["--experiment", ".."], "--experiment takes one folder name"),
        (["--methods", "un\udcffet"], "unknown method"),
        (["--plugin", "/no/such/plugin.py"], "plugin file '/no/such/plugin.py' does not exist"),
        (["--set", "=3"], "--set takes key=value, not '=3'"),
    ],
)
def test_bad_run_options_are_one_line_and_write_nothing(tmp_path, fake_methods, flags, fragment) -> None:
    base = {"--methods": "fake-threshold", "--shots": "2", "--tasks": "blob"}
    args = ["run", *flags, "--results", str(tmp_path / "r")]
    for flag, value in base.items():
        if flag not in flags:
            args += [flag, value]
    assert_one_line_error(runner.invoke(app, args), fragment)
    assert not (tmp_path / "r").exists() and not (tmp_path / "outside").exists()


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["run", "--draws", "abc"], "bench run: Invalid value for '--draws'"),
        (["run", "--jobs", "1e3"], "bench run: Invalid value for '--jobs'"),
        (["figure", "--task", "blob", "--images", "0"], "bench figure: Invalid value for '--images'"),
        (["run", "--no-such-flag"], "bench run: No such option: --no-such-flag"),
        (["tabel"], "No such command 'tabel'"),
    ],
)
def test_malformed_options_are_one_line_through_the_entry_point(monkeypatch, capsys, args, fragment) -> None:
    monkeypatch.setattr(sys, "argv", ["bench", *args])
    monkeypatch.setattr(warnings, "formatwarning", warnings.formatwarning)  # main() sets its own
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    assert exit_info.value.code == 2
    captured = capsys.readouterr()
    lines = [line for line in (captured.out + captured.err).splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and fragment in lines[0], lines


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["table", "--experiment", "../x"], "--experiment takes one folder name"),
        (["table", "--format", "docx"], "docx"),
        (["table", "--metric", "iou"], "iou"),
        (["report", "--experiment", "/etc"], "--experiment takes one folder name"),
        (["figure", "--task", "nope"], "nope"),
    ],
)
def test_bad_report_options_are_one_line(tmp_path, fake_methods, args, fragment) -> None:
    made = runner.invoke(app, ["run", "--methods", "fake-threshold", "--shots", "2", "--tasks", "blob",
                               "--results", str(tmp_path)])  # fmt: skip
    assert made.exit_code == 0, made.output
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    assert_one_line_error(runner.invoke(app, [*args, "--results", str(tmp_path)]), fragment)
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before


# --- results folders with bad records --------------------------------------------------------------------


def broken_records(good: dict) -> dict[str, str]:
    text = json.dumps(good)
    edited = {
        "no-spec": {k: v for k, v in good.items() if k != "spec"},
        "text-seed": {**good, "spec": {**good["spec"], "seed": "zero"}},
        "cases-not-a-list": {**good, "cases": "many"},
        "dice-as-text": {**good, "cases": [{**good["cases"][0], "dice": "high"}]},
        "odd-status": {**good, "status": "paused"},
        "fit-as-text": {**good, "fit_seconds": "slow"},
        "newer-format": {**good, "record_version": store.RECORD_VERSION + 1},
        "a-list": [good],
    }
    files = {name: json.dumps(record) for name, record in edited.items()}
    files |= {"truncated": text[: len(text) // 2], "empty": ""}
    return files


@pytest.mark.filterwarnings("ignore:skipping")
def test_bad_records_are_skipped_by_name_and_the_rest_still_renders(tmp_path, fake_methods) -> None:
    made = runner.invoke(app, ["run", "--methods", "fake-threshold", "--shots", "2", "--tasks", "blob",
                               "--seeds", "0,1", "--results", str(tmp_path)])  # fmt: skip
    assert made.exit_code == 0, made.output
    runs = store.runs_folder(tmp_path, "default")
    good = [json.loads(p.read_text()) for p in sorted(runs.glob("*.json"))]
    (runs / "extra.json").write_bytes(b"\xff\xfe not utf-8")
    for name, text in broken_records(good[0]).items():
        (runs / f"{name}.json").write_text(text)
    with pytest.warns(UserWarning) as caught:
        records = store.load_records(tmp_path)
    assert sorted(r["run_id"] for r in records) == sorted(r["run_id"] for r in good)
    skipped = {Path(str(w.message).split(": ")[0].split()[-1]).stem for w in caught}
    assert skipped == {*broken_records(good[0]), "extra"}
    newer = next(str(w.message) for w in caught if "newer-format" in str(w.message))
    assert f"record_version {store.RECORD_VERSION + 1} is newer" in newer

    expected = 100 * sum(sum(c["dice"] for c in r["cases"]) / len(r["cases"]) for r in good) / 2
    for args in (["table"], ["table", "--format", "csv"], ["report", "--out", str(tmp_path / "report")]):
        result = runner.invoke(app, [*args, "--results", str(tmp_path)])
        assert result.exit_code == 0 and "Traceback" not in result.output, result.output
    table = runner.invoke(app, ["table", "--results", str(tmp_path)])
    assert f"{expected:.2f}" in table.output
    # resuming re-runs nothing: the finished runs' own records are intact
    again = runner.invoke(app, ["run", "--methods", "fake-threshold", "--shots", "2", "--tasks", "blob",
                                "--seeds", "0,1", "--results", str(tmp_path)])  # fmt: skip
    assert "Nothing left to run." in again.output


def test_a_full_disk_stops_the_grid_in_one_line_and_keeps_finished_records(tmp_path, fake_methods, monkeypatch):
    args = ["run", "--methods", "fake-threshold", "--shots", "2", "--tasks", "blob", "--seeds", "0,1,2",
            "--results", str(tmp_path)]  # fmt: skip
    writes = {"count": 0}
    real_dump = json.dump

    def dump_until_full(payload, stream, **kwargs):  # the disk fills up after the first record
        if isinstance(payload, dict) and "run_id" in payload:
            writes["count"] += 1
            if writes["count"] > 1:
                stream.write(json.dumps(payload)[:100])
                raise OSError(errno.ENOSPC, "No space left on device")
        real_dump(payload, stream, **kwargs)

    monkeypatch.setattr(json, "dump", dump_until_full)
    result = runner.invoke(app, args)
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "No space left on device" in errors[0] and "re-run the command to resume" in errors[0]
    runs = store.runs_folder(tmp_path, "default")
    kept = list(runs.glob("*.json"))
    assert len(kept) == 1 and json.loads(kept[0].read_text())["status"] == "ok"
    assert not list(runs.glob(".*.tmp")), "no half-written record is left"

    monkeypatch.setattr(json, "dump", real_dump)
    resumed = runner.invoke(app, args)
    assert resumed.exit_code == 0 and "1 already done, 2 to run" in resumed.output, resumed.output


# --- killed grids ----------------------------------------------------------------------------------------


def test_stale_temporaries_of_dead_processes_are_removed_and_live_ones_kept(tmp_path) -> None:
    with pytest.raises(KeyboardInterrupt), atomic_write(tmp_path / "live.json", "w") as stream:
        stream.write("{")
        assert remove_stale_temporaries(tmp_path) == 0, "this process is alive: its file stays"
        raise KeyboardInterrupt
    child = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                           text=True, check=True)  # fmt: skip
    from bench.paths import _host

    orphan = tmp_path / f".r.json.{_host()}-{child.stdout.strip()}.abc123.tmp"
    other_host = tmp_path / f".r.json.elsewhere-{child.stdout.strip()}.abc123.tmp"
    orphan.write_text("{")
    other_host.write_text("{")
    assert remove_stale_temporaries(tmp_path) == 1
    assert not orphan.exists() and other_host.exists()


def test_grid_killed_at_20_random_moments_ends_complete_and_clean(tmp_path) -> None:
    plugin = tmp_path / "fakes_plugin.py"
    plugin.write_text(PLUGIN)
    results = tmp_path / "results"
    command = [*MAIN, "run", "--plugin", str(plugin), "--methods", "fake-threshold", "--tasks", "blob",
               "--shots", "2", "--seeds", ",".join(map(str, range(10))), "--set", "sleep=0.15",
               "--budget", "quick", "--results", str(results), "--experiment", "kill"]  # fmt: skip
    runs = results / "kill" / "runs"
    # seconds after the start: from inside the start-up to the end of the grid, so kills land everywhere
    moments = random.Random(20).sample([round(0.5 + 0.2 * i, 2) for i in range(21)], 20)
    for moment in moments:
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                   start_new_session=True)  # fmt: skip
        time.sleep(moment)
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        ids = []
        for path in runs.glob("*.json") if runs.exists() else []:
            record = json.loads(path.read_text())  # every record on disk is whole
            assert record["run_id"] == path.stem and record["status"] in ("ok", "failed")
            ids.append(record["run_id"])
        assert len(ids) == len(set(ids))
    completed = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr
    records = [json.loads(path.read_text()) for path in runs.glob("*.json")]
    assert len(records) == 10 and {r["status"] for r in records} == {"ok"}
    assert {r["spec"]["seed"] for r in records} == set(range(10))
    assert not [p.name for p in runs.iterdir() if p.suffix != ".json"], "no temporary file is left in runs/"


# --- data folders with broken files ---------------------------------------------------------------------


def camus_images(number: int) -> tuple[np.ndarray, np.ndarray]:
    image = np.random.default_rng(number).integers(0, 255, (200, 160)).astype(np.uint8)
    labels = np.zeros((200, 160), np.uint8)
    labels[50:100, 40:100], labels[100:150, 40:100], labels[150:180, 40:100] = 1, 2, 3
    return image, labels


@pytest.mark.filterwarnings("ignore:camus")
def test_broken_release_files_are_skipped_by_name_and_the_rest_loads(tmp_path) -> None:
    images = write_hc18_release(tmp_path, count=10) / "training_set"
    png = (images / "001_HC.png").read_bytes()
    (images / "001_HC.png").write_bytes(png[: len(png) // 2])  # truncated
    outline = cv2.imread(str(images / "002_HC_Annotation.png"), cv2.IMREAD_GRAYSCALE)
    cv2.imwrite(str(images / "002_HC_Annotation.png"), cv2.resize(outline, (80, 60)))  # wrong size
    (images / "004_HC.png").unlink()
    (images / "004_HC.png").mkdir()  # unreadable (mode 000 cannot be tested as root, who reads anything)
    (images / "007_HC_Annotation.png").write_bytes(b"")  # zero bytes
    with pytest.warns(UserWarning) as caught:
        task = load_task("hc18", "head", tmp_path)
    messages = [str(w.message) for w in caught]
    for name, reason in [("001_HC.png", "not a readable image"), ("002_HC_Annotation.png", "differs from the image"),
                         ("004_HC.png", "not a readable image"), ("007_HC_Annotation.png", "not a readable image")]:
        assert any(name in m and reason in m and "\n" not in m for m in messages), (name, messages)
    assert len(task.train) + len(task.val) + len(task.test) == 6

    for number in range(1, 11):
        image, labels = camus_images(number)
        if number == 2:
            labels = labels[:100]
        if number == 3:
            labels[0, 0] = 7
        write_camus_patient(tmp_path, number, image, labels, (0.3, 0.3))
    (tmp_path / "camus/database_nifti/patient0004/patient0004_2CH_ED.nii.gz").write_bytes(b"")
    with pytest.warns(UserWarning) as caught:
        task = load_task("camus", "lv", tmp_path)
    messages = [str(w.message) for w in caught]
    for name, reason in [("patient0002_2CH_ED_gt.nii.gz", "differs from the image's"),
                         ("patient0003_2CH_ED_gt.nii.gz", "label values 7"), ("patient0004", "unreadable")]:
        assert any(name in m and reason in m and "\n" not in m for m in messages), (name, messages)
    usable = {f"patient{number:04d}" for number in (1, *range(5, 11))}
    assert {s.subject for s in task.train + task.val + task.test} == usable
    result = runner.invoke(app, ["data", "check", "camus", "--data-root", str(tmp_path)])
    assert result.exit_code == 0 and "Traceback" not in result.output, result.output
    assert "2 unreadable" in result.output and "1 unexpected label values" in result.output
