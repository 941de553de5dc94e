"""Run records on disk ↔ pandas DataFrames. Everything reported is derived from these records."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pandas as pd

from bench.errors import BenchError
from bench.spec import shots_label

SPEC_COLUMNS = ("method", "dataset", "task", "labels", "shots", "draw", "seed", "budget", "backbone")


def runs_folder(results: Path, experiment: str) -> Path:
    return Path(results) / experiment / "runs"


def record_path(results: Path, experiment: str, run_id: str) -> Path:
    return runs_folder(results, experiment) / f"{run_id}.json"


def prediction_path(results: Path, experiment: str, run_id: str) -> Path:
    return Path(results) / experiment / "predictions" / f"{run_id}.npz"


def record_files(results: Path, experiment: str | None = None) -> list[Path]:
    results = Path(results)
    if not results.is_dir():
        raise BenchError(f"results folder '{results}' does not exist")
    pattern = f"{experiment}/runs/*.json" if experiment else "*/runs/*.json"
    return sorted(results.glob(pattern))


def load_records(results: Path, experiment: str | None = None) -> list[dict]:
    """Every readable record; an unreadable file is skipped with a warning naming it."""
    records = []
    for path in record_files(results, experiment):
        try:
            records.append(json.loads(path.read_text()))
        except (OSError, json.JSONDecodeError) as error:
            warnings.warn(f"skipping unreadable record {path}: {error}", stacklevel=2)
    return records


def require_records(results: Path, experiment: str | None = None) -> list[dict]:
    """``load_records``, or one error line when there is nothing to report on."""
    records = load_records(results, experiment)
    if not records:
        raise BenchError(f"no run records under '{results}'")
    return records


def existing_status(results: Path, experiment: str, run_id: str) -> str | None:
    path = record_path(results, experiment, run_id)
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text()).get("status")
    except (OSError, json.JSONDecodeError):
        return None


def _spec_row(spec: dict) -> dict:
    """The spec columns of a frame row. ``backbone`` is "" for methods without one: it is a group key, and
    pandas drops or never matches a missing key."""
    row = {column: spec.get(column) for column in SPEC_COLUMNS}
    row["shots"] = shots_label(spec.get("shots"))
    row["backbone"] = spec.get("backbone") or ""
    return row


def runs_frame(records: list[dict]) -> pd.DataFrame:
    """One row per run: the spec columns, status, mean Dice/HD95 and the cost figures."""
    rows = []
    for record in records:
        spec = record.get("spec", {})
        cases = record.get("cases") or []
        row = _spec_row(spec)
        row.update(
            run_id=record.get("run_id"),
            experiment=record.get("experiment"),
            status=record.get("status"),
            error=record.get("error"),
            dice=sum(c["dice"] for c in cases) / len(cases) if cases else float("nan"),
            hd95=sum(c["hd95"] for c in cases) / len(cases) if cases else float("nan"),
            n_cases=len(cases),
            fit_seconds=record.get("fit_seconds"),
            infer_seconds_per_image=record.get("infer_seconds_per_image"),
            peak_memory_mb=record.get("peak_memory_mb"),
            params_total=record.get("params_total"),
            params_trainable=record.get("params_trainable"),
            epochs=(record.get("hparams") or {}).get("epochs"),
            device=record.get("device"),
        )
        rows.append(row)
    return pd.DataFrame(rows)


def cases_frame(records: list[dict]) -> pd.DataFrame:
    """One row per (run, test case) of the runs that finished."""
    rows = []
    for record in records:
        if record.get("status") != "ok":
            continue
        base = {**_spec_row(record["spec"]), "run_id": record["run_id"]}
        for case in record.get("cases", []):
            rows.append({**base, "case": case["id"], **{k: v for k, v in case.items() if k != "id"}})
    return pd.DataFrame(rows)
