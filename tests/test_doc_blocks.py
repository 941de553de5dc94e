"""Every number a reader sees is rendered from the records: the committed pages equal their re-render, an edited
number is caught, and each block kind computes what the records give."""

from __future__ import annotations

import difflib
import re
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from bench.cli import app
from bench.errors import BenchError
from bench.report.doc_blocks import BLOCK, Records, default_pages, render_pages, render_text
from bench.run import recheck
from tests.report_records import write_record

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "results"


def _difference(before: str, after: str, name: str) -> str:
    lines = difflib.unified_diff(before.splitlines(), after.splitlines(), name, "rendered", lineterm="")
    return "\n".join(list(lines)[:40])


def test_committed_pages_equal_what_their_records_render() -> None:
    """README.md, docs/ and the results READMEs as committed are what `bench docs render` makes of the records."""
    rendered = render_pages(default_pages(ROOT), RESULTS)
    assert sum(page.blocks for page in rendered) > 0
    stale = [page for page in rendered if page.changed]
    assert not stale, "run `bench docs render`:\n" + "\n".join(
        _difference(page.before, page.after, str(page.path.relative_to(ROOT))) for page in stale
    )


def _edited_number(text: str) -> str:
    """``text`` with the last digit of the first generated number changed."""
    for match in BLOCK.finditer(text):
        digits = list(re.finditer(r"\d", match["body"]))
        if digits:
            at = match.start("body") + digits[-1].start()
            return text[:at] + str((int(text[at]) + 1) % 10) + text[at + 1 :]
    raise AssertionError("no generated number in the page")


@pytest.mark.parametrize("page", ["README.md", "results/hc18-litemedsam/README.md"])
def test_an_edited_number_is_caught_and_restored(page: str) -> None:
    original = (ROOT / page).read_text(encoding="utf-8")
    edited = _edited_number(original)
    assert edited != original
    restored, _ = render_text(edited, Records(RESULTS), page)
    assert restored != edited
    assert restored == render_text(original, Records(RESULTS), page)[0]


@pytest.fixture
def experiment(tmp_path: Path, report_methods) -> Path:
    """UNet (masks) over two seeds and a training-free MedSAM row, with a prompt-module row at two budgets."""
    results = tmp_path / "results"
    for seed, values in ((0, (0.8, 0.6)), (1, (0.9, 0.7))):
        write_record(results, "rep-unet", {"a": values[0], "b": values[1]}, seed=seed, fit_seconds=10.0 + seed)
    write_record(results, "rep-medsam", {"a": 0.95, "b": 0.85}, labels="box", shots=None, params_trainable=0)
    for budget in ("quick", "paper"):
        write_record(results, "rep-ours", {"a": 0.5, "b": 0.5}, labels="box", budget=budget)
    return results


def _render(text: str, results: Path) -> str:
    return render_text(text, Records(results))[0]


def test_value_blocks_compute_from_the_runs(experiment: Path) -> None:
    unet = "experiment=exp method=rep-unet labels=mask shots=10"
    text = (f"<!-- bench:value {unet} -->?<!-- /bench --> "
            f"<!-- bench:value {unet} show=runs -->?<!-- /bench --> "
            f"<!-- bench:value {unet} show=range -->?<!-- /bench --> "
            f"<!-- bench:value {unet} show=fit -->?<!-- /bench --> "
            f"<!-- bench:value {unet} show=device -->?<!-- /bench --> "
            f"<!-- bench:value {unet} seed=1 -->?<!-- /bench -->")  # fmt: skip
    # per-run means 70 and 80: mean 75, population std 5; seed 1 alone: 80
    bodies = [match["body"] for match in BLOCK.finditer(_render(text, experiment))]
    assert bodies == ["75.00 ± 5.00", "2", "70.00–80.00", "10–11", "cpu (x86_64, 2 threads)", "80.00"]


def test_a_value_that_matches_two_table_rows_is_refused(experiment: Path) -> None:
    text = "intro\n<!-- bench:value experiment=exp method=rep-ours -->?<!-- /bench -->"
    with pytest.raises(BenchError, match=r"<text>:2: .*matches 2 Table 1 rows"):
        _render(text, experiment)
    one = "<!-- bench:value experiment=exp method=rep-ours budget=paper -->?<!-- /bench -->"
    assert "50.00" in _render(one, experiment)


@pytest.mark.parametrize(
    ("block", "message"),
    [
        ("<!-- bench:nope -->?<!-- /bench -->", "unknown block kind bench:nope"),
        ("<!-- bench:value experiment=exp method=absent -->?<!-- /bench -->", "no finished run matches"),
        ("<!-- bench:value experiment=exp method=rep-unet colour=red -->?<!-- /bench -->", "not colour"),
        ("<!-- bench:table -->?<!-- /bench -->", "needs experiment="),
        ("<!-- bench:table experiment=other -->?<!-- /bench -->", "no run records in experiment 'other'"),
        ("<!-- bench:claims experiments=exp -->?<!-- /bench -->", "bench report --experiment exp"),
    ],
)
def test_a_block_that_cannot_render_is_one_error_naming_it(experiment: Path, block: str, message: str) -> None:
    with pytest.raises(BenchError, match=re.escape(message)):
        _render(block, experiment)


def test_table_block_is_what_bench_table_prints(experiment: Path) -> None:
    printed = CliRunner().invoke(app, ["table", "--results", str(experiment), "--experiment", "exp"])
    assert printed.exit_code == 0
    rendered = _render("<!-- bench:table experiment=exp -->\n<!-- /bench -->", experiment)
    assert printed.output.strip() in rendered


def test_runs_blocks_add_up_a_grids_runs(experiment: Path) -> None:
    from tests.report_records import write_record

    # a third UNet run that took 3 min from its start to its record
    write_record(experiment, "rep-unet", {"a": 0.7, "b": 0.7}, seed=2, finished="2024-06-01T10:03:00+00:00")
    grid = "<!-- bench:runs experiment=exp method=rep-unet,rep-medsam show={} -->x<!-- /bench -->"
    assert _render(grid.format("count"), experiment) == grid.format("count").replace(">x<", ">4<")
    assert ">6 min 0 s<" in _render(grid.format("wall"), experiment)  # 1 + 1 + 1 + 3 minutes
    assert ">2024-06-01<" in _render(grid.format("when"), experiment)
    one_seed = "<!-- bench:runs experiment=exp method=rep-unet seed=2 show=wall -->x<!-- /bench -->"
    assert ">3 min 0 s<" in _render(one_seed, experiment)
    with pytest.raises(BenchError, match="no finished run matches"):
        _render("<!-- bench:runs experiment=exp method=rep-unet budget=paper -->x<!-- /bench -->", experiment)


def test_recheck_block_shows_the_recheck_files_table_summary_and_notes(experiment: Path) -> None:
    committed = {"run_id": "rep-unet_x", "mean_dice": 0.8, "git_rev": "a" * 40, "device": "cpu", "hparams": {"lr": 1}}
    new = committed | {"status": "ok", "mean_dice": 0.7, "git_rev": "b" * 40, "hparams": {"lr": 2}}
    rows = [recheck.compare(committed, new)]
    (experiment / "exp" / "recheck.md").write_text(recheck.render_markdown(rows, 0.5, "exp", "bench recheck …"))
    body = next(BLOCK.finditer(_render("<!-- bench:recheck experiment=exp -->\n<!-- /bench -->", experiment)))["body"]
    assert body.lstrip().startswith("| run") and "Re-check of" not in body
    row = next(line for line in body.splitlines() if line.startswith("| rep-unet_x"))
    assert [cell.strip() for cell in row.split("|")[1:6]] == ["rep-unet_x", "80.00", "70.00", "-10.00", "outside"]
    assert "0 of 1 re-runs within ± 0.5 Dice points of their records (0 identical)." in body
    assert "lr 1 → 2" in body
    with pytest.raises(BenchError, match="bench recheck --experiment other"):
        _render("<!-- bench:recheck experiment=other -->\n<!-- /bench -->", experiment)
    # another re-check of the experiment, in a file of its own
    (experiment / "exp" / "recheck_shown.md").write_text(recheck.render_markdown([recheck.compare(
        committed, committed | {"status": "ok"})], 0.5, "exp", "bench recheck --shown …"))  # fmt: skip
    shown = _render("<!-- bench:recheck experiment=exp file=recheck_shown.md -->\n<!-- /bench -->", experiment)
    assert "1 of 1 re-runs within ± 0.5 Dice points of their records (1 identical)." in shown
    with pytest.raises(BenchError, match="names a Markdown file in the experiment's folder"):
        _render("<!-- bench:recheck experiment=exp file=../exp/recheck.md -->\n<!-- /bench -->", experiment)


def test_render_command_checks_writes_and_refuses_atomically(experiment: Path, tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    stale = "UNet: <!-- bench:value experiment=exp method=rep-unet labels=mask -->12.34<!-- /bench -->\n"
    page.write_text(stale)
    arguments = ["docs", "render", str(page), "--results", str(experiment)]
    checked = CliRunner().invoke(app, [*arguments, "--check"])
    assert checked.exit_code == 1 and page.read_text() == stale
    written = CliRunner().invoke(app, arguments)
    assert written.exit_code == 0 and "75.00 ± 5.00" in page.read_text()
    assert CliRunner().invoke(app, [*arguments, "--check"]).exit_code == 0

    other = tmp_path / "other.md"
    other.write_text(stale)
    broken = tmp_path / "broken.md"
    broken.write_text("<!-- bench:value experiment=exp method=absent -->1<!-- /bench -->\n")
    failed = CliRunner().invoke(app, ["docs", "render", str(other), str(broken), "--results", str(experiment)])
    assert failed.exit_code == 2 and "Traceback" not in failed.output
    assert other.read_text() == stale  # nothing written when one block fails


def test_headline_marks_quick_cells_and_stand_in_columns(experiment: Path, monkeypatch) -> None:
    from bench.report import front_page, paper

    ours = {"medsam-box": "rep-medsam", "unet": "rep-unet", "prompt-module": "rep-ours"}
    monkeypatch.setattr(front_page, "METHODS", tuple((ours.get(m, m), *rest) for m, *rest in front_page.METHODS))
    monkeypatch.setitem(paper.TABLE1, ("rep-unet", "10", "hc18", "ellipse"), paper.PaperResult(61.0))
    rendered = _render("<!-- bench:headline experiments=exp stand-ins=synthetic=hc18 -->\n<!-- /bench -->", experiment)
    assert "HC18 ellipse*" in rendered
    assert "75.00† (61.00)" in rendered  # UNet at quick, beside the paper's number
    assert "| 50.00 " in rendered  # ours: the paper-budget row, unmarked, no paper number for this task
    assert "90.00 " in rendered and "90.00†" not in rendered  # MedSAM trains nothing: no budget mark


def test_claims_matrix_states_each_claim_once_and_marks_budgets_that_differ(experiment: Path) -> None:
    report = experiment / "exp" / "report"
    report.mkdir()
    verdicts = [  # as bench report writes claims.csv: a row per claim and structure
        ("synthetic", "ellipse", "a", "holds", "differ (paper, quick)", "Ours beats UNet."),
        ("synthetic", "blob", "a", "does not hold", "same (paper)", "Ours beats UNet."),
        ("synthetic", "ellipse", "d", "not measurable here", "–", "Ours loses least."),
    ]
    columns = ["dataset", "task", "claim", "verdict", "budgets", "statement"]
    pd.DataFrame(verdicts, columns=columns).to_csv(report / "claims.csv", index=False)
    rendered = _render("<!-- bench:claims experiments=exp -->\n<!-- /bench -->", experiment)
    rows = {line.split("|")[1].strip(): [cell.strip() for cell in line.split("|")[2:-1]]
            for line in rendered.splitlines() if line.startswith("| (")}  # fmt: skip
    header = next(line for line in rendered.splitlines() if line.startswith("| Claim"))
    assert [cell.strip() for cell in header.split("|")[2:-1]] == ["SYNTHETIC ellipse", "SYNTHETIC blob"]
    assert rows == {"(a) Ours beats UNet.": ["holds ‡", "does not hold"],
                    "(d) Ours loses least.": ["not measurable", "–"]}  # fmt: skip
    # the ‡ line says at which budget each compared method's headline row ran, read from the records
    assert "‡ the compared rows ran at different budgets, so the verdict" in rendered  # no Table 1 method here
    from bench.report import front_page

    ours = {"unet": "rep-unet", "prompt-module": "rep-ours", "medsam-box": "rep-medsam"}
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(front_page, "METHODS", tuple((ours.get(m, m), *rest) for m, *rest in front_page.METHODS))
        rendered = _render("<!-- bench:claims experiments=exp -->\n<!-- /bench -->", experiment)
    assert "‡ the compared rows ran at different budgets (Prompt_module & 100% at `paper`; UNet at `quick`)" in rendered
    inline = "(a) <!-- bench:claim experiment=exp dataset=synthetic task=blob claim=a -->?<!-- /bench -->"
    assert _render(inline, experiment) == inline.replace("?", "does not hold")
    with pytest.raises(BenchError, match="no verdict for synthetic blob b"):
        _render(inline.replace("claim=a", "claim=b"), experiment)


def test_perf_blocks_copy_the_perf_reports_tables_and_measured_line(tmp_path: Path) -> None:
    (tmp_path / "perf.md").write_text(
        "# Performance\n\nMeasured 2026-01-01 by `bench perf --out results/perf.md` (git abc), in 12 s.\n\n"
        "## 1. Encoding throughput\n\nprose\n\n| path | images/s |\n|:--|:--|\n| bare | 1.5 |\n\n"
        "## Wall time per section\n\n| section | seconds |\n|:--|:--|\n| 1. encoding throughput | 3.5 |\n"
    )
    text = ("<!-- bench:perf section=measured -->?<!-- /bench -->|<!-- bench:perf section=1 -->?<!-- /bench -->|"
            "<!-- bench:perf section=time -->?<!-- /bench -->")  # fmt: skip
    bodies = [match["body"] for match in BLOCK.finditer(_render(text, tmp_path))]
    assert bodies == [
        "2026-01-01 by `bench perf --out results/perf.md` (git abc), in 12 s",
        "\n| path | images/s |\n|:--|:--|\n| bare | 1.5 |\n",
        "\n| section | seconds |\n|:--|:--|\n| 1. encoding throughput | 3.5 |\n",
    ]
    with pytest.raises(BenchError, match="results/perf.md has no section 2 .its sections: 1. Encoding throughput"):
        _render("<!-- bench:perf section=2 -->?<!-- /bench -->", tmp_path)
    with pytest.raises(BenchError, match="run `bench perf --out"):
        _render("<!-- bench:perf section=1 -->?<!-- /bench -->", tmp_path / "elsewhere")
