"""`bench recheck`: records re-run into a scratch folder with the current code, compared with what they say."""

from __future__ import annotations

import json

import numpy as np
import pytest

from bench.records import store
from bench.records.predictions import load_predictions, rerun_of, with_kept_scores
from tests.test_cli import assert_one_line_error, invoke

pytestmark = pytest.mark.usefixtures("fake_methods")


@pytest.fixture
def committed(tmp_path):
    """Three finished runs of the threshold fake on synthetic (three support draws) and one of the training-free
    box fill, as a committed folder."""
    results = tmp_path / "results"
    made = invoke("run", "--methods", "fake-threshold,fake-boxfill", "--tasks", "blob", "--shots", "3", "--draws", "3",
                  "--results", str(results), "--experiment", "exp")  # fmt: skip
    assert made.exit_code == 0, made.output
    run_ids = sorted(record["run_id"] for record in store.load_records(results, "exp"))
    assert len(run_ids) == 4 and run_ids[0].startswith("fake-boxfill")
    return results, run_ids


def recheck(results, scratch, *args: str):
    """``bench recheck`` of experiment "exp" into ``scratch`` (None: the default scratch folder)."""
    where = ["--scratch", str(scratch)] if scratch is not None else []
    return invoke("recheck", "--experiment", "exp", "--results", str(results), *where, *args)


def test_unchanged_code_reproduces_its_records_exactly(committed, tmp_path) -> None:
    results, run_ids = committed
    out = tmp_path / "recheck.md"
    result = recheck(results, tmp_path / "scratch", "--runs", ",".join(run_ids[:2]), "--out", str(out))
    assert result.exit_code == 0, result.output
    assert "2 of 2 re-runs within ± 0.5 Dice points of their records (2 identical)" in result.output
    for run_id in run_ids[:2]:  # the new records are in the scratch folder, under the same run ids
        old = json.loads(store.record_path(results, "exp", run_id).read_text())
        new = json.loads(store.record_path(tmp_path / "scratch", "exp", run_id).read_text())
        assert new["mean_dice"] == old["mean_dice"] and new["started"] >= old["started"]
    written = out.read_text()
    rows = [line for line in written.splitlines() if line.startswith(("| fake-", "|:"))]
    assert len(rows) == 3 and all("| identical " in row for row in rows[1:]), written
    assert f"`bench recheck --experiment exp --runs {run_ids[0]},{run_ids[1]} --results " in written
    assert not store.record_path(tmp_path / "scratch", "exp", run_ids[2]).exists()


def test_a_code_change_that_moves_the_dice_is_flagged(committed, tmp_path, monkeypatch) -> None:
    from tests.fakes import MeanThreshold

    results, run_ids = committed
    original = MeanThreshold.predict

    def stricter(self, items, ctx):  # a "code change": a higher threshold predicts less of every structure
        return [np.where(p > 0, (item.image >= self.level).astype(np.float32), 0) for item, p in
                zip(items, original(self, items, ctx), strict=True)]  # fmt: skip

    monkeypatch.setattr(MeanThreshold, "predict", stricter)
    out = tmp_path / "recheck.md"
    result = recheck(results, tmp_path / "scratch", "--runs", run_ids[1], "--tolerance", "0.01", "--out", str(out))
    assert result.exit_code == 0, result.output
    committed_dice = json.loads(store.record_path(results, "exp", run_ids[1]).read_text())["mean_dice"]
    new_dice = json.loads(store.record_path(tmp_path / "scratch", "exp", run_ids[1]).read_text())["mean_dice"]
    assert abs(new_dice - committed_dice) * 100 > 0.01
    assert "0 of 1 re-runs within ± 0.01 Dice points" in result.output
    row = next(line for line in out.read_text().splitlines() if line.startswith(f"| {run_ids[1]}"))
    cells = [cell.strip() for cell in row.strip("|").split("|")]
    assert cells[1:5] == [f"{100 * committed_dice:.2f}", f"{100 * new_dice:.2f}",
                          f"{100 * (new_dice - committed_dice):+.2f}", "outside"]  # fmt: skip


def test_moved_runs_whose_records_name_no_cpu_kernels_share_one_note(committed, tmp_path, monkeypatch) -> None:
    from tests.fakes import MeanThreshold

    results, run_ids = committed
    trained = run_ids[1:]
    for run_id in trained:  # records written before records named their CPU kernels
        path = store.record_path(results, "exp", run_id)
        record = json.loads(path.read_text())
        record["cpu"].pop("capability")
        path.write_text(json.dumps(record))
    original = MeanThreshold.predict
    monkeypatch.setattr(MeanThreshold, "predict", lambda self, items, ctx: [
        np.where(p > 0, (item.image >= self.level).astype(np.float32), 0)
        for item, p in zip(items, original(self, items, ctx), strict=True)])  # fmt: skip
    out = tmp_path / "recheck.md"
    result = recheck(results, tmp_path / "scratch", "--runs", ",".join(run_ids), "--out", str(out))
    assert result.exit_code == 0, result.output
    kernels = json.loads(store.record_path(tmp_path / "scratch", "exp", trained[0]).read_text())["cpu"]["capability"]
    notes = [line for line in out.read_text().splitlines() if line.startswith("* ")]
    assert notes == [f"* 3 runs ({', '.join(trained)}): the records name no CPU kernels; the re-runs computed "
                     f"with {kernels}"]  # fmt: skip


def test_a_seeded_sample_draws_the_same_runs(committed, tmp_path) -> None:
    from bench.run.recheck import select_records

    results, run_ids = committed
    first = [record["run_id"] for record in select_records(results, "exp", sample=2, seed=3)]
    again = [record["run_id"] for record in select_records(results, "exp", sample=2, seed=3)]
    assert first == again and len(set(first)) == 2 and set(first) <= set(run_ids)
    others = {tuple(r["run_id"] for r in select_records(results, "exp", sample=2, seed=s)) for s in range(8)}
    assert len(others) > 1  # the seed chooses
    # a sample kept to some methods and shots (the cheap runs of an experiment)
    trained = {r["run_id"] for r in select_records(results, "exp", sample=3, methods=("fake-threshold",))}
    assert trained == set(run_ids[1:])
    assert [r["run_id"] for r in select_records(results, "exp", sample=1, shots=("all",))] == run_ids[:1]


def test_user_errors_are_one_line_and_write_nothing(committed, tmp_path) -> None:
    results, run_ids = committed
    scratch = tmp_path / "scratch"
    assert_one_line_error(recheck(results, scratch), "--runs", "--sample")
    assert_one_line_error(recheck(results, scratch, "--runs", run_ids[0], "--sample", "1"), "one of the three")
    assert_one_line_error(recheck(results, scratch, "--runs", "unet_nothing"), "no finished record", "unet_nothing")
    assert_one_line_error(recheck(results, scratch, "--sample", "5"), "--sample takes 1 to 4")
    assert_one_line_error(
        recheck(results, scratch, "--sample", "1", "--methods", "unet"), "no finished records of unet"
    )
    assert_one_line_error(recheck(results, scratch, "--sample", "1", "--tolerance", "-1"), "--tolerance")
    # the committed folder itself is never a scratch folder: the re-runs would overwrite its records
    assert_one_line_error(recheck(results, results, "--runs", run_ids[0]), "--scratch must be another folder")
    assert not scratch.exists()
    done = recheck(results, scratch, "--runs", run_ids[0])
    assert done.exit_code == 0, done.output
    assert_one_line_error(recheck(results, scratch, "--runs", run_ids[0]), "already holds a record")
    assert_one_line_error(recheck(results, None, "--runs", run_ids[0], "--resume"), "name that folder")


def test_re_runs_lend_their_predictions_to_records_without_them(committed, tmp_path, monkeypatch) -> None:
    from tests.fakes import MeanThreshold

    results, run_ids = committed
    for run_id in run_ids[1:3]:  # as the committed experiments were: records kept, predictions not
        store.prediction_path(results, "exp", run_id).unlink()
    original = MeanThreshold.predict
    identical, moved = run_ids[1:3]

    def stricter_for_one(self, items, ctx):  # a code change that moves one of the two runs
        outputs = original(self, items, ctx)
        if ctx.spec.run_id != moved:
            return outputs
        return [np.where(p > 0, (item.image >= self.level).astype(np.float32), 0) for item, p in
                zip(items, outputs, strict=True)]  # fmt: skip

    monkeypatch.setattr(MeanThreshold, "predict", stricter_for_one)
    scratch = tmp_path / "scratch"
    first = recheck(results, scratch, "--runs", identical)
    assert first.exit_code == 0, first.output
    # the re-check goes on from its scratch folder: the re-run there counts as done, the other one runs
    result = recheck(results, scratch, "--runs", f"{identical},{moved}", "--keep-predictions", "--resume")
    assert result.exit_code == 0, result.output
    assert "1 identical re-run(s) and of 1 other re-run(s), marked as re-runs" in " ".join(result.output.split())
    committed_records = {run_id: store.existing_record(results, "exp", run_id) for run_id in (identical, moved)}
    rerun = store.existing_record(scratch, "exp", moved)
    assert rerun["mean_dice"] != committed_records[moved]["mean_dice"]
    # an identical re-run made the record's own masks; the other's are kept with its own scores, and say so
    same = store.prediction_path(results, "exp", identical)
    assert rerun_of(same) is None
    assert with_kept_scores(committed_records[identical], same) is committed_records[identical]
    kept = with_kept_scores(committed_records[moved], store.prediction_path(results, "exp", moved))
    assert [case["dice"] for case in kept["cases"]] == [case["dice"] for case in rerun["cases"]]
    assert kept["rerun"]["git_rev"] == rerun["git_rev"]
    assert kept["rerun"]["record_mean_dice"] == committed_records[moved]["mean_dice"]
    masks = load_predictions(store.prediction_path(results, "exp", moved))
    assert masks.keys() == {case["id"] for case in rerun["cases"]}


def test_shown_re_runs_the_run_the_page_shows_for_each_row(committed, tmp_path) -> None:
    results, run_ids = committed
    scratch = tmp_path / "scratch"
    result = recheck(results, scratch, "--shown")
    assert result.exit_code == 0, result.output
    assert "2 of 2 re-runs within ± 0.5 Dice points of their records (2 identical)" in result.output
    # the box fill's one run, and of the threshold's row the run of its lowest draw
    first_draw = next(run_id for run_id in run_ids if "fake-threshold" in run_id and "_d0_" in run_id)
    assert {record["run_id"] for record in store.load_records(scratch, "exp")} == {run_ids[0], first_draw}
    assert_one_line_error(recheck(results, scratch, "--shown", "--sample", "1"), "one of the three")


@pytest.mark.parametrize(("device", "threads"), [("cpu (x86_64, 2 threads)", 2), ("cpu (aarch64, 1 threads)", 1),
                                                 ("NVIDIA H200", None), (None, None)])  # fmt: skip
def test_a_cpu_record_names_the_thread_count_it_ran_with(device, threads) -> None:
    from bench.run.recheck import recorded_threads

    assert recorded_threads({"device": device}) == threads
