"""`bench recheck`: run a sample of an experiment's records again with the code checked out now, and compare.

A record says which code made it (``git_rev``) and what it scored; resuming a grid never re-runs a finished run
id, so a change that moves a method's numbers stays invisible in a results folder until someone re-runs a
record. This module picks records (by run id, or N at random with a seed), runs their specs again into a
scratch results folder that is never the committed one, and sets each new Dice beside the committed one.

The tolerance (``DEFAULT_TOLERANCE``, Dice points) is what a re-run may drift without changing any reading:
a run that moves by less than it moves its row's mean by less than it, and the smallest spread over seeds and
draws of a trained row in the committed tables is above it. On the same machine,
thread count, libraries and code a run reproduces exactly (everything is seeded and the CPU kernels are
deterministic), so a difference there is the code's; another thread count or device reorders floating-point
sums, which over hundreds of training steps can move a run, hence not zero. A CPU re-run therefore computes with
the thread count its record names (``recorded_threads``), whatever the machine's default.

A re-run's predictions may stand in for a record whose predictions were never kept (``keep_predictions``): that
is how the committed experiments get the masks their qualitative figures and HTML pages show. A re-run that
reproduces its record exactly (``identical``) made the record's own masks and is copied as they are; any other is
kept marked as a re-run (``predictions.mark_as_rerun``), with its own code, device and per-case scores, which the
page and the figure show beside its masks instead of the record's.

A re-check cut short goes on with ``resume``: the re-runs its scratch folder already holds count as done (they were
made by an earlier call for the same records; each keeps its own code revision in the table).
"""

from __future__ import annotations

import datetime as dt
import functools
import re
import shutil
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from bench.errors import BenchError
from bench.records import store
from bench.records.spec import RunSpec, shots_label

if TYPE_CHECKING:
    from bench.run.settings import GridSettings

DEFAULT_TOLERANCE = 0.5  # Dice points (Dice × 100); argued in the module's docstring and docs/records.md
SHOWN_REVISION = 10  # characters of a git revision a table shows


@dataclass(frozen=True)
class Rechecked:
    """One record and its re-run: Dice × 100 of both, the code and device of both, what else differed."""

    run_id: str
    committed_dice: float
    new_dice: float | None  # None: the re-run failed (``error`` says why)
    committed_revision: str | None
    new_revision: str | None
    committed_device: str
    new_device: str
    error: str | None = None
    recipe_changes: tuple[str, ...] = ()  # hyper-parameters whose value the current code changed
    same_support: bool = True
    # the CPU kernels of both (``cpu.capability`` of each record; None where a record does not say)
    cpu_kernels: tuple[str | None, str | None] = (None, None)

    @property
    def difference(self) -> float | None:
        return None if self.new_dice is None else self.new_dice - self.committed_dice

    def verdict(self, tolerance: float) -> str:
        if self.new_dice is None:
            return f"failed: {self.error}"
        if self.new_dice == self.committed_dice:
            return "identical"
        return "within" if abs(self.difference) <= tolerance else "outside"


def select_records(
    results: Path,
    experiment: str,
    run_ids: Sequence[str] = (),
    sample: int | None = None,
    seed: int = 0,
    methods: Sequence[str] = (),
    shots: Sequence[str] = (),
    shown: bool = False,
) -> list[dict]:
    """The finished records to re-run: those named by ``run_ids``, ``sample`` of them drawn with ``seed``, or (with
    ``shown``) those the results page shows, one per Table 1 row and structure (``rows.shown_runs``, test
    split); each among the runs of ``methods`` with ``shots`` (as tables write them: ``10``, ``all``) when given, so
    a selection can be kept to the cheap runs of an experiment."""
    if [bool(run_ids), sample is not None, shown].count(True) != 1:
        raise BenchError("name the runs to re-check with --runs, draw some with --sample N, or take those the results "
                         "page shows with --shown (one of the three)")  # fmt: skip
    finished = {record["run_id"]: record for record in store.load_records(results, experiment)
                if record.get("status") == "ok"
                and (not methods or record["spec"]["method"] in methods)
                and (not shots or shots_label(record["spec"]["shots"]) in shots)}  # fmt: skip
    if not finished:
        chosen_runs = f" of {', '.join(methods) or 'any method'} with {', '.join(shots) or 'any'} shots"
        where = chosen_runs if methods or shots else ""
        raise BenchError(f"no finished records{where} in '{store.runs_folder(results, experiment)}'")
    unknown = sorted(set(run_ids) - set(finished))
    if unknown:
        raise BenchError(f"{len(unknown)} run id(s) have no finished record among the chosen runs of experiment "
                         f"'{experiment}', e.g. '{unknown[0]}'")  # fmt: skip
    if run_ids:
        return [finished[run_id] for run_id in dict.fromkeys(run_ids)]
    if shown:
        chosen = _shown_records(results, experiment, finished)
        if not chosen:
            raise BenchError(f"the results page of '{experiment}' shows none of the chosen runs")
        return chosen
    if not 1 <= sample <= len(finished):
        raise BenchError(f"--sample takes 1 to {len(finished)} (the finished records of '{experiment}'), not {sample}")
    # drawn from the sorted ids, so the same seed picks the same runs on every machine
    chosen = np.random.default_rng(seed).choice(sorted(finished), size=sample, replace=False)
    return [finished[run_id] for run_id in sorted(chosen)]


def _shown_records(results: Path, experiment: str, finished: dict[str, dict]) -> list[dict]:
    """Among ``finished``, the records of the runs the results page shows (of the experiment's test split)."""
    from bench.records.names import Names
    from bench.records.rows import shown_runs

    tested = store.of_split(store.load_records(results, experiment), "test")
    frame = store.runs_frame(tested)
    return [finished[run_id] for run_id in shown_runs(frame, Names(frame)) if run_id in finished]


def check_scratch(scratch: Path, results: Path, experiment: str, records: list[dict], resume: bool = False) -> None:
    """Refuse a scratch folder that is the committed results folder, or (unless ``resume``) that holds one of these
    runs already: a re-check writes new records and must never overwrite, nor silently resume from, records it did
    not make."""
    if scratch.resolve() == Path(results).resolve():
        raise BenchError(f"--scratch must be another folder than --results ('{results}'): it would overwrite records")
    if resume:
        return
    for record in records:
        if store.record_path(scratch, experiment, record["run_id"]).exists():
            raise BenchError(f"scratch folder '{scratch}' already holds a record of {record['run_id']}; name an empty"
                             " folder, or add --resume to go on with the re-check that wrote it")  # fmt: skip


def recorded_threads(record: dict) -> int | None:
    """The torch thread count a CPU record was computed with (its ``device`` says "cpu (…, N threads)"), else
    None: a GPU record, or one that does not say."""
    found = re.fullmatch(r"cpu \(.*, (\d+) threads?\)", record.get("device") or "")
    return int(found[1]) if found else None


def keep_predictions(rows: list[Rechecked], scratch: Path, results: Path, experiment: str) -> dict[str, list[str]]:
    """Copy each finished re-run's predictions into the experiment's predictions folder, replacing a record's older
    file of fewer cases: as they are where the re-run reproduced its record exactly, marked as the re-run's (with
    its per-case scores) otherwise. The run ids kept, under "identical" and "re-run"."""
    from bench.records.predictions import mark_as_rerun

    kept: dict[str, list[str]] = {"identical": [], "re-run": []}
    for row in rows:
        target = store.prediction_path(results, experiment, row.run_id)
        source = store.prediction_path(scratch, experiment, row.run_id)
        if row.new_dice is None or not source.is_file():
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
        if row.verdict(0.0) == "identical":
            kept["identical"].append(row.run_id)
        else:
            mark_as_rerun(target, store.existing_record(scratch, experiment, row.run_id))
            kept["re-run"].append(row.run_id)
    return kept


def default_scratch(experiment: str) -> Path:
    """A new folder in the user cache, named after the experiment and the time."""
    from bench.paths import cache_dir

    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%S")
    return cache_dir() / "recheck" / f"{experiment}-{stamp}"


def recheck(
    records: list[dict], settings: GridSettings, run: Callable[[list[RunSpec]], None]
) -> list[Rechecked]:
    """Run the records' specs with ``run`` (the executor) under ``settings``, whose results folder is the scratch
    one, then compare each new record with its committed one."""
    specs = [RunSpec.from_dict(record["spec"]) for record in records]
    run(specs)
    return [compare(record, store.existing_record(settings.results, settings.experiment, record["run_id"]))
            for record in records]  # fmt: skip


def compare(committed: dict, new: dict | None) -> Rechecked:
    """A committed record beside its re-run (None: the re-run left no record)."""
    new = new or {"status": "failed", "error": "no record written"}
    ok = new.get("status") == "ok"
    old_hparams, new_hparams = committed.get("hparams") or {}, new.get("hparams") or {}
    changed = tuple(f"{key} {old_hparams.get(key)!r} → {new_hparams.get(key)!r}"
                    for key in sorted(set(old_hparams) | set(new_hparams))
                    if ok and old_hparams.get(key) != new_hparams.get(key))  # fmt: skip
    return Rechecked(
        run_id=committed["run_id"],
        committed_dice=100 * committed["mean_dice"],
        new_dice=100 * new["mean_dice"] if ok else None,
        committed_revision=committed.get("git_rev"),
        new_revision=new.get("git_rev"),
        committed_device=committed.get("device") or "?",
        new_device=new.get("device") or "?",
        error=None if ok else new.get("error"),
        recipe_changes=changed,
        same_support=not ok or committed.get("support_ids") == new.get("support_ids"),
        cpu_kernels=((committed.get("cpu") or {}).get("capability"), (new.get("cpu") or {}).get("capability")),
    )


@functools.cache
def uncommitted_changes() -> bool:
    """Whether the checkout the code runs from differs from its git revision (tracked files only)."""
    try:
        completed = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=Path(__file__).parent, capture_output=True, text=True, timeout=10,
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        return False
    return completed.returncode == 0 and bool(completed.stdout.strip())


def _revision(revision: str | None, current: bool) -> str:
    from bench.run.runner import git_revision  # here: the runner imports torch, which `bench ls` must not

    shown = revision[:SHOWN_REVISION] if revision else "unknown"
    dirty = current and revision == git_revision() and uncommitted_changes()
    return f"{shown} + uncommitted changes" if dirty else shown


def rechecked_frame(rows: list[Rechecked], tolerance: float) -> pd.DataFrame:
    """One row per re-run run, as the command prints and writes it."""
    return pd.DataFrame(
        {
            "run": row.run_id,
            "committed Dice": f"{row.committed_dice:.2f}",
            "new Dice": "–" if row.new_dice is None else f"{row.new_dice:.2f}",
            # + 0.0 turns a rounded -0.0 into 0.0, so a drift below the last digit never reads as a loss
            "Δ": "–" if row.difference is None else f"{round(row.difference, 2) + 0.0:+.2f}",
            f"within ± {tolerance:g}": row.verdict(tolerance),
            "committed code": _revision(row.committed_revision, current=False),
            "new code": _revision(row.new_revision, current=True),
            "committed device": row.committed_device,
            "new device": row.new_device,
        }
        for row in rows
    )


def summary_line(rows: list[Rechecked], tolerance: float) -> str:
    verdicts = [row.verdict(tolerance) for row in rows]
    held = sum(verdict in ("identical", "within") for verdict in verdicts)
    identical = verdicts.count("identical")
    return (f"{held} of {len(rows)} re-runs within ± {tolerance:g} Dice points of their records "
            f"({identical} identical)")  # fmt: skip


def notes(rows: list[Rechecked]) -> list[str]:
    """What else a reader should know per run: hyper-parameters the current code sets differently, another
    support set; then, once per pair of CPU kernels, which moved runs computed with kernels other than (or not
    named by) their records'."""
    lines = []
    moved_by_kernels: dict[tuple[str | None, str | None], list[str]] = {}
    for row in rows:
        if row.recipe_changes:
            lines.append(f"{row.run_id}: the current code's hyper-parameters differ: {'; '.join(row.recipe_changes)}")
        if not row.same_support:
            lines.append(f"{row.run_id}: the re-run drew another support set than the record's")
        old_kernels, new_kernels = row.cpu_kernels
        if row.new_dice is not None and row.new_dice != row.committed_dice and old_kernels != new_kernels:
            moved_by_kernels.setdefault(row.cpu_kernels, []).append(row.run_id)
    for (old_kernels, new_kernels), run_ids in moved_by_kernels.items():
        # one line per kernel pair: on a re-check of a whole experiment it is the same sentence for every run
        which = run_ids[0] if len(run_ids) == 1 else f"{len(run_ids)} runs ({', '.join(run_ids)})"
        records, reruns = ("records name", "re-runs") if len(run_ids) > 1 else ("record names", "re-run")
        lines.append(f"{which}: the {records} no CPU kernels; the {reruns} computed with {new_kernels}"
                     if old_kernels is None else
                     f"{which}: computed with other CPU kernels ({old_kernels}; the {reruns} {new_kernels})")
    return lines


def markdown_table(rows: list[Rechecked], tolerance: float) -> str:
    return rechecked_frame(rows, tolerance).to_markdown(index=False, disable_numparse=True)


def render_markdown(rows: list[Rechecked], tolerance: float, experiment: str, command: str) -> str:
    """The file a reviewer reads: what was run, when, how the tolerance reads, the table and the notes."""
    today = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d")
    lines = [
        f"# Re-check of `{experiment}`: committed records against the current code",
        "",
        f"Written by `{command}` on {today}. Each run below was run again under its own spec (same seed, support "
        "draw, budget and overrides) into a scratch folder; Dice × 100 on its evaluation split. `within`: the "
        f"re-run is at most {tolerance:g} Dice points from its record (see docs/records.md, re-checking records).",
        "",
        markdown_table(rows, tolerance),
        "",
        summary_line(rows, tolerance) + ".",
    ]
    extra = notes(rows)
    if extra:
        lines += ["", *(f"* {line}" for line in extra)]
    return "\n".join(lines) + "\n"
