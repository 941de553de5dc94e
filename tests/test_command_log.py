"""`bench run` logs each command that ran runs (wall time, peak memory, load) in the experiment, and results pages
quote those numbers through `bench:command` blocks rather than copying them."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from bench.cli import app
from bench.errors import BenchError
from bench.records.commands import duration_text, logged_commands
from bench.report.doc_blocks import BLOCK, Records, render_text

runner = CliRunner()


@pytest.mark.parametrize(("seconds", "text"), [(38.4, "38 s"), (2741, "45 min 41 s"), (5184, "1 h 26 min 24 s"),
                                               (3600, "1 h 0 min 0 s")])  # fmt: skip
def test_durations_read_as_a_person_says_them(seconds: float, text: str) -> None:
    assert duration_text(seconds) == text


def test_each_command_that_runs_runs_is_logged_and_quoted(tmp_path, monkeypatch) -> None:
    args = ["run", "--methods", "unet", "--tasks", "blob", "--shots", "2", "--seeds", "0", "--draws", "1",
            "--budget", "quick", "--set", "epochs=1", "--set", "input_size=32", "--results", str(tmp_path)]  # fmt: skip
    monkeypatch.setattr("sys.argv", ["/venv/bin/bench", *args])  # what the console script sees
    assert runner.invoke(app, args).exit_code == 0
    assert runner.invoke(app, args).exit_code == 0  # nothing left to run: not logged
    assert runner.invoke(app, [*args, "--dry-run"]).exit_code == 0  # nothing run: not logged
    [entry] = logged_commands(tmp_path, "default")
    assert entry["command"] == "bench " + " ".join(args)
    assert entry["outcome"] == {"ok": 1, "failed": 0, "paused": 0, "not_started": 0, "queued": 0, "claimed": 0}
    assert 0 < entry["wall_seconds"] < 600 and entry["peak_rss_mb"] > 50 and len(entry["load_average"]) == 2

    block = "<!-- bench:command experiment=default contains='--methods unet;--tasks blob' show={} -->?<!-- /bench -->"
    text = " ".join(block.format(show) for show in ("wall", "memory", "commands", "when"))
    bodies = [match["body"] for match in BLOCK.finditer(render_text(text, Records(tmp_path))[0])]
    assert bodies == [duration_text(entry["wall_seconds"]), f"{entry['peak_rss_mb'] / 1024:.1f} GB", "1",
                      entry["started"][:10]]  # fmt: skip
    with pytest.raises(BenchError, match="no command logged in .* matches"):
        render_text(block.replace("--methods unet", "--methods autosam").format("wall"), Records(tmp_path))
