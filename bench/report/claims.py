"""The seed paper's four claims, checked on each dataset and structure from the run records.

Each claim compares Table 1 rows: a method's row is its headline (``rows.headline``) among the rows with the
label regime and k the claim names — boxes for the prompt module, masks for the others, k = 10 (PerSAM:
1) — so ``--set`` variants are used only when nothing else ran; a verdict that rests on such a row says so,
naming its overrides (a smoke run with ``--set epochs=2`` is not the method's recipe). The rows a claim sets
against each other are taken at one budget, the best at which all of them ran; only where they share none is
each method's best budget used, and the verdict says the budgets differ.
Two rows are compared on their mean Dice × 100 and, where the claim says better or worse, with the paired
per-case test of ``bench.report.stats`` (two-sided Wilcoxon on the cases both scored). ``RULES`` states when
each claim holds; every verdict names the rows, their numbers and their budgets, and says so when the budgets
differ.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import groupby

import numpy as np
import pandas as pd

from bench.records.names import Names
from bench.records.rows import budget_rank, headline, one_line, with_row_names
from bench.report import stats
from bench.report.table import PAPER_DATASETS

HOLDS, FAILS, UNMEASURABLE = "holds", "does not hold", "not measurable here"
OURS, UNET, TRANSUNET, AUTOSAM, PERSAM = "prompt-module", "unet", "transunet", "autosam", "persam"
FEW_SHOT = "10"
FAR_BELOW = 10.0  # Dice × 100 points: how far below every other method "far below" means
ABOUT_THREE = (1.5, 6.0)  # "about 3×": within a factor of two of 3
CLAIMS = {
    "a": "With 10 boxes, ours is at least as good as UNet trained on 10 masks.",
    "b": "AutoSAM is slightly better than ours at 10 shots, but trains about 3× longer (per epoch, paper budget).",
    "c": "PerSAM (1 shot) is far below the others.",
    "d": "From all training data down to 10 shots, ours loses less than UNet and TransUNet.",
}
# When each verdict holds, a sentence per claim (the HTML page sets each beside its verdicts); RULES says it all
CLAIM_RULES = {
    "a": f"(a) holds unless ours is below UNet with paired p < {stats.ALPHA}.",
    "b": (f"(b) holds if AutoSAM's mean is above ours and AutoSAM's time per epoch is {ABOUT_THREE[0]:g}–"
          f"{ABOUT_THREE[1]:g}× ours, both at the paper budget on the same device; it does not hold if either part"
          " fails, and is not measurable when a part cannot be measured."),
    "c": (f"(c) holds if PerSAM is at least {FAR_BELOW:g} points below every other method's row, each difference"
          f" significant (Holm-corrected p < {stats.ALPHA})."),
    "d": (f"(d) compares mean Dice at all data and at k = {FEW_SHOT}: it needs all six rows, each method's two at"
          " one budget where it ran both at one."),
}  # fmt: skip
ROW_RULE = (
    f"Rows are each method's row with the claim's labels and k (ours: boxes; the others: masks; k = {FEW_SHOT},"
    " PerSAM 1), the compared rows at the best budget all of them ran at, else each at its best budget."
)
BUDGETS_RULE = (
    "Budgets: those of the rows that train (a method without trainable parameters has none); where they differ,"
    " the verdict compares rows trained for different lengths and at different input sizes."
)
RULES = " ".join(["How each verdict is reached.", ROW_RULE, *CLAIM_RULES.values(), BUDGETS_RULE])


@dataclass(frozen=True)
class Verdict:
    dataset: str
    task: str
    claim: str  # "a" … "d"
    verdict: str
    evidence: str
    budgets: str

    @property
    def statement(self) -> str:
        return CLAIMS[self.claim]


class _Rows:
    """The finished Table 1 rows of one dataset and structure, with what the claims read from them."""

    def __init__(self, summary: pd.DataFrame, values: pd.Series) -> None:
        self.summary, self.values = summary, values
        self.used: list[pd.Series] = []  # the rows a claim read, so its verdict can say what they are

    def _rows_of(self, method: str, labels: str, shots: str) -> pd.DataFrame:
        return self.summary[(self.summary["method"] == method) & (self.summary["labels"] == labels)
                            & (self.summary["shots"] == shots)]  # fmt: skip

    def row(self, method: str, labels: str, shots: str, budget: str | None = None) -> pd.Series | None:
        mine = self._rows_of(method, labels, shots)
        if budget is not None:
            mine = mine[mine["budget"] == budget]
        chosen = headline(mine, labels)
        if chosen is not None:
            self.used.append(chosen)
        return chosen

    def matched(self, *wanted: tuple[str, str, str]) -> list[pd.Series | None]:
        """The rows of ``wanted`` (method, labels, shots each) at one budget, the best at which every one of them
        ran, so that a claim never sets a ``paper`` row against a ``quick`` one where both methods ran at one
        budget; each at its own best budget where they share none."""
        budgets = [set(self._rows_of(*one)["budget"]) for one in wanted]
        common = set.intersection(*budgets)
        budget = min(common, key=budget_rank) if common else None
        return [self.row(*one, budget) for one in wanted]

    def overrides_note(self) -> str:
        """" Rests on rows with --set overrides: …" when a row the claim read has any; else ""."""
        variants = {one_line(row["row_label"]): row["variant"] for row in self.used if row["variant"]}
        if not variants:
            return ""
        named = "; ".join(f"{label} (--set {variant})" for label, variant in variants.items())
        return (f" Rests on rows with --set overrides (no row without them ran): {named}; such a row is a variant"
                " (a smoke run, say), not the method's recipe.")

    def paired_p(self, first: pd.Series, second: pd.Series) -> float:
        keys = [tuple(row[stats.ROW]) for row in (first, second)]
        return stats.paired_wilcoxon(self.values.loc[keys[0]], self.values.loc[keys[1]])[1]


def _summary(runs: pd.DataFrame, names: Names) -> pd.DataFrame:
    """Per Table 1 row of a task: mean Dice × 100 over runs, time per epoch, devices, whether it trains."""
    finished = runs[(runs["status"] == "ok") & runs["dice"].notna()].copy()
    if "variant" not in finished:
        finished["variant"] = ""
    epochs = pd.to_numeric(finished["epochs"], errors="coerce")
    finished["seconds_per_epoch"] = finished["fit_seconds"] / epochs.where(epochs > 0)
    summary = finished.groupby(stats.ROW, dropna=False).agg(
        dice=("dice", "mean"), runs=("run_id", "count"), seconds_per_epoch=("seconds_per_epoch", "mean"),
        params_trainable=("params_trainable", "max"),
        devices=("device", lambda v: "; ".join(sorted({str(d) for d in v.dropna()}))),
    ).reset_index()  # fmt: skip
    summary["dice"] *= 100
    summary = with_row_names(summary, names)
    summary["trains"] = ~summary["training_free"].astype(bool) & (summary["params_trainable"].fillna(1) > 0)
    return summary


def _named(row: pd.Series) -> str:
    return f"{one_line(row['row_label'])} {row['dice']:.2f}"


def _budgets(*rows: pd.Series) -> str:
    """"differ (paper, quick)" or "same (paper)" over the rows that train; "–" when none does."""
    trained = sorted({row["budget"] for row in rows if row["trains"]}, key=budget_rank)
    if not trained:
        return "–"
    return f"{'differ' if len(trained) > 1 else 'same'} ({', '.join(trained)})"


def _missing(what: list[tuple[str, pd.Series | None]]) -> str | None:
    absent = [name for name, row in what if row is None]
    return f"No finished row of {', '.join(absent)}" if absent else None


def _claim_a(rows: _Rows, names: Names) -> tuple[str, str, str]:
    ours, unet = rows.matched((OURS, "box", FEW_SHOT), (UNET, "mask", FEW_SHOT))
    absent = _missing([(f"{names.method(OURS).display} with boxes at k = {FEW_SHOT}", ours),
                       (f"{names.method(UNET).display} with masks at k = {FEW_SHOT}", unet)])  # fmt: skip
    if absent:
        return UNMEASURABLE, absent + ".", "–"
    gap, p = ours["dice"] - unet["dice"], rows.paired_p(ours, unet)
    verdict = FAILS if gap < 0 and p < stats.ALPHA else HOLDS
    evidence = f"{_named(ours)} against {_named(unet)}: {gap:+.2f} points, paired p = {p:.3g}."
    return verdict, evidence, _budgets(ours, unet)


def _claim_b(rows: _Rows, names: Names) -> tuple[str, str, str]:
    ours, autosam = rows.matched((OURS, "box", FEW_SHOT), (AUTOSAM, "mask", FEW_SHOT))
    absent = _missing([(f"{names.method(OURS).display} with boxes at k = {FEW_SHOT}", ours),
                       (f"{names.method(AUTOSAM).display} with masks at k = {FEW_SHOT}", autosam)])  # fmt: skip
    if absent:
        return UNMEASURABLE, absent + ".", "–"
    gap, p = autosam["dice"] - ours["dice"], rows.paired_p(autosam, ours)
    accuracy = HOLDS if gap > 0 else FAILS
    evidence = [f"Dice: {_named(autosam)} against {_named(ours)}, {gap:+.2f} points (paired p = {p:.3g}): {accuracy}."]
    time, time_evidence = _per_epoch_ratio(rows, names)
    evidence.append(time_evidence)
    verdict = FAILS if FAILS in (accuracy, time) else HOLDS if time == HOLDS else UNMEASURABLE
    return verdict, " ".join(evidence), _budgets(autosam, ours)


def _per_epoch_ratio(rows: _Rows, names: Names) -> tuple[str, str]:
    """The time part of claim (b): AutoSAM's time per epoch over ours, both at the paper budget."""
    ours, autosam = rows.row(OURS, "box", FEW_SHOT, "paper"), rows.row(AUTOSAM, "mask", FEW_SHOT, "paper")
    absent = _missing([(f"{names.method(OURS).display} with boxes", ours),
                       (f"{names.method(AUTOSAM).display} with masks", autosam)])  # fmt: skip
    if absent:
        absent = absent.replace("No finished row", "no finished row")
        return UNMEASURABLE, f"Time per epoch at the paper budget: not measurable from the records ({absent} there)."
    if ours["devices"] != autosam["devices"]:
        return UNMEASURABLE, (f"Time per epoch at the paper budget: not comparable, the runs used different devices"
                              f" ({autosam['devices']} against {ours['devices']}).")  # fmt: skip
    ratio = autosam["seconds_per_epoch"] / ours["seconds_per_epoch"]
    if np.isnan(ratio):
        return UNMEASURABLE, "Time per epoch at the paper budget: a row records no epochs."
    verdict = HOLDS if ABOUT_THREE[0] <= ratio <= ABOUT_THREE[1] else FAILS
    return verdict, (f"Time per epoch at the paper budget: {autosam['seconds_per_epoch']:.2f} s against"
                     f" {ours['seconds_per_epoch']:.2f} s, {ratio:.1f}× ({ours['devices']}): {verdict}.")  # fmt: skip


def _claim_c(rows: _Rows, names: Names) -> tuple[str, str, str]:
    persam = rows.row(PERSAM, "mask", "1")
    others = {method: rows.row(method, labels, FEW_SHOT)
              for method, labels in ((OURS, "box"), (UNET, "mask"), (TRANSUNET, "mask"), (AUTOSAM, "mask"))}
    found = [row for row in others.values() if row is not None]  # fmt: skip
    if persam is None or not found:
        what = f"{names.method(PERSAM).display} with 1 mask" if persam is None else f"another method at k = {FEW_SHOT}"
        return UNMEASURABLE, f"No finished row of {what}.", "–"
    gaps = np.array([row["dice"] - persam["dice"] for row in found])
    p_holm = stats.holm(np.array([rows.paired_p(row, persam) for row in found]))
    closest = int(np.argmin(gaps))
    verdict = HOLDS if gaps.min() >= FAR_BELOW and (p_holm < stats.ALPHA).all() else FAILS
    evidence = (f"{_named(persam)}; the closest of the {len(found)} other rows is {_named(found[closest])},"
                f" {gaps[closest]:.2f} points above (Holm p = {p_holm[closest]:.3g}); largest Holm p"
                f" {p_holm.max():.3g}.")  # fmt: skip
    absent = [names.method(method).display for method, row in others.items() if row is None]
    if absent:
        evidence += f" Not run here: {', '.join(absent)}."
    return verdict, evidence, _budgets(persam, *found)


def _claim_d(rows: _Rows, names: Names) -> tuple[str, str, str]:
    methods = [(OURS, "box"), (UNET, "mask"), (TRANSUNET, "mask")]
    pairs = {method: tuple(rows.matched((method, labels, "all"), (method, labels, FEW_SHOT)))
             for method, labels in methods}  # fmt: skip
    absent = _missing([(f"{names.method(method).display} ({labels}, {shots})", pair[i])
                       for method, labels in methods for pair in [pairs[method]]
                       for i, shots in enumerate(("all data", f"k = {FEW_SHOT}"))])  # fmt: skip
    if absent:
        return UNMEASURABLE, absent + ".", "–"
    drops = {method: pair[0]["dice"] - pair[1]["dice"] for method, pair in pairs.items()}
    verdict = HOLDS if all(drops[OURS] < drops[method] for method in (UNET, TRANSUNET)) else FAILS
    evidence = "; ".join(f"{names.method(method).display} {drops[method]:.2f} points ({pair[0]['dice']:.2f} → "
                         f"{pair[1]['dice']:.2f})" for method, pair in pairs.items())  # fmt: skip
    budgets = ", ".join(f"{names.method(method).display} {_budgets(*pair)}" for method, pair in pairs.items())
    return verdict, f"Loss from all data to k = {FEW_SHOT}: {evidence}.", budgets


def _task_key(dataset: str, task: str, names: Names) -> tuple:
    """Table 1's column order: the paper's datasets first, then by name; a dataset's own task order."""
    rank = PAPER_DATASETS.index(dataset) if dataset in PAPER_DATASETS else len(PAPER_DATASETS)
    order = names.task_order(dataset)
    return (rank, names.dataset_display(dataset).lower(), dataset, order.index(task) if task in order else len(order),
            task)  # fmt: skip


def check_claims(runs: pd.DataFrame, cases: pd.DataFrame) -> list[Verdict]:
    """A verdict per claim and per dataset and structure with finished runs, in the table's dataset order."""
    names = Names(runs)
    summary = _summary(runs, names)
    if summary.empty:
        return []
    values = cases.assign(variant=cases.get("variant", "")).groupby([*stats.ROW, "case"])["dice"].mean()
    verdicts = []
    tasks = summary.groupby(stats.TASK).groups
    for dataset, task in sorted(tasks, key=lambda pair: _task_key(*pair, names)):
        rows = _Rows(summary.loc[tasks[(dataset, task)]], values)
        for claim, check in (("a", _claim_a), ("b", _claim_b), ("c", _claim_c), ("d", _claim_d)):
            rows.used = []
            verdict, evidence, budgets = check(rows, names)
            verdicts.append(Verdict(dataset, task, claim, verdict, evidence + rows.overrides_note(), budgets))
    return verdicts


def claims_markdown(verdicts: list[Verdict], names: Names) -> list[str]:
    """The report's Claims section body: a subsection per dataset and structure, a bullet per claim."""
    lines = []
    for (dataset, task), group in groupby(verdicts, key=lambda verdict: (verdict.dataset, verdict.task)):
        lines += [f"### {names.task_label(dataset, task)}", ""]
        for verdict in group:
            lines.append(f"- **({verdict.claim}) {verdict.statement}** {verdict.verdict.capitalize()}."
                         f" {verdict.evidence} Budgets: {verdict.budgets}.")  # fmt: skip
        lines.append("")
    return lines + [RULES]


def claims_frame(verdicts: list[Verdict]) -> pd.DataFrame:
    return pd.DataFrame([{**vars(verdict), "statement": verdict.statement} for verdict in verdicts])
