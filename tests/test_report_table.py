"""Table 1 from hand-written records: layout, numbers (checked against numpy), formats, LaTeX."""

from __future__ import annotations

import io
import re
import shutil
import subprocess

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from bench.cli import app
from tests.report_records import write_record

IDS = [f"syn{140 + i:03d}" for i in range(8)]
NUMBER = re.compile(r"\d+\.\d\d")
# (method, labels, base Dice): base + per-case noise; every method has k = 1 and 10, 2 seeds × 2 draws
GRID = [("rep-unet", "mask", 0.60), ("rep-autosam", "mask", 0.70), ("rep-ours", "box", 0.78)]


pytestmark = pytest.mark.usefixtures("report_methods")


@pytest.fixture
def grid(tmp_path):
    """Records of a small grid on synthetic, and the expected cells computed here with numpy."""
    rng = np.random.default_rng(0)
    run_means: dict[tuple, list[float]] = {}
    for task in ("ellipse", "blob"):
        for method, labels, base in GRID:
            for shots in (1, 10):
                for draw in (0, 1):
                    for seed in (0, 1):
                        dice = np.clip(base + 0.01 * shots + rng.normal(0, 0.05, len(IDS)), 0, 1)
                        write_record(tmp_path, method, dict(zip(IDS, dice.tolist(), strict=True)), task=task,
                                     labels=labels, shots=shots, draw=draw, seed=seed)  # fmt: skip
                        run_means.setdefault((method, labels, str(shots), task), []).append(dice.mean())
        write_record(tmp_path, "rep-medsam", dict.fromkeys(IDS, 0.95), task=task, labels="box", shots=None)
        run_means[("rep-medsam", "box", "all", task)] = [0.95]
    # an unregistered method, on one task only: rendered as "Other" with a missing cell
    write_record(tmp_path, "retired-net", dict.fromkeys(IDS, 0.5), shots=10)
    run_means[("retired-net", "mask", "10", "ellipse")] = [0.5]
    # a failed run never enters the table
    write_record(tmp_path, "rep-unet", {}, shots=10, seed=7, status="failed", error="RuntimeError: boom")
    expected = {key: (100 * np.mean(v), 100 * np.std(v)) for key, v in run_means.items()}
    return tmp_path, expected


def _table(results, *options: str) -> str:
    outcome = CliRunner().invoke(app, ["table", "--results", str(results), *options])
    assert outcome.exit_code == 0, outcome.output
    return outcome.output


def _markdown_rows(text: str) -> list[list[str]]:
    lines = [line for line in text.splitlines() if line.startswith("|")]
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in lines[:1] + lines[2:]]


def test_markdown_groups_rows_by_type_and_matches_numpy(grid) -> None:
    results, expected = grid
    rows = _markdown_rows(_table(results, "--format", "md"))
    header, body = rows[0], rows[1:]
    assert header == ["Type", "Method", "Training samples", "Mask labels", "BB labels", "Runs",
                      "Synthetic Ellipse", "Synthetic Blob"]  # fmt: skip
    # types in the paper's order, each named once; the unknown method last under "Other"
    assert [row[0] for row in body if row[0]] == [
        "Promptable", "Automatic — fully trained", "Automatic — adapted", "Ours", "Other",
    ]  # fmt: skip
    methods = [row[1] for row in body]
    assert methods == ["MedSAM", "UNet", "UNet", "AutoSAM", "AutoSAM", "Prompt_module & 100%",
                       "Prompt_module & 100%", "retired-net"]  # fmt: skip
    assert body[0][2:5] == ["–", "", "✓"]  # training-free: no training samples; prompted with boxes
    assert body[1][2:5] == ["1", "✓", ""]
    assert body[6][2:5] == ["10", "", "✓"]
    assert body[-1][7] == "–"  # retired-net has no blob run
    # runs per row; per column where they differ
    assert [row[5] for row in body] == ["1"] + ["4"] * 6 + ["1 / 0"]

    names = {"MedSAM": "rep-medsam", "UNet": "rep-unet", "AutoSAM": "rep-autosam",
             "Prompt_module & 100%": "rep-ours", "retired-net": "retired-net"}  # fmt: skip
    checked = 0
    for row in body:
        method = names[row[1]]
        labels = "mask" if row[3] == "✓" else "box"
        shots = "all" if row[2] == "–" else row[2]
        for task, cell in zip(("ellipse", "blob"), row[6:], strict=True):
            if (method, labels, shots, task) not in expected:
                continue
            mean, std = expected[(method, labels, shots, task)]
            single = row[5].startswith("1")  # one run: its value, no "± 0.00"
            assert cell.strip("*") == (f"{mean:.2f}" if single else f"{mean:.2f} ± {std:.2f}")
            checked += 1
    assert checked == 15
    caption = _table(results, "--format", "md").split("Table 1. ")[1]
    assert "Budget: quick. Bold: the best automatic result per column. Precision: fp32." in caption
    assert "population std (ddof 0)" in caption


def test_best_automatic_result_is_bold_per_column(grid) -> None:
    results, expected = grid
    rows = _markdown_rows(_table(results, "--format", "md"))[1:]
    for column, task in ((6, "ellipse"), (7, "blob")):
        bold = [row[1] for row in rows if row[column].startswith("**")]
        automatic = {k: v[0] for k, v in expected.items() if k[3] == task and k[0] != "rep-medsam"}
        best = max(automatic, key=automatic.get)
        assert bold == ["Prompt_module & 100%"] and best[0] == "rep-ours"
        # MedSAM is higher still, but it is prompted, not automatic
        assert expected[("rep-medsam", "box", "all", task)][0] > automatic[best]


def test_hd95_table_bolds_the_lowest(grid) -> None:
    results, _ = grid
    rows = _markdown_rows(_table(results, "--format", "md", "--metric", "hd95"))[1:]
    column = [(row[1], float(NUMBER.findall(row[6])[0]), row[6].startswith("**")) for row in rows]
    automatic = [(name, value) for name, value, _ in column if name not in ("MedSAM", "retired-net")]
    lowest = min(value for _, value in automatic)
    assert [name for name, value, bold in column if bold] == [n for n, v in automatic if v == lowest]
    assert "HD95" in _table(results, "--format", "md", "--metric", "hd95")


def test_hd95_caption_names_each_dataset_unit_from_the_records(tmp_path) -> None:
    write_record(tmp_path, "rep-unet", dict.fromkeys(IDS, 0.6), dataset="hc18", task="head", spacing_unit="mm")
    write_record(tmp_path, "rep-unet", dict.fromkeys(IDS, 0.6), spacing_unit="px")
    caption = _table(tmp_path, "--metric", "hd95").split("Table 1. ")[1]
    assert caption.startswith("HD95 in mm for HC18; in pixels for Synthetic (lower is better)")
    write_record(tmp_path, "rep-unet", dict.fromkeys(IDS, 0.6), dataset="camus", task="lv", described=False)
    caption = _table(tmp_path, "--metric", "hd95").split("Table 1. ")[1]  # CAMUS's record does not say
    assert caption.startswith("HD95 in mm, in pixels where a dataset has no pixel spacing (lower is better)")


def test_csv_and_latex_agree_with_markdown_number_for_number(grid) -> None:
    results, _ = grid
    markdown = _markdown_rows(_table(results, "--format", "md"))[1:]
    csv = pd.read_csv(io.StringIO(_table(results, "--format", "csv")), dtype={"Training samples": str})
    latex_rows = [line for line in _table(results, "--format", "latex").splitlines()
                  if line.endswith(r"\\") and "multicolumn" not in line and "Method" not in line]  # fmt: skip
    assert len(markdown) == len(csv) == len(latex_rows)
    for md_row, (_, csv_row), tex_row in zip(markdown, csv.iterrows(), latex_rows, strict=True):
        md_numbers = [float(n) for cell in md_row[6:] for n in NUMBER.findall(cell)]
        # the CSV keeps a single run's std (0) beside its runs count; the printed tables show its value alone
        csv_numbers = [float(csv_row[f"Synthetic {task} {stat}"]) for task in ("Ellipse", "Blob")
                       for stat in ("mean", "std") if csv_row[f"Synthetic {task} runs"] > (stat == "std")]  # fmt: skip
        tex_numbers = [float(n) for n in NUMBER.findall(tex_row)]
        assert md_numbers == pytest.approx(csv_numbers)
        assert md_numbers == pytest.approx(tex_numbers)
        assert csv_row["budget"] == "quick"


def _strip_escaped_braces(text: str) -> str:
    return text.replace(r"\{", "").replace(r"\}", "")


def check_latex_structure(latex: str, columns: int) -> None:
    body = _strip_escaped_braces(latex)
    assert body.count("{") == body.count("}")
    assert latex.count(r"\begin{tabular}") == latex.count(r"\end{tabular}") == 1
    spec = re.search(r"\\begin\{tabular\}\{([lcr]+)\}", latex).group(1)
    assert len(spec) == columns
    rows = latex.split(r"\begin{tabular}")[1].split(r"\end{tabular}")[0]
    for line in rows.splitlines():
        if not line.endswith(r"\\"):
            continue
        separators = len(re.findall(r"(?<!\\)&", line))
        spans = [int(n) for n in re.findall(r"\\multicolumn\{(\d+)\}", line)]
        assert separators + 1 - len(spans) + sum(spans) == columns, line


def test_latex_is_booktabs_with_grouped_header_and_escaped_names(grid, tmp_path) -> None:
    results, _ = grid
    latex = _table(results, "--format", "latex")
    assert r"\toprule" in latex and r"\bottomrule" in latex and r"\midrule" in latex
    assert r"\multicolumn{2}{c}{Synthetic}" in latex and r"\cmidrule(lr){6-7}" in latex
    assert r"\multicolumn{7}{l}{\textit{Automatic --- fully trained}}" in latex
    assert r"Prompt\_module \& 100\%" in latex and "Prompt_module & 100%" not in latex
    assert r"\textbf{" in latex and "Budget: quick." in latex
    check_latex_structure(latex, columns=7)

    if shutil.which("pdflatex") is None:
        pytest.skip("pdflatex is not installed: the structural check above is all that ran")
    document = tmp_path / "table.tex"
    document.write_text("\\documentclass{article}\n\\usepackage{booktabs,amssymb}\n\\begin{document}\n"
                        + latex + "\\end{document}\n")  # fmt: skip
    compiled = subprocess.run(
        ["pdflatex", "-interaction=nonstopmode", "-halt-on-error", document.name],
        cwd=tmp_path, capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert compiled.returncode == 0, compiled.stdout[-2000:]
    assert (tmp_path / "table.pdf").stat().st_size > 0
    assert "Missing character" not in (tmp_path / "table.log").read_text(errors="replace")


def test_stats_marks_significant_differences_from_the_reference(tmp_path) -> None:
    reference = np.linspace(0.5, 0.8, 10)
    write_record(tmp_path, "rep-ours", dict(zip(IDS + ["syn150", "syn151"], reference, strict=True)),
                 labels="box")  # fmt: skip
    ids = IDS + ["syn150", "syn151"]
    # rep-unet is lower on all ten cases (p = 2 / 2^10); rep-autosam alternates around the reference
    write_record(tmp_path, "rep-unet", dict(zip(ids, reference - 0.1 - 0.01 * np.arange(10), strict=True)))
    alternating = reference + 0.02 * np.array([1, -1] * 5)
    write_record(tmp_path, "rep-autosam", dict(zip(ids, alternating, strict=True)))

    rows = _markdown_rows(_table(tmp_path, "--format", "md", "--stats", "--reference", "rep-ours"))[1:]
    marked = {row[1]: row[6].endswith("†") for row in rows}
    assert marked == {"UNet": True, "AutoSAM": False, "Prompt_module & 100%": False}
    assert "Holm" in _table(tmp_path, "--format", "md", "--stats", "--reference", "rep-ours")
    latex = _table(tmp_path, "--format", "latex", "--stats", "--reference", "rep-ours")
    assert latex.count(r"$^\dagger$") == 2  # the marked cell and the caption's explanation


def test_stats_without_reference_runs_is_one_clear_error(grid) -> None:
    results, _ = grid
    outcome = CliRunner().invoke(app, ["table", "--results", str(results), "--stats", "--reference", "nope"])
    assert outcome.exit_code == 2
    assert "reference method 'nope'" in outcome.output and "Traceback" not in outcome.output


def test_mixed_budgets_get_a_budget_column_and_say_so(tmp_path) -> None:
    write_record(tmp_path, "rep-unet", dict.fromkeys(IDS, 0.6), budget="quick")
    write_record(tmp_path, "rep-unet", dict.fromkeys(IDS, 0.8), budget="paper")
    text = _table(tmp_path, "--format", "md")
    rows = _markdown_rows(text)
    assert rows[0][5] == "Budget" and sorted(row[5] for row in rows[1:]) == ["paper", "quick"]
    assert "Records mix budgets (paper, quick)" in text
    check_latex_structure(_table(tmp_path, "--format", "latex"), columns=7)


def test_a_method_run_with_two_backbones_gets_a_row_for_each(tmp_path) -> None:
    write_record(tmp_path, "rep-ours", dict.fromkeys(IDS, 0.7), labels="box", backbone="litemedsam")
    write_record(tmp_path, "rep-ours", dict.fromkeys(IDS, 0.9), labels="box", backbone="medsam-vit-b")
    write_record(tmp_path, "rep-unet", dict.fromkeys(IDS, 0.6))
    rows = {row[1]: row[6] for row in _markdown_rows(_table(tmp_path, "--format", "md"))[1:]}
    assert rows == {"UNet": "60.00", "Prompt_module & 100% (litemedsam)": "70.00",
                    "Prompt_module & 100% (medsam-vit-b)": "**90.00**"}  # fmt: skip


def test_unknown_format_is_a_user_error(grid) -> None:
    results, _ = grid
    outcome = CliRunner().invoke(app, ["table", "--results", str(results), "--format", "xlsx"])
    assert outcome.exit_code == 2 and "--format takes md, latex, csv" in outcome.output


def _csv(results, *options: str) -> pd.DataFrame:
    return pd.read_csv(io.StringIO(_table(results, "--format", "csv", *options)), keep_default_na=False)


def test_bold_is_per_column_and_budget_the_same_in_every_format_and_the_caption_says_so(tmp_path) -> None:
    for budget, (unet, ours) in {"quick": (0.6, 0.7), "paper": (0.8, 0.75)}.items():
        for seed in (0, 1):
            write_record(tmp_path, "rep-unet", dict.fromkeys(IDS, unet + 0.01 * seed), budget=budget, seed=seed)
            write_record(tmp_path, "rep-ours", dict.fromkeys(IDS, ours), labels="box", budget=budget, seed=seed)
    # training-free: no budget changes it, so it competes in both (and wins neither)
    write_record(tmp_path, "rep-medsam", dict.fromkeys(IDS, 0.95), labels="box", shots=None, budget="paper")
    text = _table(tmp_path, "--format", "md")
    rows = _markdown_rows(text)[1:]
    bold = sorted((row[1], row[5]) for row in rows if row[7].startswith("**"))
    assert bold == [("Prompt_module & 100%", "quick"), ("UNet", "paper")]
    assert [row[5] for row in rows if row[1] == "MedSAM"] == ["–"]  # training-free: no budget
    assert "among rows of the same budget" in text.split("Table 1. ")[1]
    csv = _csv(tmp_path)
    best = csv[csv["Synthetic Ellipse best"]]
    assert sorted(zip(best["Method"], best["Budget"], strict=True)) == bold
    latex = _table(tmp_path, "--format", "latex")
    assert latex.count(r"\textbf{") == 2 and "among rows of the same budget" in latex
    check_latex_structure(latex, columns=7)


def test_set_overrides_show_on_their_rows_even_when_every_row_shares_them(tmp_path) -> None:
    write_record(tmp_path, "rep-unet", dict.fromkeys(IDS, 0.6), overrides={"epochs": 2})
    text = _table(tmp_path, "--format", "md")
    assert [row[1] for row in _markdown_rows(text)[1:]] == ["UNet [epochs=2]"]
    assert "--set overrides" in text.split("Table 1. ")[1]
