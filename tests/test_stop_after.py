"""`bench run --stop-after`: a grid that fits a time slice starts no run once its time has passed, exits 0, and the
same command run again goes on where it stopped."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from bench.cli import app
from bench.compute import timing
from bench.compute.timing import Deadline, parse_duration
from bench.errors import BenchError
from bench.records.spec import RunSpec
from bench.records.store import load_records
from bench.run.executors import ExecutorOptions, execute
from bench.run.settings import GridSettings
from tests.conftest import registered_methods
from tests.fakes import MeanThreshold

runner = CliRunner()


@pytest.mark.parametrize(
    ("text", "seconds"), [("8m", 480.0), ("90s", 90.0), ("1h30m", 5400.0), ("0.5h", 1800.0), (" 2m 5s ", 125.0)]
)
def test_durations_are_read_in_hours_minutes_and_seconds(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["8", "m", "8x", "-1m", "8m8", ""])
def test_a_duration_without_units_is_refused_in_one_line(text: str) -> None:
    with pytest.raises(BenchError, match="--stop-after takes a duration such as 8m"):
        parse_duration(text)


def test_a_grid_stops_starting_runs_once_its_time_has_passed_and_resumes(tmp_path, monkeypatch) -> None:
    # a virtual clock that only the fits move, so that loading and scoring cost no time and the test does not
    # depend on how busy the machine is: each fit takes 2.5 s, the limit is 4 s, so runs 1 and 2 start (at 0 s
    # and 2.5 s) and runs 3 and 4 (at 5 s and later) do not
    now = [0.0]
    monkeypatch.setattr(timing, "monotonic", lambda: now[0])

    class TwoAndAHalfSeconds(MeanThreshold):
        name = "fake-slow"

        def fit(self, train, ctx) -> None:
            now[0] += 2.5
            super().fit(train, ctx)

    args = ["run", "--methods", "fake-slow", "--tasks", "blob", "--shots", "2", "--seeds", "0,1,2,3",
            "--results", str(tmp_path)]  # fmt: skip
    with registered_methods({"fake-slow": TwoAndAHalfSeconds}):
        first = runner.invoke(app, [*args, "--stop-after", "4s"])
        assert first.exit_code == 0, first.output
        assert "2 ok, 0 failed, 2 not started (--stop-after 4s passed: run again to go on)" in first.output
        done = load_records(tmp_path, "default")
        assert sorted(record["spec"]["seed"] for record in done) == [0, 1]
        assert {record["status"] for record in done} == {"ok"}

        second = runner.invoke(app, args)
    assert second.exit_code == 0, second.output
    assert "2 already done, 2 to run" in second.output and "2 ok, 0 failed;" in second.output
    assert sorted(record["spec"]["seed"] for record in load_records(tmp_path, "default")) == [0, 1, 2, 3]


@pytest.mark.parametrize("executor", ["inline", "pool"])
def test_a_passed_deadline_starts_nothing_and_writes_nothing(tmp_path, executor: str) -> None:
    specs = [RunSpec("unet", "synthetic", "ellipse", "mask", 3, 0, seed, "quick", None, None, (("epochs", 1),))
             for seed in (0, 1)]  # fmt: skip
    options = ExecutorOptions(executor, 2, deadline=Deadline(0))
    summaries = execute(specs, GridSettings(tmp_path, "grid", device="cpu"), options)
    assert [summary["status"] for summary in summaries] == ["not_started", "not_started"]
    assert not list(tmp_path.rglob("*.json"))


def test_stop_after_is_refused_for_submitted_jobs(tmp_path) -> None:
    result = runner.invoke(app, ["run", "--methods", "unet", "--executor", "submitit", "--stop-after", "8m",
                                 "--results", str(tmp_path)])  # fmt: skip
    assert result.exit_code == 2
    assert "--stop-after needs --executor inline or pool" in result.output
    assert not tmp_path.exists() or not any(tmp_path.iterdir())
    assert len(result.output.strip().splitlines()) == 1
