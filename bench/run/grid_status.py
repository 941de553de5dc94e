"""`bench status`: where a grid stands, per experiment and method, from its records, jobs and claims."""

from __future__ import annotations

from collections import Counter, defaultdict
from pathlib import Path

from bench.errors import BenchError
from bench.records import claims
from bench.records.spec import RunSpec
from bench.records.store import claims_folder, experiment_folder
from bench.run.submitit_jobs import SubmititJobs


def grid_status(results: Path, experiment: str | None = None) -> list[dict]:
    """Per experiment and method: runs done, failed, queued or running, and missing.

    Queued or running: submitit jobs not ended, and runs claimed by a live process (any executor; see
    ``bench.records.claims``). Jobs that ended are collected first (a job that died gets its failed record). Missing
    runs are those of the grid rebuilt from the records (``bench.records.run_status``) that have no
    record, no job and no claim.
    """
    from bench.records.run_status import SPEC_KEYS, run_status
    from bench.records.store import load_records, runs_frame

    results = Path(results)
    if not results.is_dir():
        raise BenchError(f"results folder '{results}' does not exist")
    if experiment is not None:
        names = [experiment_folder(results, experiment).name]
    else:
        names = sorted(path.name for path in results.iterdir()
                       if any((path / sub).is_dir() for sub in ("runs", "submitit", "claims")))  # fmt: skip
    rows = []
    for name in names:
        pending = SubmititJobs(results, name, "local").collect()
        for run_id, holder in claims.live_holders(claims_folder(results, name)).items():
            if run_id not in pending and isinstance(holder.details.get("spec"), dict):
                pending[run_id] = RunSpec.from_dict(holder.details["spec"])
        records = load_records(results, name) if (results / name / "runs").is_dir() else []
        records = [record for record in records if "eval_of" not in record]  # `bench evaluate`'s are no grid runs
        counts: dict[str, Counter] = defaultdict(Counter)
        pending_keys = set()
        for spec in pending.values():
            counts[spec.method]["queued_or_running"] += 1
            pending_keys.add(tuple(getattr(spec, key) if key != "shots" else spec.shots_label for key in SPEC_KEYS))
        if records:
            runs = runs_frame(records)
            runs = runs[~runs["run_id"].isin(pending)]  # a failed run submitted or claimed again counts as such
            if not runs.empty:
                table, _, missing = run_status(runs)
                for row in table.itertuples():
                    counts[row.method]["done"] += row.ok
                    counts[row.method]["failed"] += row.failed
                for key in set(missing) - pending_keys:
                    counts[key[0]]["missing"] += 1
        columns = ("done", "failed", "queued_or_running", "missing")
        rows += [{"experiment": name, "method": method, **{column: row[column] for column in columns}}
                 for method, row in sorted(counts.items())]  # fmt: skip
    return rows
