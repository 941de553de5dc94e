"""Scale-out: executors agree, the grid encodes each image once, submitit detach/status/collect, per-run memory."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from bench.cli import app
from bench.compute.timing import PeakMemory, resident_set_mb
from bench.paths import process_alive
from bench.records.spec import RunSpec
from bench.records.store import load_records, record_path
from bench.run import executors
from bench.run.executors import ExecutorOptions, execute, pool_gpus
from bench.run.grid_status import grid_status
from bench.run.settings import GridSettings
from bench.run.submitit_jobs import SlurmOptions, load_job_ledger, submitit_parameters
from bench.sam.embedding_cache import embedding_counts

REPO = Path(__file__).resolve().parents[1]
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


def fake_plugin(folder: Path, name: str, fit_body: str) -> Path:
    """A plugin file registering ``name``: fake-threshold whose ``fit`` runs ``fit_body`` (os, pathlib and time
    imported), so that a pool worker, which loads only plugin files, knows it."""
    body = textwrap.indent(textwrap.dedent(fit_body).strip(), " " * 8)
    path = folder / "plugin.py"
    path.write_text(PLUGIN + f"""
import os, pathlib, time
class Plugin(FAKES["fake-threshold"]):
    name = {name!r}
    def fit(self, train, ctx):
{body}
METHODS.register({name!r}, Plugin)
""")
    return path


def tiny_grid() -> list[RunSpec]:
    """Four runs at the methods' tiny settings: the SAM-based prompt module (its 40 test images take most of the
    time) and a UNet with three seeds."""

    def spec(method: str, seed: int, backbone: str | None, overrides: tuple) -> RunSpec:
        return RunSpec(method, "synthetic", "ellipse", "mask", 3, 0, seed, "quick", backbone, None, overrides)

    prompt = spec("prompt-module", 0, "tiny-sam-test", (("epochs", 1), ("lr_drop_epoch", 1)))
    unets = [spec("unet", seed, None, (("epochs", 1), ("input_size", 32))) for seed in (0, 1, 2)]
    return [prompt, *unets]


def outcomes(results: Path) -> dict[str, dict]:
    return {record["run_id"]: record for record in load_records(results, "grid")}


def test_inline_pool_and_submitit_agree_and_the_grid_encodes_each_image_once(tmp_path, monkeypatch) -> None:
    specs = tiny_grid()
    by_executor = {}
    for executor, jobs in (("inline", 1), ("pool", 2), ("submitit", 2)):
        cache = tmp_path / f"cache-{executor}"
        monkeypatch.setenv("BENCH_CACHE", str(cache))  # a cold cache each, inherited by the workers
        parent_before = embedding_counts()["encoded"]
        settings = GridSettings(tmp_path / executor, "grid", device="cpu")
        summaries = execute(specs, settings, ExecutorOptions(executor, jobs))
        assert [s["status"] for s in summaries] == ["ok"] * 4, summaries
        records = outcomes(tmp_path / executor)
        by_executor[executor] = (records, embedding_counts()["encoded"] - parent_before, cache)

    inline, _, inline_cache = by_executor["inline"]
    # the prompt module's 40 test images and 3 support images, each encoded once
    distinct = len({path.name for path in inline_cache.rglob("*.npy")})
    assert sum(record["embeddings"]["encoded"] for record in inline.values()) == distinct == 43
    for executor in ("pool", "submitit"):
        records, parent_encoded, cache = by_executor[executor]
        assert set(records) == set(inline) == {spec.run_id for spec in specs}
        for run_id, record in records.items():
            assert [case["dice"] for case in record["cases"]] == [case["dice"] for case in inline[run_id]["cases"]]
            assert record["mean_dice"] == inline[run_id]["mean_dice"]
        # the parent encoded the grid's images before fanning out; no worker encoded any of them again
        assert parent_encoded == distinct
        assert sum(record["embeddings"]["encoded"] for record in records.values()) == 0
        assert len(list(cache.rglob("*.npy"))) == distinct


def test_a_killed_pool_worker_loses_only_its_run_and_a_rerun_completes_the_grid(tmp_path) -> None:
    marker = tmp_path / "died-once"
    plugin = fake_plugin(tmp_path, "fake-dies-once", f"""
        marker = pathlib.Path({str(marker)!r})
        if ctx.seed == 1 and not marker.exists():
            marker.touch()
            os._exit(9)  # killed mid-run, after the method started
        super().fit(train, ctx)
    """)
    specs = [RunSpec("fake-dies-once", "synthetic", "blob", "mask", 3, 0, seed, "quick") for seed in range(4)]
    settings = GridSettings(tmp_path, "grid", device="cpu", plugins=(plugin,))
    first = execute(specs, settings, ExecutorOptions("pool", 2))
    lost = [summary for summary in first if summary["status"] != "ok"]
    assert marker.exists() and lost and all(s["error"].startswith("worker lost: ") for s in lost)
    assert not record_path(tmp_path, "grid", specs[1].run_id).exists()

    remaining = [spec for spec in specs if not record_path(tmp_path, "grid", spec.run_id).exists()]
    second = execute(remaining, settings, ExecutorOptions("pool", 2))
    assert [s["status"] for s in second] == ["ok"] * len(remaining)
    runs = sorted((tmp_path / "grid" / "runs").iterdir())
    assert [path.name for path in runs] == sorted(f"{spec.run_id}.json" for spec in specs)  # no stray temporaries
    assert all(json.loads(path.read_text())["status"] == "ok" for path in runs)


def test_pool_workers_end_when_their_parent_is_killed(tmp_path) -> None:
    worker_pid = tmp_path / "worker.pid"
    plugin = fake_plugin(tmp_path, "fake-hangs", f"""
        pathlib.Path({str(worker_pid)!r}).write_text(str(os.getpid()))
        time.sleep(600)
    """)
    parent_script = textwrap.dedent(
        f"""
        import sys
        sys.path.insert(0, {str(REPO)!r})
        from pathlib import Path
        from bench.run.executors import ExecutorOptions, execute
        from bench.run.settings import GridSettings
        from bench.records.spec import RunSpec
        spec = RunSpec("fake-hangs", "synthetic", "blob", "mask", 3, 0, 0, "quick")
        settings = GridSettings(Path({str(tmp_path)!r}), "grid", device="cpu", plugins=(Path({str(plugin)!r}),))
        execute([spec], settings, ExecutorOptions("pool", 1))
        """
    )
    parent = subprocess.Popen([sys.executable, "-c", parent_script])
    try:
        deadline = time.monotonic() + 120
        while not worker_pid.exists() and time.monotonic() < deadline and parent.poll() is None:
            time.sleep(0.2)
        assert worker_pid.exists(), "the pool worker never started its run"
        worker = int(worker_pid.read_text())
        parent.kill()  # SIGKILL: the pool gets no chance to shut down
        parent.wait()
        deadline = time.monotonic() + 30
        while process_alive(worker) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not process_alive(worker)
    finally:
        parent.kill()


def run_cli(*arguments: str) -> str:
    result = CliRunner().invoke(app, list(arguments))
    assert result.exit_code == 0, result.output
    return result.output


def test_detach_then_status_then_a_second_run_collects_without_resubmitting(tmp_path) -> None:
    plugin = tmp_path / "plugin.py"
    plugin.write_text(PLUGIN)
    results = tmp_path / "results"
    command = ("run", "--plugin", str(plugin), "--methods", "fake-threshold", "--datasets", "synthetic",
               "--tasks", "blob", "--shots", "3", "--seeds", "0,1,2", "--set", "sleep=1", "--budget", "quick",
               "--device", "cpu", "--results", str(results), "--experiment", "grid",
               "--executor", "submitit")  # fmt: skip
    output = run_cli(*command, "--detach")
    assert "3 queued or running" in output and "submitted as job" in output
    ledger = load_job_ledger(results, "grid")
    assert len(ledger) == 3 and all(entry["cluster"] == "local" for entry in ledger.values())

    rows = grid_status(results, "grid")  # the jobs are still starting (each imports torch) or sleeping
    assert [(row["method"], row["failed"], row["missing"]) for row in rows] == [("fake-threshold", 0, 0)]
    assert rows[0]["queued_or_running"] >= 1 and rows[0]["done"] + rows[0]["queued_or_running"] == 3
    assert "fake-threshold" in run_cli("status", "--results", str(results), "--plugin", str(plugin))

    collected = run_cli(*command)
    assert "3 ok, 0 failed" in collected or "Nothing left to run." in collected
    jobs = {path.name.split("_")[0] for path in (results / "grid" / "submitit").glob("*_result.pkl")}
    assert jobs == {entry["job_id"] for entry in ledger.values()}, "every run was submitted exactly once"
    assert load_job_ledger(results, "grid") == {}
    assert grid_status(results, "grid")[0] | {"experiment": "grid"} == {
        "experiment": "grid", "method": "fake-threshold", "done": 3, "failed": 0, "queued_or_running": 0,
        "missing": 0}  # fmt: skip
    assert "Nothing left to run." in run_cli(*command)


def test_a_job_that_raised_outside_its_run_becomes_a_failed_record_with_its_exception(tmp_path) -> None:
    spec = RunSpec("unet", "synthetic", "blob", "mask", 3, 0, 0, "quick")
    folder = tmp_path / "grid" / "submitit"
    folder.mkdir(parents=True)
    # what submitit leaves when the job function raised: ("error", the formatted traceback)
    trace = "Traceback (most recent call last):\n  File \"x.py\", line 1\nImportError: no module named 'plugin'\n"
    (folder / "4242_0_result.pkl").write_bytes(pickle.dumps(("error", trace)))
    (folder / "jobs.json").write_text(json.dumps({spec.run_id: {"job_id": "4242", "cluster": "slurm",
                                                                "spec": spec.canonical()}}))  # fmt: skip
    rows = grid_status(tmp_path, "grid")
    assert rows == [{"experiment": "grid", "method": "unet", "done": 0, "failed": 1, "queued_or_running": 0,
                     "missing": 0}]  # fmt: skip
    record = json.loads(record_path(tmp_path, "grid", spec.run_id).read_text())
    assert record["status"] == "failed" and record["error"] == "job 4242 failed: ImportError: no module named 'plugin'"
    assert record["traceback"] == trace.rstrip() and load_job_ledger(tmp_path, "grid") == {}


def test_pool_workers_are_pinned_round_robin_to_the_visible_gpus(monkeypatch) -> None:
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert pool_gpus("cuda", 3) == ["0", "1", "0"]
    assert pool_gpus("auto", 2) == ["0", "1"]
    assert pool_gpus("cpu", 2) == [None, None]
    assert pool_gpus("cuda:1", 2) == [None, None]  # an explicit device is the user's choice
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,6")
    assert pool_gpus("cuda", 4) == ["4", "6", "4", "6"]
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert pool_gpus("cuda", 2) == [None, None]


def test_worker_sets_its_gpu_before_running(tmp_path, monkeypatch, fake_methods) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    spec = RunSpec("fake-threshold", "synthetic", "blob", "mask", 3, 0, 0, "quick")
    summary = executors._run_in_worker(spec, GridSettings(tmp_path, "grid", device="cpu"), visible_gpu="3")
    assert summary["status"] == "ok" and os.environ["CUDA_VISIBLE_DEVICES"] == "3"


def test_slurm_options_reach_submitit_and_the_sbatch_script(tmp_path, monkeypatch) -> None:
    import submitit
    from submitit.slurm.slurm import SlurmExecutor

    monkeypatch.setattr(SlurmExecutor, "affinity", staticmethod(lambda: 1))  # as if srun were on the PATH

    options = SlurmOptions(partition="gpu", time_min=90, gpus_per_run=1, cpus_per_run=8, mem_gb=32, account="lab",
                           qos="high", extra={"constraint": "a100", "mail-user": "me@lab.org"})  # fmt: skip
    parameters = submitit_parameters("slurm", 16, options)
    assert parameters == {"timeout_min": 90, "gpus_per_node": 1, "slurm_array_parallelism": 16,
                          "slurm_partition": "gpu", "cpus_per_task": 8, "mem_gb": 32, "slurm_account": "lab",
                          "slurm_qos": "high", "slurm_constraint": "a100",
                          "slurm_additional_parameters": {"mail-user": "me@lab.org"}}  # fmt: skip
    submitter = submitit.AutoExecutor(folder=tmp_path, cluster="slurm")
    submitter.update_parameters(**parameters)
    script = submitter._executor._make_submission_file_text("python job.py", "uid")
    for line in ("--partition=gpu", "--time=90", "--gpus-per-node=1", "--cpus-per-task=8", "--mem=32GB",
                 "--account=lab", "--qos=high", "--constraint=a100", "--mail-user=me@lab.org"):  # fmt: skip
        assert f"#SBATCH {line}" in script
    # the local executor takes only what it understands; its jobs are pinned to one GPU each by the worker
    assert submitit_parameters("local", 2, options) == {"timeout_min": 90}


def test_detach_needs_a_submitit_executor_and_slurm_needs_sbatch(tmp_path, monkeypatch) -> None:
    result = CliRunner().invoke(app, ["run", "--methods", "unet", "--detach", "--results", str(tmp_path)])
    assert result.exit_code == 2 and "--detach needs --executor submitit or slurm" in result.output
    monkeypatch.setenv("PATH", str(tmp_path))  # no sbatch here
    result = CliRunner().invoke(app, ["run", "--methods", "unet", "--executor", "slurm", "--results", str(tmp_path)])
    assert result.exit_code == 2 and "--executor slurm needs SLURM's sbatch on the PATH" in result.output
    assert not (tmp_path / "default").exists()


@pytest.mark.skipif(resident_set_mb() is None, reason="no /proc/self/statm")
def test_cpu_peak_memory_is_the_runs_own_not_the_process_peak() -> None:
    ballast = np.ones(96 * 2**20 // 8)  # an earlier run's memory, still held by the process
    with PeakMemory(torch.device("cpu")) as idle:
        pass
    with PeakMemory(torch.device("cpu")) as busy:
        held = np.ones(64 * 2**20 // 8)  # 64 MB written, so resident
    del ballast, held
    assert idle.kind == busy.kind == "cpu-rss-increase"
    assert idle.mb is not None and busy.mb is not None
    assert idle.mb < 16 and 56 < busy.mb < 96


def test_a_training_free_method_has_only_its_scored_images_encoded(tmp_path, monkeypatch) -> None:
    from bench.run.runner import encode_grid

    monkeypatch.setenv("BENCH_CACHE", str(tmp_path / "cache"))
    # medsam-box gets every training image (shots = all) but reads none: only the 40 test images are encoded
    medsam = RunSpec("medsam-box", "synthetic", "ellipse", "box", None, 0, 0, "quick", "tiny-sam-test")
    settings = GridSettings(tmp_path / "results", "grid", device="cpu")
    assert encode_grid([medsam], settings) == 40
    # the prompt module trains on its 3 support images: those are encoded too, the test images are cached
    prompt = RunSpec("prompt-module", "synthetic", "ellipse", "box", 3, 0, 0, "quick", "tiny-sam-test")
    assert encode_grid([medsam, prompt], settings) == 3
