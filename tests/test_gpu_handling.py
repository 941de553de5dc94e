"""Issue 33 on a machine without a GPU: device handling, honest GPU numbers, precision, gpu-check (CUDA mocked)."""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from bench.cli import app
from bench.compute import device as devices
from bench.compute.device import Numerics, apply_numerics
from bench.compute.timing import PeakMemory
from bench.errors import BenchError
from bench.records.spec import RunSpec
from bench.records.store import load_records
from bench.run import executors
from bench.run.grid import resolve_budget
from bench.run.runner import run_one
from bench.run.settings import GridSettings
from bench.run.submitit_jobs import SlurmOptions, SubmititJobs
from bench.sam.embedding_cache import EmbeddingStore

FAKE = RunSpec("fake-threshold", "synthetic", "blob", "mask", 3, 0, 0, "quick")


@pytest.fixture(autouse=True)
def fp32_afterwards():
    """Every test leaves torch's switches as the rest of the suite expects them: fp32, not deterministic."""
    yield
    apply_numerics(Numerics("fp32"), torch.device("cpu"))


@pytest.fixture
def two_gpus(monkeypatch):
    """A machine that says it has two Ampere GPUs, as far as the code under test asks without using them."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (8, 0))
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)


def run_cli(*arguments: str):
    return CliRunner().invoke(app, list(arguments))


# --- device handling ---------------------------------------------------------------------------------------------


def test_a_missing_cuda_device_is_one_line(two_gpus) -> None:
    assert devices.resolve_device("cuda:1") == torch.device("cuda:1")
    with pytest.raises(BenchError, match=r"has 2 CUDA devices \(cuda:0 to cuda:1\)"):
        devices.resolve_device("cuda:2")
    with pytest.raises(BenchError, match="auto, cpu or cuda"):
        devices.resolve_device("tpu")


def test_auto_budget_follows_the_device_each_run_uses(two_gpus) -> None:
    assert resolve_budget("auto", devices.run_device_type("auto", "inline", None)) == "paper"
    assert resolve_budget("auto", devices.run_device_type("cpu", "pool", None)) == "quick"  # cpu on a GPU machine
    assert resolve_budget("auto", devices.run_device_type("auto", "slurm", 1)) == "paper"
    assert resolve_budget("auto", devices.run_device_type("auto", "slurm", None)) == "quick"
    assert resolve_budget("paper", "cpu") == "paper"


def test_auto_budget_on_a_machine_without_cuda_but_slurm_gpus(monkeypatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert devices.run_device_type("auto", "inline", 1) == "cpu"
    assert devices.run_device_type("auto", "slurm", 2) == "cuda"  # the jobs' GPUs, not the login node's
    assert devices.run_device_type("cuda", "slurm", None) == "cuda"


def test_the_slurm_parent_never_touches_the_run_device(tmp_path, monkeypatch) -> None:
    """A login node without CUDA submits a cuda grid: no CUDA error, nothing encoded there, budget paper, the
    checkpoint checked on the CPU, and every job handed --device cuda."""
    import bench.sam.backbones

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(executors.shutil, "which", lambda name: f"/usr/bin/{name}")
    loaded, submitted = [], []
    real_load = bench.sam.backbones.load_backbone
    monkeypatch.setattr(bench.sam.backbones, "load_backbone",
                        lambda name, checkpoint, device: loaded.append(torch.device(device)) or real_load(
                            name, checkpoint, "cpu"))  # fmt: skip
    monkeypatch.setattr(executors, "encode_grid", lambda *args, **kwargs: pytest.fail("the parent encoded"))

    def submit(self, specs, worker, arguments, jobs, options, detach, finished) -> None:
        for slot, spec in enumerate(specs):
            submitted.append(arguments(spec, slot % jobs))
            finished(spec, {"run_id": spec.run_id, "status": "queued", "error": None, "job_id": f"7_{slot}"})

    monkeypatch.setattr(SubmititJobs, "execute", submit)
    result = run_cli("run", "--methods", "medsam-box", "--backbone", "tiny-sam-test", "--executor", "slurm",
                     "--device", "cuda", "--slurm-gpus", "1", "--detach", "--results", str(tmp_path))  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "budget paper" in result.output and loaded == [torch.device("cpu")]
    assert submitted and all(arguments[1].device == "cuda" and arguments[4] is None for arguments in submitted)


def test_local_submitit_jobs_get_one_gpu_each_and_honour_jobs(tmp_path, monkeypatch, two_gpus) -> None:
    monkeypatch.setattr(executors, "encode_grid", lambda *args, **kwargs: 0)
    monkeypatch.setattr("bench.run.submitit_jobs.POLL_SECONDS", 0.0)
    running: dict[str, str] = {}  # run id → its job's GPU
    most_at_once, gpus_seen, polls = [0], [], {}

    def submit(self, specs, worker, arguments, jobs, options) -> None:
        for spec in specs:
            visible_gpu = arguments(spec)[4]
            assert visible_gpu not in running.values(), "two running jobs on one GPU"
            running[spec.run_id] = visible_gpu
            gpus_seen.append(visible_gpu)
            self.ledger[spec.run_id] = {"job_id": str(len(gpus_seen)), "cluster": "local", "spec": spec.canonical()}
        most_at_once[0] = max(most_at_once[0], len(running))

    def outcome(self, spec):
        polls[spec.run_id] = polls.get(spec.run_id, 0) + 1
        if polls[spec.run_id] < 2:
            return None
        running.pop(spec.run_id)
        return {"run_id": spec.run_id, "status": "ok", "error": None}

    monkeypatch.setattr(SubmititJobs, "_submit", submit)
    monkeypatch.setattr(SubmititJobs, "_outcome", outcome)
    specs = [RunSpec("fake-threshold", "synthetic", "blob", "mask", 3, 0, seed, "quick") for seed in range(5)]
    summaries = executors.execute(specs, GridSettings(tmp_path, "grid", device="cuda"),
                                  executors.ExecutorOptions("submitit", 2))  # fmt: skip
    assert [s["status"] for s in summaries] == ["ok"] * 5
    assert most_at_once == [2] and set(gpus_seen) == {"0", "1"} and gpus_seen[:2] == ["0", "1"]


def test_local_submitit_jobs_see_the_gpus_their_device_needs(two_gpus, monkeypatch) -> None:
    assert executors.local_job_gpus("cuda", 3) == ["0", "1", "0"]
    assert executors.local_job_gpus("cuda:1", 2) == ["0,1", "0,1"]  # cuda:1 must exist in the job
    assert executors.local_job_gpus("cpu", 2) == [None, None]
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert executors.local_job_gpus("auto", 2) == ["0", "0"]
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    assert executors.local_job_gpus("auto", 2) == [None, None]


def test_local_submitit_refuses_slurm_gpus(tmp_path) -> None:
    result = run_cli("run", "--methods", "unet", "--executor", "submitit", "--slurm-gpus", "2",
                     "--results", str(tmp_path))  # fmt: skip
    assert result.exit_code == 2 and "--slurm-gpus is for --executor slurm" in result.output


def test_pool_workers_pin_their_gpu_as_they_start_on_every_python(monkeypatch) -> None:
    gpus: queue.Queue = queue.Queue()
    gpus.put("1")
    monkeypatch.setattr(executors, "_worker_gpu", {"name": None, "queue": None})
    monkeypatch.setattr(executors, "_exit_with_parent", lambda parent: None)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    executors._start_pool_worker(os.getpid(), gpus)
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "1" and gpus.empty()
    monkeypatch.setattr(executors, "_run_in_worker", lambda *arguments: {"status": "ok"})
    monkeypatch.setattr(executors, "ONE_RUN_PER_WORKER", True)  # the worker ends after its run: its GPU goes back
    assert executors._run_in_pool_worker() == {"status": "ok"} and gpus.get_nowait() == "1"
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    with pytest.raises(RuntimeError, match="CUDA started"):
        devices.pin_gpu("0")


# --- honest GPU numbers ------------------------------------------------------------------------------------------


def test_gpu_peak_memory_is_the_runs_own_rise(monkeypatch) -> None:
    allocated = {"now": 900 * 2**20, "peak": 0}
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: None)
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda device=None: allocated.update(
        peak=allocated["now"]))  # fmt: skip
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device=None: allocated["now"])
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda device=None: allocated["peak"])
    with PeakMemory(torch.device("cuda")) as peak:  # a backbone of 900 MB resident before the run
        allocated.update(peak=allocated["now"] + 250 * 2**20)
    assert peak.mb == pytest.approx(250) and peak.kind == "cuda-allocator-increase"


def test_a_finished_transunet_is_freed_without_a_garbage_collection() -> None:
    import gc
    import weakref

    from bench.methods.transunet import TransUNetNetwork

    network = TransUNetNetwork(32)
    network.encode(torch.zeros(1, 3, 32, 32))
    alive = weakref.ref(network)
    gc.disable()
    try:
        del network
        assert alive() is None, "a reference cycle keeps the network (and its GPU memory) alive"
    finally:
        gc.enable()


def test_cuda_start_up_is_paid_outside_fit_seconds(tmp_path, monkeypatch, fake_methods) -> None:
    order = []

    def warm_up(device) -> float:
        order.append("warm-up")
        time.sleep(0.3)
        return 0.3

    monkeypatch.setattr("bench.run.runner.cuda_warmup", warm_up)
    fit = fake_methods["fake-threshold"].fit
    monkeypatch.setattr(fake_methods["fake-threshold"], "fit", lambda self, *a: order.append("fit") or fit(self, *a))
    record = run_one(FAKE, GridSettings(tmp_path, "grid", device="cpu"))
    assert record["status"] == "ok" and order == ["warm-up", "fit"]
    assert record["warmup_seconds"] == 0.3 and record["fit_seconds"] < 0.3
    assert devices.cuda_warmup(torch.device("cpu")) == 0.0


# --- precision and determinism -----------------------------------------------------------------------------------


# a fresh process that imports what every run's process imports, then multiplies on two threads into the
# subnormal range (1e-30 × 1e-10 = 1e-40 < 1.2e-38): a chunk computed by an OpenMP worker that did not inherit
# the flush switch keeps its subnormal products
SUBNORMAL_PRODUCTS = """
import torch
import bench.run.runner
torch.set_num_threads(2)
products = torch.full((1 << 20,), 1e-30) * 1e-10
print(int(torch.count_nonzero(products)))
"""


def test_cpu_runs_flush_subnormal_floats_on_every_thread() -> None:
    done = subprocess.run([sys.executable, "-c", SUBNORMAL_PRODUCTS], capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": "2"}, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.split()[-1] == "0"


def test_precision_auto_is_tf32_where_the_gpu_has_it(monkeypatch) -> None:
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (8, 0))
    assert devices.resolve_precision("auto", torch.device("cuda")) == "tf32"
    assert devices.resolve_precision("bf16", torch.device("cuda")) == "bf16"
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (7, 0))
    assert devices.resolve_precision("auto", torch.device("cuda")) == "fp32"
    assert devices.resolve_precision("tf32", torch.device("cuda")) == "fp32"  # no TF32 cores: what it computes in
    assert devices.resolve_precision("auto", torch.device("cpu")) == "fp32"
    with pytest.raises(BenchError, match="--precision takes"):
        devices.check_precision("fp16")


def test_precision_and_determinism_are_recorded_and_applied(tmp_path, fake_methods) -> None:
    seen = {}
    cls = fake_methods["fake-threshold"]
    fit = cls.fit

    def fit_and_look(self, train, ctx) -> None:
        seen.update(deterministic=torch.are_deterministic_algorithms_enabled(),
                    autocast=torch.is_autocast_enabled("cpu"))  # fmt: skip
        fit(self, train, ctx)

    cls.fit = fit_and_look
    try:
        settings = GridSettings(tmp_path, "grid", device="cpu", numerics=Numerics("bf16", deterministic=True))
        record = run_one(FAKE, settings)
    finally:
        cls.fit = fit
    assert record["status"] == "ok", record["error"]
    assert record["precision"] == "bf16" and record["deterministic"] is True
    assert seen == {"deterministic": True, "autocast": True}
    plain = run_one(FAKE, GridSettings(tmp_path, "other", device="cpu"))
    assert plain["precision"] == "fp32" and plain["deterministic"] is False
    assert not torch.are_deterministic_algorithms_enabled()


def test_cli_precision_reaches_the_records_and_a_bad_one_is_one_line(tmp_path) -> None:
    result = run_cli("run", "--methods", "unet", "--precision", "fp16", "--results", str(tmp_path))
    assert result.exit_code == 2 and "--precision takes auto, fp32, tf32, bf16, not 'fp16'" in result.output


def test_cli_precision_and_determinism_reach_every_record_and_another_precision_reruns(
    tmp_path, fake_methods, monkeypatch
) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    grid = ("run", "--methods", "fake-threshold", "--tasks", "blob", "--shots", "3", "--results", str(tmp_path))
    result = run_cli(*grid, "--precision", "bf16", "--deterministic")
    assert result.exit_code == 0, result.output
    records = load_records(tmp_path, "default")
    assert records and all(r["precision"] == "bf16" and r["deterministic"] is True for r in records)
    assert "Nothing left to run" in run_cli(*grid, "--precision", "bf16").output
    again = run_cli(*grid)  # auto: fp32 on this CPU
    assert again.exit_code == 0 and f"run again {len(records)}: recorded with" in again.output
    assert "precision bf16 → fp32" in again.output
    assert all(r["precision"] == "fp32" for r in load_records(tmp_path, "default"))


def test_a_record_in_another_precision_is_of_another_recipe() -> None:
    assert devices.precision_changes({"status": "ok"}, "fp32") == {}  # older records computed in fp32
    assert devices.precision_changes({"precision": "fp32"}, "bf16") == {"precision": ("fp32", "bf16")}
    assert devices.precision_changes({"precision": "tf32"}, None) == {}  # a SLURM GPU the parent cannot see
    assert devices.expected_precision("auto", "cpu", "pool") == "fp32"
    assert devices.expected_precision("bf16", "cuda", "slurm") == "bf16"
    assert devices.expected_precision("auto", "cuda", "slurm") is None


def test_device_and_precision_key_the_embedding_cache_and_cpu_fp32_keeps_its_key(tmp_path, monkeypatch) -> None:
    class Backbone:
        cache_key = "litemedsam/0123456789abcdef-v1"
        device = torch.device("cpu")

    apply_numerics(Numerics("fp32"), torch.device("cpu"))
    assert EmbeddingStore.for_backbone(Backbone(), tmp_path).folder == tmp_path / "embeddings" / Backbone.cache_key
    apply_numerics(Numerics("bf16"), torch.device("cpu"))
    assert EmbeddingStore.for_backbone(Backbone(), tmp_path).folder.name == "0123456789abcdef-v1-cpu-bf16"
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (9, 0))
    Backbone.device = torch.device("cuda")
    apply_numerics(Numerics("auto"), torch.device("cuda"))
    assert EmbeddingStore.for_backbone(Backbone(), tmp_path).folder.name == "0123456789abcdef-v1-cuda-tf32"


# --- gpu-check ---------------------------------------------------------------------------------------------------


def test_gpu_check_fails_in_one_line_without_cuda(monkeypatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for arguments in ((), ("--device", "auto")):
        result = run_cli("perf", "gpu-check", *arguments)
        assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1, result.output
        assert "CUDA" in result.output


def test_gpu_check_runs_every_named_method_once_and_prints_its_numbers(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("COLUMNS", "200")  # the whole table on one line per run
    result = run_cli("perf", "gpu-check", "--device", "cpu", "--budget", "quick", "--methods", "medsam-box",
                     "--backbone", "tiny-sam-test", "--results", str(tmp_path))  # fmt: skip
    assert result.exit_code == 0, result.output
    (record,) = load_records(tmp_path, "gpu-check")
    assert record["status"] == "ok" and record["precision"] == "fp32" and "warmup_seconds" in record
    assert f"{record['mean_dice']:.3f}" in result.output and "fit s/epoch" in result.output
    assert json.loads(json.dumps(record["spec"]))["budget"] == "quick"
    assert np.isfinite(record["fit_seconds"])


def test_the_gpu_check_row_says_seconds_per_epoch_and_failures() -> None:
    from bench.perf.gpu_check import row

    ok = {"spec": {"method": "unet", "labels": "mask"}, "status": "ok", "fit_seconds": 12.0, "hparams": {"epochs": 4},
          "warmup_seconds": 1.25, "peak_memory_mb": 812.4, "peak_memory_kind": "cuda-allocator-increase",
          "mean_dice": 0.9123, "precision": "tf32"}  # fmt: skip
    assert row(ok) == {"method": "unet", "labels": "mask", "precision": "tf32", "fit s": "12.00",
                       "fit s/epoch": "3.000", "warm-up s": "1.25", "peak MB": "812 (cuda-allocator-increase)",
                       "Dice": "0.912", "status": "ok"}  # fmt: skip
    failed = {"spec": {"method": "unet", "labels": "mask"}, "status": "failed", "error": "RuntimeError: boom"}
    assert row(failed)["status"] == "failed: RuntimeError: boom" and row(failed)["fit s"] == "–"


def test_slurm_options_keep_the_gpus_a_slurm_job_asks_for() -> None:
    from bench.run.submitit_jobs import submitit_parameters

    assert submitit_parameters("slurm", 4, SlurmOptions(gpus_per_run=1))["gpus_per_node"] == 1
