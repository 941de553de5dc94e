"""What `bench run` prints: the plan (``--dry-run``), its summary, a line per finished run, and the last line."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.progress import Progress
from rich.table import Table

from bench.cli.common import console

if TYPE_CHECKING:
    from bench.records.spec import RunSpec
    from bench.run.plan import GridPlan


def print_plan(plan: GridPlan) -> None:
    """The ``--dry-run`` table: every planned combination and what would happen to it."""
    from bench.records.store import checkpoint_path

    results, experiment = plan.settings.results, plan.settings.experiment
    table = Table(title=f"Plan (budget {plan.request.budget})")
    for column in ("method", "dataset", "task", "labels", "shots", "draw", "seed", "state"):
        table.add_column(column)
    for item in plan.planned:
        spec = item.spec
        if item.skip_reason:
            state = f"skip: {item.skip_reason}"
        elif spec.run_id in plan.held:
            state = f"claimed by {plan.held[spec.run_id].describe()}"
        else:
            state = {"ok": "done", "failed": "failed, re-run", "outdated": "older recipe, re-run"}.get(
                plan.statuses.get(spec.run_id) or "", "to run"
            )
            if state == "to run" and checkpoint_path(results, experiment, spec.run_id).exists():
                state = "to resume"
        table.add_row(spec.method, spec.dataset, spec.task, spec.labels, spec.shots_label,
                      str(spec.draw), str(spec.seed), state)  # fmt: skip
    console.print(table)


def print_summary(plan: GridPlan, detach: bool) -> None:
    """How many runs are planned, done, to run and skipped, and why some are run again or not run here."""
    skipped = plan.skipped
    precision = plan.settings.expected_precision()
    console.print(
        f"budget [bold]{plan.request.budget}[/bold], precision [bold]{precision or 'auto, per GPU'}[/bold], "
        f"scored on [bold]{plan.request.eval_split}[/bold]: "
        f"{len(plan.runnable)} runs planned, {len(plan.runnable) - len(plan.to_run)} already done, "
        f"{len(plan.to_run)} to run, {sum(skipped.values())} skipped",
        highlight=False, soft_wrap=True,
    )  # fmt: skip
    if plan.submitted:
        console.print(f"  {plan.submitted} of them already submitted: collected, not submitted again", highlight=False)
    if plan.held:
        then = "not waited for (--detach)" if detach else "waited for after the rest"
        console.print(f"  {len(plan.held)} of them claimed by other processes: {then}", highlight=False)
    for reason, count in skipped.items():
        console.print(f"  skipped {count}: {reason}", highlight=False)
    if plan.outdated:
        first = next(iter(plan.outdated.values()))
        listed = ", ".join(f"{key} {old} → {new}" for key, (old, new) in first.items())
        console.print(f"  run again {len(plan.outdated)}: recorded with an older default recipe (e.g. {listed}); "
                      "pass the old values with --set (or --precision) to keep them", highlight=False)  # fmt: skip


class GridTally:
    """A line per finished run above the grid's bar, and the counts of the last line (``print_outcome``)."""

    def __init__(self, progress: Progress, total: int, detach: bool) -> None:
        self.progress = progress
        self.bar = progress.add_task("runs", total=total)
        self.detach = detach
        self.failures: list[dict] = []
        self.queued: list[dict] = []
        self.not_started: list[dict] = []
        self.paused: list[dict] = []
        self.elsewhere: list[dict] = []
        self.claimed: dict[str, dict] = {}

    def on_done(self, spec: RunSpec, summary: dict) -> None:
        if summary["status"] in ("queued", "not_started"):
            (self.queued if summary["status"] == "queued" else self.not_started).append(summary)
            return
        if summary["status"] == "paused":  # its fit is saved: the next command goes on with it
            self.paused.append(summary)
            line = f"{spec.run_id}: paused after epoch {summary['epochs_done']} of {summary['epochs']}, its fit saved"
            self.progress.console.print(line, highlight=False, soft_wrap=True)
            return
        if summary["status"] == "claimed":  # another process runs it
            self.claimed[spec.run_id] = summary
            then = "not waited for (--detach)" if self.detach else "waited for after the rest"
            self.progress.console.print(f"{spec.run_id}: claimed by {summary['holder']}; {then}", highlight=False)
            return
        self.claimed.pop(spec.run_id, None)
        self.progress.advance(self.bar)
        mark = "[green]ok[/green]" if summary["status"] == "ok" else f"[red]failed[/red]: {summary['error']}"
        if summary.get("elsewhere"):
            mark += " (run by another process)"
            self.elsewhere.append(summary)
        elif summary.get("taken_from"):
            mark += f" (taken over from {summary['taken_from']}, which is gone)"
        self.progress.console.print(f"{spec.run_id}: {mark}", highlight=False)
        if summary["status"] != "ok":
            self.failures.append(summary)


    def outcome(self, to_run: int) -> dict[str, int]:
        """How many of the ``to_run`` runs ended how: ok, failed, paused, not started, queued, claimed."""
        ended = {"failed": len(self.failures), "paused": len(self.paused), "not_started": len(self.not_started),
                 "queued": len(self.queued), "claimed": len(self.claimed)}  # fmt: skip
        return {"ok": to_run - sum(ended.values()), **ended}


def print_outcome(tally: GridTally, plan: GridPlan, stop_after: str | None) -> None:
    """The grid's last line: how its runs ended, and where submitted jobs are collected from."""
    from bench.records import store

    results, experiment = plan.settings.results, plan.settings.experiment
    console.print(
        f"{tally.outcome(len(plan.to_run))['ok']} ok, {len(tally.failures)} failed"
        + (f" ({len(tally.elsewhere)} of them run by another process)" if tally.elsewhere else "")
        + (f", {len(tally.paused)} paused" if tally.paused else "")
        + (f", {len(tally.not_started)} not started" if tally.not_started else "")
        + (f" (--stop-after {stop_after} passed: run again to go on)" if tally.paused or tally.not_started else "")
        + (f", {len(tally.queued)} queued or running" if tally.queued else "")
        + (f", {len(tally.claimed)} running in other processes" if tally.claimed else "")
        + f"; records in {store.runs_folder(results, experiment)}",
        highlight=False, soft_wrap=True,
    )  # fmt: skip
    if tally.queued:
        arrays = sorted({summary["job_id"].split("_")[0] for summary in tally.queued})
        console.print(
            f"submitted as job{'s' if len(arrays) > 1 else ''} {', '.join(arrays)}; logs in "
            f"{store.experiment_folder(results, experiment) / 'submitit'}. Collect with this command again or "
            f"`bench status --results {results} --experiment {experiment}`",
            highlight=False, soft_wrap=True,
        )  # fmt: skip
