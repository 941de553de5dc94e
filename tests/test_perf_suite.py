"""`bench perf` without a subcommand: the whole suite in tiny mode, its report, and its one-line errors."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from bench.cli import app
from bench.data import Dataset, Task, load_task
from bench.registry import DATASETS, METHODS

SECTIONS = (
    "## 1. Encoding throughput",
    "## 2. Cold grid vs warm embedding cache",
    "## 3. Fit time per method",
    "## 4. Tightness-loss memory",
    "## 5. Peak memory per run",
    "## Wall time per section",
)


class PerfEllipses(Dataset):
    """Three training and three test images of the synthetic dataset, so that every run takes about a second."""

    name = "perf-ellipses"
    display_name = "Perf ellipses"
    tasks = ("ellipse",)
    needs_data_root = False

    def load(self, task: str) -> Task:
        full = load_task("synthetic", "ellipse")
        return Task(self.name, task, train=full.train[:3], val=full.val[:1], test=full.test[:3])


@pytest.fixture
def perf_ellipses():
    DATASETS.register(PerfEllipses.name, PerfEllipses)
    yield PerfEllipses
    DATASETS.unregister(PerfEllipses.name)


def tiny_suite(out: Path, *extra: str) -> list[str]:
    return ["perf", "--tiny", "--dataset", "perf-ellipses", "--shots", "3", "--epochs", "1", "--device", "cpu",
            "--out", str(out), *extra]  # fmt: skip


def section(report: str, heading: str) -> str:
    start = report.index(heading)
    following = report.find("\n## ", start + len(heading))
    return report[start : following if following >= 0 else len(report)]


def table(text: str) -> list[dict[str, str]]:
    """The rows of the first Markdown table in ``text``, by column name."""
    lines = [line for line in text.splitlines() if line.startswith("|")]
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    return [dict(zip(header, (cell.strip() for cell in line.strip("|").split("|")), strict=True))
            for line in lines[2:]]  # fmt: skip


def bold_number(text: str) -> float:
    return float(re.search(r"\*\*([0-9.]+)×?\*\*", text).group(1))


def test_the_suite_reports_every_section_with_measured_numbers(tmp_path, perf_ellipses, isolated_cache) -> None:
    out = tmp_path / "reports" / "perf.md"
    result = CliRunner().invoke(app, tiny_suite(out))
    assert result.exit_code == 0, result.output
    report = out.read_text()
    assert [heading in report for heading in SECTIONS] == [True] * len(SECTIONS)
    assert f"torch {torch.__version__}" in report and "CPU: " in report and "torch threads: " in report
    assert "`bench perf --out " in report and "--tiny`" in report and "Measured 2" in report

    encode = section(report, SECTIONS[0])
    harness, bare = (float(row["images/s"]) for row in table(encode))
    assert harness > 0 and bare > 0
    assert bold_number(encode) == pytest.approx(harness / bare, abs=2e-3)

    grid = section(report, SECTIONS[1])
    cold, warm = table(grid)
    assert float(cold["wall s"]) > 0 and float(warm["wall s"]) > 0
    # cold: medsam-box encodes the 3 test images, the prompt module its 3 support images; warm: nothing
    assert (int(cold["images encoded"]), int(warm["images encoded"])) == (6, 0)
    read = {name: int(row["embeddings read from cache"]) for name, row in (("cold", cold), ("warm", warm))}
    assert read["warm"] == int(cold["images encoded"]) + read["cold"]
    assert bold_number(grid) == pytest.approx(float(cold["wall s"]) / float(warm["wall s"]), rel=0.1)

    fits = {row["method"]: row for row in table(section(report, SECTIONS[2]))}
    assert set(fits) == {"prompt-module", "autosam", "transunet", "unet"}
    reference = float(fits["prompt-module"]["s/epoch"])
    for row in fits.values():
        assert row["epochs"] == "1" and float(row["fit s"]) > 0 and float(row["peak memory MiB"]) >= 0
        per_epoch = float(row["s/epoch"])
        assert per_epoch == pytest.approx(float(row["fit s"]), abs=1e-2)
        # one epoch, so s/epoch is the fit time to 3 decimals: the printed ratio (2 decimals) must lie in the
        # range those rounded times allow, which is wide when a tiny fit takes a few hundredths of a second
        lowest, highest = (per_epoch - 5e-4) / (reference + 5e-4), (per_epoch + 5e-4) / (reference - 5e-4)
        assert lowest - 5e-3 <= float(row["fit ÷ prompt module"]) <= highest + 5e-3

    loss = {row["variant"]: row for row in table(section(report, SECTIONS[3]))}
    assert set(loss) == {"row/column sums", "band masks"}
    assert len({row["loss"] for row in loss.values()}) == 1  # the two formulations compute the same value
    assert all(float(row["ms per forward + backward"]) > 0 for row in loss.values())

    memory = table(section(report, SECTIONS[4]))
    measured = {row["method"] for row in memory if re.fullmatch(r"\d+", row["peak memory MiB"])}
    assert measured == set(METHODS.names())  # every registered method, the extra ones included
    assert {row["measure"] for row in memory} == {"cpu-rss-increase"}

    walls = table(section(report, SECTIONS[5]))
    assert len(walls) == 5 and all(float(row["seconds"]) > 0 for row in walls)
    # the suite measured against its own temporary cache: the user's was neither read nor filled
    assert not list(isolated_cache.rglob("*.npy"))


def test_subcommands_still_run_without_the_suite(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    decoded = CliRunner().invoke(
        app, ["perf", "decode", "--backbone", "tiny-sam-test", "--images", "2", "--repeats", "1", "--device", "cpu"]
    )
    assert decoded.exit_code == 0, decoded.output
    assert "decode: tiny-sam-test" in decoded.output
    assert not (tmp_path / "results").exists()  # the suite's callback did not run


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--dataset", "nope"], "nope"),
        (["--task", "head"], "has no task 'head'"),
        (["--shots", "50"], "has 3 training images"),
        (["--backbone", "nope"], "nope"),
    ],
)
def test_bad_input_ends_in_one_error_line_and_writes_nothing(tmp_path, perf_ellipses, options, message) -> None:
    out = tmp_path / "perf.md"
    result = CliRunner().invoke(app, tiny_suite(out, *options))
    assert result.exit_code == 2, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and message in errors[0], result.output
    assert "Traceback" not in result.output and not out.exists()


def test_a_folder_as_the_report_is_refused(tmp_path, perf_ellipses) -> None:
    result = CliRunner().invoke(app, tiny_suite(tmp_path))
    assert result.exit_code == 2 and "is a folder" in result.output
