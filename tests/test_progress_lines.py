"""Long work shows its progress where no bar can be drawn: a log file, a batch job's output."""

from __future__ import annotations

import io

from rich.console import Console
from rich.progress import Progress
from typer.testing import CliRunner

from bench.cli import app
from bench.cli.common import ProgressBars


def tracked_output(terminal: bool, line_every: float, steps: int = 3) -> tuple[list[int], str]:
    stream = io.StringIO()
    console = Console(file=stream, force_terminal=terminal, width=100)
    with Progress(console=console, transient=True) as progress:
        track = ProgressBars(progress, line_every=line_every).for_run(None)
        seen = list(track(range(steps), description="method epochs"))
    return seen, "\n".join(line for line in stream.getvalue().splitlines() if line.strip())


def test_a_log_file_gets_a_line_per_interval_and_one_at_the_end() -> None:
    seen, every_step = tracked_output(terminal=False, line_every=0.0)
    assert seen == [0, 1, 2]
    assert [line.split(",")[0].strip() for line in every_step.splitlines()] == [
        "method epochs 1/3", "method epochs 2/3", "method epochs 3/3"]  # fmt: skip
    assert every_step.splitlines()[-1].endswith("0:00 elapsed")

    _, hourly = tracked_output(terminal=False, line_every=3600.0)
    assert [line.split(",")[0].strip() for line in hourly.splitlines()] == ["method epochs 3/3"]


def test_a_dumb_terminal_draws_no_bar_so_it_gets_the_lines(monkeypatch) -> None:
    monkeypatch.setenv("TERM", "dumb")
    _, lines = tracked_output(terminal=True, line_every=3600.0)
    assert [line.split(",")[0].strip() for line in lines.splitlines()] == ["method epochs 3/3"]


def test_a_terminal_gets_the_bar_and_no_lines() -> None:
    seen, drawn = tracked_output(terminal=True, line_every=0.0)
    assert seen == [0, 1, 2]
    assert "method epochs" in drawn and "elapsed" not in drawn


def test_bench_run_into_a_log_shows_each_fit_progress(tmp_path, fake_methods) -> None:
    result = CliRunner().invoke(app, ["run", "--methods", "fake-threshold", "--budget", "paper", "--shots", "2",
                                      "--results", str(tmp_path)])  # fmt: skip
    assert result.exit_code == 0, result.output
    planned = int(result.output.split(" runs planned")[0].split()[-1])
    assert planned > 0
    assert result.output.count("fake-threshold epochs 3/3") == planned, result.output
