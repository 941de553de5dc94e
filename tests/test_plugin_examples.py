"""The example plugins of examples/, end to end: a plugin is first-class in every table and report.

A plugin file is loaded for `bench run` only (or comes from an installed package's entry point); `bench
table`, `bench report` and `bench figure` then run without it and must still show it under its display
name and group, because the records describe their method (bench/records/descriptions.py).
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from bench.cli import app
from bench.records.store import load_records
from bench.registry import METHODS
from bench.report.figure import qualitative_figure
from tests import conftest
from tests import test_method_contract as contract
from tests.report_records import write_predictions, write_record
from tests.test_method_contract import tiny_task  # noqa: F401 (the contract tests' fixture, requested by name)

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"
OTSU, TINY_CNN = EXAMPLES / "otsu_threshold.py", EXAMPLES / "tiny_cnn.py"
AUTOMATIC = "Automatic — fully trained"
DISPLAY = {"otsu": "Otsu threshold", "unet": "UNet", "tiny-cnn": "Tiny CNN (example)"}
FORBIDDEN = ("bench.methods", "bench.method", "bench.sam.backbones", "torch", "segment_anything",
             "segmentation_models_pytorch", "timm")  # fmt: skip


def invoke(*args: str) -> str:
    outcome = CliRunner().invoke(app, [str(arg) for arg in args])
    assert outcome.exit_code == 0, outcome.output
    return outcome.output


@pytest.fixture
def example_names() -> Iterator[None]:
    """The examples' names are registered by `bench run --plugin` in this process: forget them afterwards."""
    yield
    for name in ("otsu", "tiny-cnn"):
        METHODS.unregister(name)


def _markdown_body(text: str) -> list[list[str]]:
    lines = [line for line in text.splitlines() if line.startswith("|")]
    rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in lines]
    header, body = rows[0], rows[2:]
    group = ""
    for row in body:  # the type names its group once: fill it in for every row
        group = row[0] = row[0] or group
    return [header, *body]


def _recorded_dice(results: Path) -> dict[str, float]:
    """Method → its run's mean Dice × 100, straight from the records (one run of one task each here)."""
    return {r["spec"]["method"]: 100 * float(np.mean([c["dice"] for c in r["cases"]])) for r in load_records(results)}


def test_otsu_plugin_loaded_only_for_run_is_first_class_in_table_report_and_figure(tmp_path, example_names):
    results = tmp_path / "results"
    invoke("run", "--plugin", OTSU, "--plugin", TINY_CNN, "--methods", "otsu,unet,tiny-cnn", "--datasets",
           "synthetic", "--tasks", "blob", "--shots", "10", "--budget", "quick", "--set", "epochs=1",
           "--set", "input_size=64", "--results", results)  # fmt: skip
    for name in ("otsu", "tiny-cnn"):  # the plugin files are not loaded for anything below
        METHODS.unregister(name)
    assert "otsu" not in METHODS
    dice = _recorded_dice(results)
    best = round(max(dice.values()), 2)
    assert round(dice["otsu"], 2) == best, dice  # the case: Otsu beats a UNet trained for one epoch

    header, *body = _markdown_body(invoke("table", "--results", results, "--format", "md"))
    assert header[-1] == "Synthetic Blob"
    by_method = {row[1]: row for row in body}
    # the trained rows ran with --set overrides, and say so; Otsu has none of those fields, so none apply to it
    shown = {method: display if method == "otsu" else f"{display} [epochs=1, input_size=64]"
             for method, display in DISPLAY.items()}  # fmt: skip
    assert set(by_method) == set(shown.values())
    assert by_method["Otsu threshold"][:6] == [AUTOMATIC, "Otsu threshold", "–", "", "", "1"]
    assert by_method[shown["unet"]][:6] == [AUTOMATIC, shown["unet"], "10", "✓", "", "1"]
    for method, display in shown.items():
        cell = by_method[display][-1]
        assert cell.startswith("**") == (round(dice[method], 2) == best), (display, cell)
        assert cell.strip("*") == f"{dice[method]:.2f}"  # one run: its value, no "± 0.00"

    latex = invoke("table", "--results", results, "--format", "latex")
    assert r"\multicolumn{6}{l}{\textit{Automatic --- fully trained}} \\" in latex
    assert rf"Otsu threshold & -- &  &  & 1 & \textbf{{{dice['otsu']:.2f}}} \\" in latex.splitlines()

    csv = pd.read_csv(io.StringIO(invoke("table", "--results", results, "--format", "csv")),
                      keep_default_na=False)  # fmt: skip
    otsu_row = csv[csv["Method"] == "Otsu threshold"].iloc[0]
    assert (otsu_row["Type"], otsu_row["Training samples"], otsu_row["method"]) == (AUTOMATIC, "–", "otsu")
    assert csv.set_index("method")["Synthetic Blob best"].to_dict() == {
        method: round(value, 2) == best for method, value in dice.items()
    }

    report = tmp_path / "report"
    invoke("report", "--results", results, "--out", report, "--reference", "unet")
    lines = (report / "report.md").read_text().splitlines()
    cost_row = next(line for line in lines if line.startswith("| Otsu threshold "))
    assert cost_row.split("|")[4].strip() == "–"  # training samples of a training-free method (after the dataset)
    assert any(line.startswith("| quick") and "| Otsu threshold " in line for line in lines)  # run status
    ratio = ("- Tiny CNN (example) · mask · k=10 · quick [epochs=1, input_size=64] against UNet · mask · k=10 · quick"
             " [epochs=1, input_size=64] (Synthetic): fit time ")
    assert any(line.startswith(ratio) for line in lines)
    assert not any(line.startswith("- Otsu threshold") and " against " in line for line in lines)  # trains nothing

    invoke("figure", "--results", results, "--task", "blob", "--out", tmp_path / "figures")
    assert (tmp_path / "figures" / "qualitative_blob.png").stat().st_size > 1000
    records = load_records(results)
    figure = qualitative_figure(records, results, "blob", images=1)
    titles = [axes.get_title() for axes in figure.axes if axes.get_title()]
    variant = "\n[epochs=1, input_size=64]"  # the --set overrides of the run each column shows
    means = {r["spec"]["method"]: f"\nmean Dice {np.mean([c['dice'] for c in r['cases']]):.2f} over {len(r['cases'])}"
             " cases" for r in records if r["spec"]["task"] == "blob"}  # fmt: skip
    assert titles == ["Synthetic Blob\nimage + ground truth", f"Otsu threshold\nbudget –\nseed 0{means['otsu']}",
                      f"Tiny CNN (example)\nmask, k=10, quick\nseed 0, draw 0{means['tiny-cnn']}{variant}",
                      f"UNet\nmask, k=10, quick\nseed 0, draw 0{means['unet']}{variant}"]  # fmt: skip


def _write_package(site: Path) -> None:
    """A tiny installed package exposing both examples through the `bench.methods` entry-point group: the
    modules and the *.dist-info that importlib.metadata reads, on a folder that goes on PYTHONPATH."""
    package = site / "bench_examples"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    shutil.copy(OTSU, package / "otsu_threshold.py")
    shutil.copy(TINY_CNN, package / "tiny_cnn.py")
    info = site / "bench_examples-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: bench-examples\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(textwrap.dedent(
        """
        [bench.methods]
        otsu = bench_examples.otsu_threshold:OtsuThreshold
        tiny-cnn = bench_examples.tiny_cnn:TinyCNN
        """
    ))  # fmt: skip


def test_example_plugins_from_an_installed_package_render_where_it_is_not_installed(tmp_path) -> None:
    site, results = tmp_path / "site", tmp_path / "results"
    _write_package(site)
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}
    command = [sys.executable, "-c", "from bench.cli import main; main()", "run", "--methods", "otsu,tiny-cnn",
               "--datasets", "synthetic", "--tasks", "blob", "--shots", "3", "--budget", "quick",
               "--set", "epochs=2", "--results", str(results)]  # fmt: skip
    completed = subprocess.run(command, capture_output=True, text=True, timeout=300, env=environment, cwd=tmp_path)
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert "2 ok, 0 failed" in completed.stdout

    assert "otsu" not in METHODS  # this process has no such package
    header, *body = _markdown_body(invoke("table", "--results", results))
    assert [row[:3] for row in body] == [[AUTOMATIC, "Otsu threshold", "–"],
                                         [AUTOMATIC, "Tiny CNN (example) [epochs=2]", "3"]]
    invoke("report", "--results", results, "--out", tmp_path / "report", "--reference", "tiny-cnn")
    text = (tmp_path / "report" / "report.md").read_text()
    assert "| Otsu threshold " in text and "| Tiny CNN (example) " in text


@pytest.mark.parametrize("path", [OTSU, TINY_CNN], ids=["otsu", "tiny-cnn"])
def test_examples_pass_the_method_contract(path, request, example_names, tmp_path) -> None:
    """What `pytest tests/test_method_contract.py --bench-plugin FILE -k NAME` runs, in this process: the
    pytest hook of tests/conftest.py registers the file, then each contract test runs on its methods."""
    name = {OTSU: "otsu", TINY_CNN: "tiny-cnn"}[path]
    task = request.getfixturevalue("tiny_task")
    conftest.pytest_configure(SimpleNamespace(getoption={"--bench-plugin": [str(path)]}.get))
    checks = contract.TestMethodContract()
    for labels in METHODS.get(name).labels:
        checks.test_declarations(name, labels)
        checks.test_fit_predict_shapes_determinism_and_resuming(name, labels, task, tmp_path / labels)


def test_bench_plugin_option_with_a_missing_file_is_a_usage_error(tmp_path) -> None:
    options = {"--bench-plugin": [str(tmp_path / "missing.py")]}
    with pytest.raises(pytest.UsageError, match="missing.py' does not exist"):
        conftest.pytest_configure(SimpleNamespace(getoption=options.get))


REPORT_SCRIPT = """
import json, sys
from pathlib import Path
from bench.records import store
from bench.records import names
from bench.report import build, figure, plots, stats, table, timing
results = Path(sys.argv[1])
records = store.load_records(results)
markdown = table.render_table(store.runs_frame(records))
build.write_report(results, results / "report", reference="unet")
drawn = figure.qualitative_figure(records, results, "ellipse", images=1)
titles = [axes.get_title() for axes in drawn.axes if axes.get_title()]
forbidden = sorted(m for m in sys.modules for f in {FORBIDDEN} if m == f or m.startswith(f + "."))
print(json.dumps({"table": markdown, "titles": titles, "forbidden": forbidden}))
"""


def test_report_imports_no_method_code_and_old_records_ask_the_registry(tmp_path) -> None:
    """Records of built-ins written before records described themselves render with the registry's names,
    read without importing the plugins; a described record of a method nobody has installed renders too."""
    results = tmp_path / "results"
    ids = [f"syn{140 + i:03d}" for i in range(4)]
    masks = {case: np.eye(256, dtype=bool) for case in ids}
    for method, labels, shots in (("unet", "mask", 10), ("prompt-module", "box", 10), ("medsam-box", "box", None)):
        record = write_record(results, method, dict.fromkeys(ids, 0.5), labels=labels, shots=shots, described=False)
        write_predictions(results, record, masks)
    described = {"display_name": "Otsu threshold", "group": AUTOMATIC, "training_free": True, "prompted": False,
                 "labels": ["mask"], "uses_backbone": False}  # fmt: skip
    write_predictions(results, write_record(results, "otsu", dict.fromkeys(ids, 0.6), shots=None,
                                            method_info=described), masks)  # fmt: skip
    script = REPORT_SCRIPT.replace("{FORBIDDEN}", repr(FORBIDDEN))
    completed = subprocess.run([sys.executable, "-c", script, str(results)], capture_output=True, text=True,
                               timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})  # fmt: skip
    assert completed.returncode == 0, completed.stderr
    output = json.loads(completed.stdout.splitlines()[-1])
    assert output["forbidden"] == []
    header, *body = _markdown_body(output["table"])
    assert [row[:5] for row in body] == [
        ["Promptable", "MedSAM (box prompt)", "–", "", "✓"],
        [AUTOMATIC, "Otsu threshold", "–", "", ""],
        [AUTOMATIC, "UNet", "10", "✓", ""],
        ["Ours", "Prompt module (ours)", "10", "", "✓"],
    ]
    assert body[1][-1] == "**60.00**"  # the best automatic result (one run: no ±); MedSAM is prompted, never bold
    # training-free runs have no budget ("–", as in the table); every column says its mean Dice (0.5 and 0.6 above)
    assert output["titles"][1:] == ["MedSAM (box prompt)\nbox, budget –\nseed 0\nmean Dice 0.50 over 4 cases",
                                    "Otsu threshold\nbudget –\nseed 0\nmean Dice 0.60 over 4 cases",
                                    "UNet\nmask, k=10, quick\nseed 0, draw 0\nmean Dice 0.50 over 4 cases",
                                    "Prompt module (ours)\nbox, k=10, quick\nseed 0, draw 0\n"
                                    "mean Dice 0.50 over 4 cases"]  # fmt: skip
    report = (results / "report" / "report.md").read_text()
    assert "| Prompt module (ours) " in report and "Prompt module (ours) · box · k=10 · quick against UNet" in report


def test_the_newest_record_describes_a_method_and_beats_the_registry(tmp_path) -> None:
    results = tmp_path / "results"
    ids = ["syn140", "syn141"]
    for seed, (display, finished) in enumerate((("U-Net v2", "2024-07-01T09:00:00+00:00"),
                                                ("U-Net v1", "2024-06-01T09:00:00+00:00"))):  # fmt: skip
        described = {"display_name": display, "group": "Ours", "training_free": False, "prompted": False}
        write_record(results, "unet", dict.fromkeys(ids, 0.5), seed=seed, method_info=described, finished=finished)
    header, *body = _markdown_body(invoke("table", "--results", results))
    assert [row[:3] for row in body] == [["Ours", "U-Net v2", "10"]]


def test_readme_walkthrough_matches_the_examples() -> None:
    section = (REPO / "docs" / "adding-a-method.md").read_text()
    declared = section.split("```python\n")[1].split("```")[0]
    example_lines = {line.split("  #")[0].strip() for line in OTSU.read_text().splitlines()}
    for line in declared.splitlines():
        assert line.split("  #")[0].strip() in example_lines, line  # the README's class is the example's
    for path in re.findall(r"examples/\w+\.py", section):
        assert (REPO / path).is_file(), path
    assert section.count("otsu_threshold:OtsuThreshold") == 1  # the entry point names the class; built-ins need no line
    assert "class OtsuThreshold(Method):" in example_lines
