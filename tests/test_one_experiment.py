"""Tables, reports and figures read one experiment: never records of two pooled, never one run counted twice."""

from __future__ import annotations

import shutil
from io import StringIO

import pandas as pd
import pytest
from typer.testing import CliRunner

from bench.cli import app
from bench.records import store
from bench.report.build import write_report
from tests.report_records import write_record

pytestmark = pytest.mark.usefixtures("report_methods")
IDS = ["syn140", "syn141"]


def _cell(results, *options: str) -> tuple[float, int]:
    """The mean and run count of the one cell of a one-row table."""
    outcome = CliRunner().invoke(app, ["table", "--results", str(results), "--format", "csv", *options])
    assert outcome.exit_code == 0, outcome.output
    (row,) = pd.read_csv(StringIO(outcome.output)).to_dict("records")
    mean = next(value for key, value in row.items() if key.endswith(" mean"))
    runs = next(value for key, value in row.items() if key.endswith(" runs"))
    return mean, runs


@pytest.fixture
def two_experiments(tmp_path):
    """The same run spec in two experiments ("main" and "cross", as a `bench evaluate` experiment copies its
    training run), with different Dice, and a second run only in "main"."""
    results = tmp_path / "results"
    write_record(results, "rep-unet", dict.fromkeys(IDS, 0.80), experiment="main")
    write_record(results, "rep-unet", dict.fromkeys(IDS, 0.60), seed=1, experiment="main")
    write_record(results, "rep-unet", dict.fromkeys(IDS, 0.20), experiment="cross")
    return results


def test_several_experiments_and_none_named_is_one_line_listing_them(two_experiments):
    outcome = CliRunner().invoke(app, ["table", "--results", str(two_experiments)])
    assert outcome.exit_code == 2
    (line,) = outcome.output.strip().splitlines()
    assert "name one with --experiment: cross, main" in line
    for command in (["report", "--out", str(two_experiments / "r")], ["figure", "--task", "ellipse"]):
        refused = CliRunner().invoke(app, [*command, "--results", str(two_experiments)])
        assert refused.exit_code == 2 and "--experiment" in refused.output, refused.output
    assert not (two_experiments / "r").exists()


def test_a_named_experiment_counts_only_its_own_runs(two_experiments):
    # the mean of its two runs (80, 60), not pooled with the other experiment's copy of seed 0 (20)
    assert _cell(two_experiments, "--experiment", "main") == (pytest.approx(70.0), 2)
    assert _cell(two_experiments, "--experiment", "cross") == (pytest.approx(20.0), 1)


def test_default_experiment_is_read_when_present(two_experiments):
    write_record(two_experiments, "rep-unet", dict.fromkeys(IDS, 0.5), experiment=store.DEFAULT_EXPERIMENT)
    assert _cell(two_experiments) == (pytest.approx(50.0), 1)


def test_the_only_experiment_is_read_without_naming_it(tmp_path):
    write_record(tmp_path, "rep-unet", dict.fromkeys(IDS, 0.4), experiment="own")
    assert store.choose_experiment(tmp_path) == "own"
    assert _cell(tmp_path) == (pytest.approx(40.0), 1)


def test_a_copied_record_counts_once(two_experiments):
    """A second file of one run id (a record copied under another name) is skipped with a warning, in every
    part of the report."""
    runs = store.runs_folder(two_experiments, "main")
    original = sorted(runs.glob("*.json"))[0]
    shutil.copy(original, runs / "copy-of-a-run.json")
    with pytest.warns(UserWarning, match="a second record of run"):
        records = store.load_records(two_experiments, "main")
    assert len(records) == 2
    with pytest.warns(UserWarning, match="a second record of run"):
        written = write_report(two_experiments, two_experiments / "report", "main", reference="rep-unet")
    assert "From 2 run records" in written[-1].read_text()
