"""`bench report`: the paper's claims checked, the training-time report, run status, statistics, diagnostics
and plots in one folder."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from bench.records import run_status as grid_status
from bench.records import store
from bench.records.names import Names
from bench.records.rows import budget_rank
from bench.report import claims, diagnosis, html_page, plots, stats, timing, training_plots
from bench.report.table import render_table

MAX_LISTED = 20  # failures and missing runs listed in the Markdown; the CSVs hold them all


def _budget_line(runs: pd.DataFrame) -> str:
    budgets = sorted(runs["budget"].dropna().unique())
    if len(budgets) == 1:
        return f"Budget: **{budgets[0]}**."
    return f"Records mix budgets (**{', '.join(budgets)}**): every table and plot below names each row's budget."


def _listed(lines: list[str]) -> list[str]:
    if len(lines) <= MAX_LISTED:
        return lines
    return lines[:MAX_LISTED] + [f"- … and {len(lines) - MAX_LISTED} more (see the CSV)"]


def write_report(
    results: Path,
    out: Path,
    experiment: str | None = None,
    reference: str = stats.DEFAULT_REFERENCE,
    split: str | None = None,
    html: bool = False,
    data_root: Path | None = None,
    stand_ins: dict[str, str] | None = None,
) -> list[Path]:
    """Write report.md, its CSVs and the plots (PNG and PDF) of one split's records (``store.of_split``) to ``out``,
    and with ``html`` the results page (``html_page``, given ``data_root`` and ``stand_ins``); return the paths
    written (report.md last)."""
    experiment = store.choose_experiment(results, experiment)
    records = store.require_records(results, experiment, split)
    runs, cases = store.runs_frame(records), store.cases_frame(records)
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    names = Names(runs)
    reference_name = names.method(reference).display
    has_reference = reference in set(runs.loc[runs["status"] == "ok", "method"])

    lines = [
        "# Report",
        "",
        f"From {len(records)} run records in `{results}`, scored on the **{store.record_split(records[0])}**"
        f" split. {_budget_line(runs)}",
        "",
        "## Claims of the seed paper",
        "",
    ]
    verdicts = claims.check_claims(runs, cases)
    if verdicts:
        lines += claims.claims_markdown(verdicts, names)
        written.append(out / "claims.csv")
        claims.claims_frame(verdicts).to_csv(written[-1], index=False)
    else:
        lines.append("No finished runs.")

    lines += ["", "## Cost per Table 1 row", ""]
    costs = timing.cost_table(runs, reference, timing.training_images(records))
    if costs.empty:
        lines.append("No finished runs.")
    else:
        lines += [timing.cost_markdown(costs, reference_name), ""]
        lines += [f"- {sentence}" for sentence in timing.ratio_sentences(costs)]
        if not has_reference:
            lines.append(f"- No finished runs of the reference `{reference}`: no time ratios.")
        lines += ["", timing.COST_NOTES]
        written.append(out / "time_report.csv")
        costs.to_csv(written[-1], index=False)

    counts, failures, missing = grid_status.run_status(runs)
    lines += ["", "## Run status", "", grid_status.STATUS_DEFINITION, ""]
    status_table = counts.rename(columns={"method_display": "Method", "budget": "Budget", "expected": "Expected",
                                          "ok": "OK", "failed": "Failed", "missing": "Missing"})  # fmt: skip
    lines.append(status_table.drop(columns="method").to_markdown(index=False))
    if len(failures):
        lines += ["", "### Failed runs", ""]
        lines += _listed([f"- `{row.run_id}`: {row.error}" for row in failures.itertuples()])
    if missing:
        lines += ["", "### Missing runs", ""]
        described = [", ".join(f"{n} {v}" for n, v in zip(grid_status.SPEC_KEYS, key, strict=True)) for key in missing]
        lines += _listed([f"- {text}" for text in described])
    written.append(out / "run_status.csv")
    missing_frame = pd.DataFrame(missing, columns=grid_status.SPEC_KEYS).assign(status="missing")
    status = pd.concat([failures.assign(status="failed"), missing_frame])
    status.to_csv(written[-1], index=False)

    lines += _statistics_section(cases, reference, reference_name, has_reference, names, out, written)
    lines += _volumes_section(records, out, written)
    lines += _diagnosis_section(records, runs, cases, out, written)
    lines += _plots_section(runs, cases, out, written)
    if html:  # last but the Markdown: the page shows every plot written before it
        written.append(html_page.write_page(out, experiment, records, runs, verdicts, results, data_root,
                                                stand_ins))
    written.append(out / "report.md")
    written[-1].write_text("\n".join(lines) + "\n")
    return written


def _statistics_section(
    cases: pd.DataFrame, reference: str, reference_name: str, has_reference: bool, names: Names, out: Path,
    written: list[Path],
) -> list[str]:
    """Every Table 1 row against the reference's headline row; then the same-budget tests (the table's marks)."""
    lines = ["", f"## Statistics against {reference_name}", ""]
    if not has_reference:
        return lines + [f"No finished runs of `{reference}`; choose the reference with `--reference`."]
    tests = stats.headline_tests(cases, reference, names.default_labels(reference))
    written.append(out / "statistics.csv")
    tests.to_csv(written[-1], index=False)
    lines += [_statistics_markdown(tests, names, headline=True), "", stats.HEADLINE_PROTOCOL, ""]
    compared = stats.compare(cases, reference)
    lines += ["### Same budget", "",
              "Each configuration without `--set` overrides against the reference at its own budget and k (what"
              " `bench table --stats` marks):", ""]  # fmt: skip
    if compared.empty or compared["p"].isna().all():
        lines.append("No configuration has a reference at its own budget and k.")
    else:
        written.append(out / "statistics_same_budget.csv")
        compared.to_csv(written[-1], index=False)
        lines.append(_statistics_markdown(compared, names, headline=False))
    return lines + ["", stats.PROTOCOL]


def _volumes_section(records: list[dict], out: Path, written: list[Path]) -> list[str]:
    """Table 1 over volumes for the runs of 3-D datasets: each case's scored slices stacked back
    (``bench.data.volumes``), since the field reports volumes; Table 1 itself stays per slice, as in the paper."""
    with_volumes = [record | {"cases": record["volumes"]} for record in records if record.get("volumes")]
    if not with_volumes:
        return []
    runs = store.runs_frame(with_volumes)
    lines = ["", "## Per volume", "", "Mean over test volumes of each run, then over runs: every case's scored slices "
             "stacked back along the axis its volume was cut across (HD95 in mm with the slice thickness).", ""]
    for metric in ("dice", "hd95"):
        lines += [render_table(runs, metric, "md"), ""]
        written.append(out / f"volumes_{metric}.csv")
        written[-1].write_text(render_table(runs, metric, "csv"))
    return lines


def _plots_section(runs: pd.DataFrame, cases: pd.DataFrame, out: Path, written: list[Path]) -> list[str]:
    lines = ["", "## Plots", ""]
    budgets = sorted(runs.loc[runs["status"] == "ok", "budget"].dropna().unique(), key=budget_rank)
    if len(budgets) > 1:
        caption = (f"Every Table 1 row at its own budget: budgets differ between rows ({', '.join(budgets)}); each"
                   f" row's label ends with its budget, and its markers and boxes are filled at {plots.FILLED_BUDGET}"
                   " and hollow otherwise. Rows of different budgets trained for different lengths.")  # fmt: skip
    else:
        caption = f"Every Table 1 row; budget: {', '.join(budgets) or '–'}."
    caption += (" Each method has one colour in every plot (a shade of it per `--set` variant or backbone), a"
                " marker per label regime; a training-free row has no budget (–) and is filled. In"
                " dice_vs_fit_time a panel whose rows differ in k writes each trained row's k beside its point, and"
                " training-free rows sit at 0 s: they fit nothing (symmetric-log axis, linear near 0).")  # fmt: skip
    lines += [caption, ""]
    figures = {
        "dice_per_case": plots.per_case_dice(cases) if not cases.empty else None,
        "dice_vs_shots": plots.dice_versus_shots(runs),
        "dice_vs_fit_time": plots.dice_versus_fit_time(runs),
    }
    for stem, figure in figures.items():
        if figure is None:
            needs = "finished runs at two or more k" if stem == "dice_vs_shots" else "finished runs"
            lines.append(f"- {stem}: not drawn (it needs {needs}).")
            continue
        written += plots.save_figure(figure, out, stem)
        lines.append(f"![{stem}]({stem}.png)")
    return lines


def _diagnosis_section(
    records: list[dict], runs: pd.DataFrame, cases: pd.DataFrame, out: Path, written: list[Path]
) -> list[str]:
    """Per-draw results, Dice by structure size and, for methods that log them, the training curves."""
    lines = ["", "## Support draws, structure size and training", ""]
    tables = {
        "per_draw": (diagnosis.per_draw_table(runs), "Dice × 100 per support draw: mean ± std over seeds (seeds)."),
        "dice_by_size": (diagnosis.dice_by_size_table(cases),
                         "Mean per-case Dice × 100 by third of the structure's test cases ordered by tight-box area"
                         " (small, medium, large), each structure's own thirds; their edges (% of the image) in"
                         " the row."),
    }  # fmt: skip
    for stem, (table, caption) in tables.items():
        if table.empty:
            lines += [f"- {stem}: not computed (it needs finished k-shot runs over two or more draws).", ""]
            continue
        written.append(out / f"{stem}.csv")
        table.to_csv(written[-1], index=False)
        lines += [f"### {stem}", "", table.to_markdown(index=False), "", caption, ""]
    figures = {
        "dice_vs_size": diagnosis.dice_versus_size(cases),
        "training_curves": training_plots.training_curves(training_plots.training_frame(records)),
        "support_sizes": training_plots.support_sizes_figure(training_plots.support_sizes(records)),
    }
    for stem, figure in figures.items():
        if figure is None:
            lines.append(f"- {stem}: not drawn (no run logged what it needs).")
            continue
        written.extend(plots.save_figure(figure, out, stem))
        lines.append(f"![{stem}]({stem}.png)")
    return lines


def _statistics_markdown(compared: pd.DataFrame, names: Names, headline: bool) -> str:
    """The tests as a Markdown table: against the headline row (its labels, k and budget, and what differs),
    or at the same budget (the reference's labels)."""
    rows = []
    for row in compared.itertuples():
        info = names.method(row.method)
        values = {
            "Task": names.task_label(row.dataset, row.task), "Method": info.display,
            "Labels": row.labels, "k": "–" if info.training_free else row.shots,
            "Budget": "–" if info.training_free else row.budget,
        }  # fmt: skip
        if headline:
            values["--set"] = row.variant or "–"
        values |= {"Runs": row.runs,
                   "Dice × 100 [95 % CI]": f"{100 * row.mean:.2f} [{100 * row.ci_low:.2f}, {100 * row.ci_high:.2f}]"}
        if headline:
            tested = bool(row.reference_labels)
            own = "(the headline row)" if not row.variant else "(the headline row: only --set variants ran)"
            values["Reference row"] = _reference_row(row) if tested else own
            values["Differs in"] = (row.differs or "–") if tested else "–"
        else:
            values["Reference labels"] = row.reference_labels or "–"
        values |= {"Pairs": _count(row.pairs), "p": _p(row.p), "p (Holm)": _p(row.p_holm),
                   "Significant": "yes" if row.significant else ""}  # fmt: skip
        rows.append(values)
    return pd.DataFrame(rows).to_markdown(index=False, disable_numparse=True)


def _reference_row(row) -> str:
    return f"{row.reference_labels} · k={row.reference_shots} · {row.reference_budget}"


def _count(value: float) -> str:
    return "–" if pd.isna(value) else str(int(value))


def _p(value: float) -> str:
    return "–" if pd.isna(value) else f"{value:.3g}"
