"""One results folder and one embedding cache shared by several processes: claims, takeovers, file modes."""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from bench.cli import app
from bench.data.dataset import load_task
from bench.data.samples import write_json_atomic
from bench.records import claims
from bench.records.spec import RunSpec
from bench.records.store import claim_path, claims_folder, load_records, record_path
from bench.run import executors
from bench.run.executors import ExecutorOptions, execute
from bench.run.grid_status import grid_status
from bench.run.runner import run_one
from bench.run.settings import GridSettings
from bench.sam.backbones import load_backbone
from bench.sam.embedding_cache import EmbeddingStore, cached_embeddings, embedding_counts, image_digest
from tests.conftest import registered_methods
from tests.fakes import MeanThreshold
from tests.release_fixtures import write_hc18_release
from tests.test_scale_out import fake_plugin

MAIN = [sys.executable, "-c", "from bench.cli import main; main()"]


def bench_command(plugin: Path, results: Path, seeds: str) -> list[str]:
    return [*MAIN, "run", "--plugin", str(plugin), "--methods", "fake-logged", "--datasets", "synthetic",
            "--tasks", "blob", "--shots", "3", "--seeds", seeds, "--budget", "quick", "--device", "cpu",
            "--results", str(results), "--experiment", "grid"]  # fmt: skip


def logged_plugin(tmp_path: Path, before: str = "") -> tuple[Path, Path]:
    """A plugin whose method ``fake-logged`` appends "<seed> <pid>" to a log file each time it fits, then runs
    ``before`` and fits slowly enough (half a second) for runs of several processes to overlap."""
    log = tmp_path / "fits.log"
    fit_body = "\n".join([
        f"with open({str(log)!r}, 'a') as stream:",
        "    stream.write(f'{ctx.seed} {os.getpid()}\\n')",
        textwrap.dedent(before).strip(),
        "time.sleep(0.5)",
        "super().fit(train, ctx)",
    ])  # fmt: skip
    return fake_plugin(tmp_path, "fake-logged", fit_body), log


def fitted_seeds(log: Path) -> list[int]:
    return sorted(int(line.split()[0]) for line in log.read_text().splitlines()) if log.exists() else []


def leftovers(*folders: Path) -> list[Path]:
    """Claims, takeover locks and temporary files under ``folders``."""
    patterns = ("*.claim", "*.takeover", ".*.tmp")
    return [path for folder in folders for pattern in patterns for path in folder.rglob(pattern)]


def child_environment() -> dict[str, str]:
    # a wide console, so that no run id wraps across lines of the captured output
    return os.environ | {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "COLUMNS": "200"}


def test_four_bench_runs_started_at_once_run_every_run_exactly_once(tmp_path, isolated_cache) -> None:
    plugin, log = logged_plugin(tmp_path)
    results = tmp_path / "results"
    command = bench_command(plugin, results, "0,1,2,3,4,5")
    processes = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                  env=child_environment()) for _ in range(4)]  # fmt: skip
    outputs = [process.communicate(timeout=180)[0] for process in processes]
    assert [process.returncode for process in processes] == [0] * 4, outputs

    assert fitted_seeds(log) == list(range(6)), "every run was fitted exactly once between the four processes"
    records = load_records(results, "grid")
    assert len(records) == 6 and {record["status"] for record in records} == {"ok"}
    lines = [line for output in outputs for line in output.splitlines()]
    ran_here = [line for line in lines if line.endswith(": ok")]
    assert len(ran_here) == 6 and len({line.split(":")[0] for line in ran_here}) == 6
    # a run another process held was waited for and reported with that process's record
    waited = {line.split(":")[0] for line in lines if "claimed by" in line and "waited for" in line}
    assert waited <= {line.split(":")[0] for line in lines if line.endswith("(run by another process)")}
    assert leftovers(results, isolated_cache) == []


def test_the_next_bench_run_takes_over_the_run_of_a_killed_claim_holder(tmp_path) -> None:
    marker = tmp_path / "holder.pid"
    hang_once = f"""
        marker = pathlib.Path({str(marker)!r})
        if not marker.exists():
            marker.write_text(str(os.getpid()))
            time.sleep(600)
    """
    plugin, log = logged_plugin(tmp_path, hang_once)
    results = tmp_path / "results"
    command = bench_command(plugin, results, "0")
    holder = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=child_environment())
    try:
        deadline = time.monotonic() + 120
        while not marker.exists() and time.monotonic() < deadline and holder.poll() is None:
            time.sleep(0.2)
        assert marker.exists(), "the first bench run never started its run"
        (claim,) = claims_folder(results, "grid").glob("*.claim")
        assert json.loads(claim.read_text())["pid"] == holder.pid == int(marker.read_text())
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert claim.exists() and not list((results / "grid" / "runs").glob("*.json"))
    # a claim the killed process left on a run it had finished (killed between record and release)
    hold_for(claims_folder(results, "grid") / "finished-run.claim", holder.pid)

    second = subprocess.run(command, capture_output=True, text=True, timeout=180, env=child_environment())
    assert second.returncode == 0, second.stdout + second.stderr
    assert f"(taken over from {socket.gethostname()} pid {holder.pid} since" in second.stdout
    assert "1 ok, 0 failed" in second.stdout
    assert fitted_seeds(log) == [0, 0]  # the killed fit, and the one that finished
    assert [record["status"] for record in load_records(results, "grid")] == ["ok"]
    assert leftovers(results) == []


@pytest.fixture
def live_process():
    """A process of this host that stays alive until the test kills it: a claim holder that does nothing."""
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    yield process
    process.kill()
    process.wait()


def hold_for(path: Path, pid: int, host: str | None = None, details: dict | None = None) -> None:
    """Write the claim of another process (``pid`` on ``host``, default this one) at ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    owner = {"host": host or socket.gethostname(), "pid": pid, "token": "theirs",
             "started": "2024-05-01T12:00:00+00:00"}  # fmt: skip
    path.write_text(json.dumps(owner | (details or {})))


def test_claims_exclusive_stale_by_dead_owner_or_old_heartbeat_and_released_only_by_owner(
    tmp_path, live_process
) -> None:
    path = tmp_path / "run.claim"
    mine = claims.acquire(path, {"spec": {"method": "x"}})
    assert isinstance(mine, claims.Claim) and mine.taken_from is None
    again = claims.acquire(path)  # this process is alive: its claim holds, even against itself
    assert isinstance(again, claims.Holder) and again.pid == os.getpid() and again.details["spec"] == {"method": "x"}
    claims.release(mine)
    assert not path.exists()

    hold_for(path, live_process.pid)
    assert claims.acquire(path) == claims.read_holder(path)  # a live owner keeps it
    assert claims.live_holders(tmp_path) == {"run": claims.read_holder(path)}
    live_process.kill()
    live_process.wait()
    taken = claims.acquire(path)  # its owner is dead on this host: stale at once
    assert isinstance(taken, claims.Claim) and taken.taken_from.pid == live_process.pid
    hold_for(path, 12345, host="elsewhere")  # overwritten behind the owner's back
    claims.release(taken)  # not its claim any more: left alone
    assert path.exists() and claims.read_holder(path).host == "elsewhere"

    # another host: alive as long as its heartbeat is fresh
    assert isinstance(claims.acquire(path), claims.Holder)
    old = time.time() - claims.STALE_SECONDS - 60
    os.utime(path, (old, old))
    assert claims.live_holder(path) is None and claims.live_holders(tmp_path) == {}
    taken = claims.acquire(path)
    assert isinstance(taken, claims.Claim) and taken.taken_from.host == "elsewhere"
    claims.release(taken)

    # a takeover lock serialises takeovers: one left by a dead process is cleared, with or without its claim
    hold_for(path, live_process.pid)
    hold_for(path.with_name("run.claim.takeover"), live_process.pid)
    hold_for(tmp_path / "other.claim.takeover", live_process.pid)
    hold_for(tmp_path / "kept.claim", os.getpid())
    assert claims.remove_stale(tmp_path) == 1 and [p.name for p in tmp_path.iterdir()] == ["kept.claim"]


def test_the_heartbeat_keeps_a_claim_fresh(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(claims, "HEARTBEAT_SECONDS", 0.05)
    monkeypatch.setattr(claims, "_heartbeat", claims._Heartbeat())
    claim = claims.acquire(tmp_path / "run.claim")
    old = time.time() - 3600
    os.utime(claim.path, (old, old))
    deadline = time.monotonic() + 10
    while claims.read_holder(claim.path).heartbeat_age > 60 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert claims.read_holder(claim.path).heartbeat_age < 60
    claims.release(claim)
    assert not claim.path.exists()


class Counted(MeanThreshold):
    """fake-threshold that counts its fits in this process."""

    name = "fake-counted"
    fits: list[int] = []

    def fit(self, train, ctx) -> None:
        Counted.fits.append(ctx.seed)
        super().fit(train, ctx)


@pytest.fixture
def counted():
    Counted.fits.clear()
    with registered_methods({Counted.name: Counted}):
        yield Counted.fits


def counted_spec(seed: int) -> RunSpec:
    return RunSpec("fake-counted", "synthetic", "blob", "mask", 3, 0, seed, "quick")


def test_runs_claimed_elsewhere_are_waited_for_then_reported_or_taken_over(
    tmp_path, monkeypatch, counted, live_process
) -> None:
    monkeypatch.setattr(executors, "CLAIM_POLL_SECONDS", 0.1)
    finishing, dying, free = counted_spec(0), counted_spec(1), counted_spec(2)
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    for spec, pid in ((finishing, live_process.pid), (dying, other.pid)):
        hold_for(claim_path(tmp_path, "exp", spec.run_id), pid, details={"spec": spec.canonical()})
    rows = grid_status(tmp_path, "exp")
    assert rows == [{"experiment": "exp", "method": "fake-counted", "done": 0, "failed": 0, "queued_or_running": 2,
                     "missing": 0}]  # fmt: skip
    shown = CliRunner().invoke(app, ["status", "--results", str(tmp_path)])
    assert f"exp: 1 run claimed by {socket.gethostname()} pid {other.pid} since 2024-05-01 12:00:00 UTC" in shown.output

    announced = threading.Event()

    def on_done(spec: RunSpec, summary: dict) -> None:
        if summary["status"] == "claimed" and spec == dying:
            announced.set()

    summaries: list[dict] = []
    grid = threading.Thread(target=lambda: summaries.extend(
        execute([finishing, dying, free], GridSettings(tmp_path, "exp", device="cpu"), on_done=on_done)))  # fmt: skip
    grid.start()
    try:
        assert announced.wait(60)
        # the holder of the first run finishes it, and releases its claim
        run_one(finishing, GridSettings(tmp_path, "exp"))
        claim_path(tmp_path, "exp", finishing.run_id).unlink()
        other.kill()  # the holder of the second dies without a record
        other.wait()
        grid.join(120)
    finally:
        other.kill()
    by_id = {summary["run_id"]: summary for summary in summaries}
    assert by_id[free.run_id] == {"run_id": free.run_id, "status": "ok", "error": None}
    assert by_id[finishing.run_id]["status"] == "ok" and by_id[finishing.run_id]["elsewhere"]
    assert by_id[dying.run_id]["status"] == "ok" and f"pid {other.pid}" in by_id[dying.run_id]["taken_from"]
    assert sorted(counted) == [0, 1, 2]  # each run fitted once: the first by its holder (here, by hand)
    assert leftovers(tmp_path) == []


def test_a_worker_that_finds_its_run_claimed_runs_nothing(tmp_path, counted, live_process) -> None:
    spec = counted_spec(0)
    hold_for(claim_path(tmp_path, "exp", spec.run_id), live_process.pid)
    settings = GridSettings(tmp_path, "exp", device="cpu")
    summary = executors._run_in_worker(spec, settings)  # as a pool worker or a job would
    assert summary["status"] == "claimed" and f"pid {live_process.pid}" in summary["holder"]
    assert counted == [] and not record_path(tmp_path, "exp", spec.run_id).exists()
    detached = execute([spec], settings, ExecutorOptions("submitit", detach=True))
    assert detached == [{"run_id": spec.run_id, "status": "claimed", "error": None}]
    assert not (tmp_path / "exp" / "submitit" / "jobs.json").exists(), "a claimed run is not submitted"


def test_a_run_finished_elsewhere_since_planning_is_not_run_again(tmp_path, counted) -> None:
    spec = counted_spec(0)
    run_one(spec, GridSettings(tmp_path, "exp"))  # another process finished it after this grid was planned
    assert execute([spec], GridSettings(tmp_path, "exp", device="cpu"))[0] | {"elsewhere": True} == {
        "run_id": spec.run_id, "status": "ok", "error": None, "elsewhere": True}  # fmt: skip
    assert counted == [0]


# --- the embedding cache ----------------------------------------------------------------------------------


def picture_set(count: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (40, 56), dtype=np.uint8) for _ in range(count)]


ENCODER = """
import json, os, pathlib, sys, time
from bench.sam.backbones import load_backbone
from bench.sam.embedding_cache import cached_embeddings, embedding_counts
import numpy as np
backbone = load_backbone("tiny-sam-test")
encode = backbone.encode
backbone.encode = lambda pixels: (time.sleep(0.2), encode(pixels))[1]  # slow enough for the two to overlap
ready = pathlib.Path(sys.argv[1])  # a barrier: both have imported torch and loaded the backbone, then start
(ready / str(os.getpid())).touch()
while len(list(ready.iterdir())) < 2:
    time.sleep(0.01)
rng = np.random.default_rng(11)
pictures = [rng.integers(0, 256, (40, 56), dtype=np.uint8) for _ in range(12)]
embeddings = cached_embeddings(backbone, pictures, batch_size=2)
print(json.dumps(embedding_counts() | {"sum": float(embeddings.sum())}))
"""


def test_two_processes_needing_the_same_images_encode_each_once(tmp_path, isolated_cache) -> None:
    ready = tmp_path / "ready"
    ready.mkdir()
    command = [sys.executable, "-c", ENCODER, str(ready)]
    repository = Path(__file__).parents[1]
    processes = [subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=child_environment(),
                                  cwd=repository) for _ in range(2)]  # fmt: skip
    counts = [json.loads(process.communicate(timeout=180)[0]) for process in processes]
    assert [process.returncode for process in processes] == [0, 0]
    assert sum(count["encoded"] for count in counts) == 12
    assert all(count["encoded"] + count["cached"] == 12 for count in counts)
    assert counts[0]["sum"] == counts[1]["sum"]
    assert len(list(isolated_cache.rglob("*.npy"))) == 12 and leftovers(isolated_cache) == []


def test_an_image_another_process_encodes_is_waited_for_and_a_dead_encoders_is_taken_over(
    live_process, monkeypatch
) -> None:
    from bench.sam import embedding_cache

    monkeypatch.setattr(embedding_cache, "CLAIM_POLL_SECONDS", 0.05)
    tiny = load_backbone("tiny-sam-test")
    store = EmbeddingStore.for_backbone(tiny)
    written, orphaned = picture_set(2, seed=12)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    hold_for(store._claim_path(image_digest(written)), live_process.pid)
    hold_for(store._claim_path(image_digest(orphaned)), int(dead.stdout))
    stand_in = np.full((256, 64, 64), 0.5, np.float16)

    def other_process_writes() -> None:
        time.sleep(0.5)
        store.put(image_digest(written), stand_in)
        store._claim_path(image_digest(written)).unlink()

    writer = threading.Thread(target=other_process_writes)
    writer.start()
    before = embedding_counts()
    embeddings = cached_embeddings(tiny, [written, orphaned])
    writer.join()
    assert {key: value - before[key] for key, value in embedding_counts().items()} == {"encoded": 1, "cached": 1}
    assert float(embeddings[0].mean()) == 0.5  # read from the other process's entry, not encoded here
    assert leftovers(store.folder) == []


# --- file modes ---------------------------------------------------------------------------------------------


@pytest.fixture(params=[0o022, 0o002], ids=["umask-022", "umask-002"])
def umask(request):
    previous = os.umask(request.param)
    yield request.param
    os.umask(previous)


def test_every_kind_of_file_gets_the_users_umask(tmp_path, umask, fake_methods, isolated_cache) -> None:
    results = tmp_path / "results"
    ran = CliRunner().invoke(app, ["run", "--methods", "fake-threshold", "--datasets", "synthetic", "--tasks", "blob",
                                   "--shots", "3", "--seeds", "0", "--budget", "quick", "--device", "cpu",
                                   "--results", str(results)])  # fmt: skip
    assert ran.exit_code == 0, ran.output
    table = CliRunner().invoke(app, ["table", "--results", str(results), "--out", str(tmp_path / "table.md")])
    assert table.exit_code == 0, table.output
    tiny = load_backbone("tiny-sam-test")
    cached_embeddings(tiny, picture_set(1, seed=13))
    write_hc18_release(tmp_path / "data", count=10)
    load_task("hc18", "head", tmp_path / "data")
    write_json_atomic(results / "default" / "submitit" / "jobs.json", {})
    claim = claims.acquire(tmp_path / "claims" / "run.claim")
    claim_mode = stat.S_IMODE(claim.path.stat().st_mode)
    claims.release(claim)

    files = {
        "record": next((results / "default" / "runs").glob("*.json")),
        "predictions": next((results / "default" / "predictions").glob("*.npz")),
        "support set": next(isolated_cache.rglob("supports/**/*.json")),
        "embedding": next(isolated_cache.rglob("embeddings/**/*.npy")),
        "cache note": next(isolated_cache.rglob("embeddings/**/backbone.json")),
        "split file": next((tmp_path / "data").rglob("split.json"), None) or next(isolated_cache.rglob("split.json")),
        "job list": results / "default" / "submitit" / "jobs.json",
        "report": tmp_path / "table.md",
    }
    modes = {kind: stat.S_IMODE(path.stat().st_mode) for kind, path in files.items()} | {"claim": claim_mode}
    assert modes == dict.fromkeys(modes, 0o666 & ~umask)
    folders = [results / "default" / "runs", results / "default" / "claims", files["embedding"].parent]
    assert {stat.S_IMODE(folder.stat().st_mode) for folder in folders} == {0o777 & ~umask}
