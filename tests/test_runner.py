from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from bench.data import samples as data
from bench.data.dataset import load_task
from bench.records.spec import RunSpec
from bench.records.store import load_records, record_path, runs_frame
from bench.run.executors import ExecutorOptions, execute
from bench.run.runner import run_one
from bench.run.settings import GridSettings

REPO = Path(__file__).resolve().parents[1]
RECORD_KEYS = {"run_id", "spec", "status", "error", "cases", "fit_seconds", "infer_seconds_per_image",
               "peak_memory_mb", "params_total", "params_trainable", "device", "versions", "git_rev",
               "method_info", "dataset_info"}  # fmt: skip


def spec_for(method: str, labels: str = "mask", **changes) -> RunSpec:
    values = dict(method=method, dataset="synthetic", task="blob", labels=labels, shots=5, draw=0, seed=0,
                  budget="quick")  # fmt: skip
    values.update(changes)
    return RunSpec(**values)


def test_record_has_the_documented_keys_and_real_metrics(tmp_path, fake_methods) -> None:
    record = run_one(spec_for("fake-boxfill", "box", shots=None), GridSettings(tmp_path, "exp"))
    assert record["status"] == "ok", record.get("traceback")
    assert RECORD_KEYS <= set(record)
    assert record["cpu"]["capability"] == torch.backends.cpu.get_cpu_capability() and record["cpu"]["model"]
    on_disk = json.loads(record_path(tmp_path, "exp", record["run_id"]).read_text())
    assert on_disk["run_id"] == record["run_id"] and on_disk["spec"]["method"] == "fake-boxfill"
    assert len(on_disk["cases"]) == 40
    task = load_task("synthetic", "blob")
    first = on_disk["cases"][0]
    truth = task.test[0].mask
    box_area = task.test[0].box.area
    # the box covers the whole structure, so fn = 0 and the false positives are the box's background
    assert (first["id"], first["tp"], first["fn"]) == (task.test[0].id, int(truth.sum()), 0)
    assert first["fp"] == box_area - truth.sum()
    geometry = {"truth_area", "truth_box_area", "truth_centre"}
    assert 0 < first["dice"] < 1 and set(first) == {"id", "dice", "hd95", "tp", "fp", "fn"} | geometry
    # the structure's size and place, as fractions of the image (Dice against size in the diagnosis)
    tight = data.tight_box(truth)
    assert first["truth_area"] == pytest.approx(truth.sum() / truth.size)
    assert first["truth_box_area"] == pytest.approx(tight.area / truth.size)
    centre_row = (tight.y0 + tight.y1) / 2 / (truth.shape[0] - 1)
    assert first["truth_centre"][0] == pytest.approx(centre_row, abs=1e-4)
    # the record describes its method and dataset, so reports need neither plugin
    assert on_disk["method_info"] == {"display_name": "Box fill", "group": "Promptable", "training_free": True,
                                      "prompted": True, "labels": ["box", "box-noisy"], "uses_backbone": False}
    assert on_disk["dataset_info"] == {"display_name": "Synthetic", "task_display": "Blob",
                                       "tasks": ["ellipse", "blob"], "spacing_unit": "px"}  # fmt: skip


def test_failure_is_recorded_not_raised(tmp_path, fake_methods) -> None:
    record = run_one(spec_for("fake-exploding"), GridSettings(tmp_path, "exp"))
    assert record["status"] == "failed"
    assert record["error"] == "RuntimeError: out of memory (simulated)"
    assert record["method_info"]["display_name"] == "Threshold"  # named in the report's run status
    assert json.loads(record_path(tmp_path, "exp", record["run_id"]).read_text())["status"] == "failed"


def test_record_write_is_atomic(tmp_path, monkeypatch) -> None:
    target = tmp_path / "runs" / "r.json"
    data.write_json_atomic(target, {"status": "ok"})

    def explode(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(json, "dump", explode)
    with pytest.raises(KeyboardInterrupt):
        data.write_json_atomic(target, {"status": "half"})
    assert json.loads(target.read_text()) == {"status": "ok"}, "the old record survives a failed write"
    assert [p.name for p in target.parent.iterdir()] == ["r.json"], "no temporary file is left behind"


def test_store_frames(tmp_path, fake_methods) -> None:
    run_one(spec_for("fake-threshold", seed=0), GridSettings(tmp_path, "exp"))
    run_one(spec_for("fake-exploding", seed=0), GridSettings(tmp_path, "exp"))
    (tmp_path / "exp" / "runs" / "broken.json").write_text("{not json")
    with pytest.warns(UserWarning, match="broken.json"):
        records = load_records(tmp_path)
    frame = runs_frame(records).set_index("method")
    assert frame.loc["fake-threshold", "status"] == "ok" and frame.loc["fake-exploding", "status"] == "failed"
    assert 0 <= frame.loc["fake-threshold", "dice"] <= 1 and frame.loc["fake-threshold", "shots"] == "5"


PLUGIN = textwrap.dedent(
    f"""
    import sys
    sys.path.insert(0, {str(REPO)!r})
    from bench.registry import METHODS
    from tests.fakes import FAKES
    for name, cls in FAKES.items():
        METHODS.register(name, cls)
    """
)


def test_grid_killed_with_sigkill_resumes_only_what_is_missing(tmp_path) -> None:
    plugin = tmp_path / "fakes_plugin.py"
    plugin.write_text(PLUGIN)
    results = tmp_path / "results"
    command = [sys.executable, "-c", "from bench.cli import main; main()", "run", "--plugin", str(plugin),
               "--methods", "fake-threshold", "--shots", "3", "--seeds", "0,1,2,3,4,5", "--set", "sleep=0.4",
               "--budget", "quick", "--results", str(results), "--experiment", "kill"]  # fmt: skip
    runs = results / "kill" / "runs"
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(list(runs.glob("*.json"))) < 3:
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    done_before = {p.name for p in runs.glob("*.json")}
    assert 3 <= len(done_before) < 12
    for path in runs.glob("*.json"):
        json.loads(path.read_text())  # every record on disk is whole

    completed = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr
    assert f"{len(done_before)} already done, {12 - len(done_before)} to run" in completed.stdout
    assert len(list(runs.glob("*.json"))) == 12
    again = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert "Nothing left to run." in again.stdout


def test_pool_workers_load_plugin_files_and_a_dead_worker_fails_only_its_runs(tmp_path) -> None:
    plugin = tmp_path / "fakes_plugin.py"
    plugin.write_text(PLUGIN + textwrap.dedent(
        """
        import os
        class Dies(FAKES["fake-threshold"]):
            name = "fake-dies"
            def fit(self, train, ctx):
                os._exit(3)
        METHODS.register("fake-dies", Dies)
        """
    ))  # fmt: skip
    # one worker runs them in order: the plugin's method succeeds, then its worker dies
    specs = [spec_for("fake-threshold", shots=3), spec_for("fake-dies", shots=3)]
    settings = GridSettings(tmp_path, "exp", device="cpu", plugins=(plugin,))
    summaries = execute(specs, settings, ExecutorOptions("pool", 1))
    by_id = {summary["run_id"]: summary for summary in summaries}
    assert by_id[specs[0].run_id]["status"] == "ok", by_id[specs[0].run_id]["error"]
    lost = by_id[specs[1].run_id]
    assert lost["status"] == "failed" and lost["error"].startswith("worker lost: ")
    assert not record_path(tmp_path, "exp", specs[1].run_id).exists()  # so a re-run runs it again
