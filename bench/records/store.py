"""Run records on disk ↔ pandas DataFrames. Everything reported is derived from these records."""

from __future__ import annotations

import json
import re
import warnings
from pathlib import Path

import pandas as pd

from bench.data.samples import write_json_atomic
from bench.errors import BenchError
from bench.records.claims import SUFFIX
from bench.records.descriptions import DATASET_INFO, METHOD_INFO
from bench.records.spec import EVAL_SPLITS, shots_label

# The format of the records this version writes (2: records describe their method and dataset, see
# ``bench.records.descriptions``); a record of a newer format is skipped, not misread
RECORD_VERSION = 2
# what identifies one version of a record file: (modification time in ns, size)
RecordStamp = tuple[int, int]
DEFAULT_EXPERIMENT = "default"  # the experiment of `bench run` without --experiment, and what reports read
_EXPERIMENT_NAME = re.compile(r"[A-Za-z0-9._-]+")
# What the report reads from a record, checked when records are loaded so a hand-edited file is skipped by name
_TEXT_SPEC_KEYS = ("method", "dataset", "task", "labels", "budget")
_METRICS = ("dice", "hd95")
_NUMBER_KEYS = ("fit_seconds", "infer_seconds_per_image", "peak_memory_mb", "params_total", "params_trainable")
SPEC_COLUMNS = ("method", "dataset", "task", "labels", "shots", "draw", "seed", "budget", "backbone", "eval_split")
# What a record says about its plugins (``bench.records.descriptions``), as frame columns: None in records written
# before records described themselves. ``bench.records.names.Names`` reads them.
DESCRIPTION_COLUMNS = {
    METHOD_INFO: {"display_name": "method_display", "group": "group", "training_free": "training_free",
                  "prompted": "prompted"},
    DATASET_INFO: {"display_name": "dataset_display", "task_display": "task_display", "tasks": "dataset_tasks",
                   "spacing_unit": "spacing_unit"},
}  # fmt: skip


def experiment_folder(results: Path, experiment: str) -> Path:
    """``results/experiment``; the name must be one plain folder name, so records never land elsewhere."""
    if not _EXPERIMENT_NAME.fullmatch(experiment or "") or experiment in (".", ".."):
        raise BenchError(
            f"--experiment takes one folder name of letters, digits, '.', '_' and '-', not '{experiment}'"
        )
    return Path(results) / experiment


def runs_folder(results: Path, experiment: str) -> Path:
    return experiment_folder(results, experiment) / "runs"


def record_path(results: Path, experiment: str, run_id: str) -> Path:
    return runs_folder(results, experiment) / f"{run_id}.json"


def prediction_path(results: Path, experiment: str, run_id: str) -> Path:
    return predictions_folder(results, experiment) / f"{run_id}.npz"


def predictions_folder(results: Path, experiment: str) -> Path:
    return experiment_folder(results, experiment) / "predictions"


def checkpoint_path(results: Path, experiment: str, run_id: str) -> Path:
    """Where a run's fit is saved while it trains, to be resumed by a later command (``bench.method.resumable``)."""
    return experiment_folder(results, experiment) / "checkpoints" / f"{run_id}.pt"


def claims_folder(results: Path, experiment: str) -> Path:
    """Where the processes running an experiment's runs claim them (``bench.records.claims``)."""
    return experiment_folder(results, experiment) / "claims"


def claim_path(results: Path, experiment: str, run_id: str) -> Path:
    return claims_folder(results, experiment) / f"{run_id}{SUFFIX}"


def experiments(results: Path) -> list[str]:
    """The experiments under ``results`` that hold at least one record file, by name."""
    return sorted({path.parent.parent.name for path in Path(results).glob("*/runs/*.json")})


def choose_experiment(results: Path, experiment: str | None = None) -> str:
    """The one experiment a table, report or figure reads: ``experiment`` when named; else ``default``
    (where `bench run` writes without --experiment) when it holds records, else the only experiment there
    is. Several and none named: one error line listing them. Records of two experiments are never pooled:
    each is its own grid, and a run spec found in both would be counted twice."""
    results = Path(results)
    if not results.is_dir():
        raise BenchError(f"results folder '{results}' does not exist")
    if experiment is not None:
        experiment_folder(results, experiment)
        return experiment
    present = experiments(results)
    if DEFAULT_EXPERIMENT in present or not present:
        return DEFAULT_EXPERIMENT
    if len(present) == 1:
        return present[0]
    raise BenchError(
        f"'{results}' holds {len(present)} experiments and no '{DEFAULT_EXPERIMENT}'; name one with --experiment:"
        f" {', '.join(present)}"
    )


def record_files(results: Path, experiment: str | None = None) -> list[Path]:
    """The record files of one experiment (``choose_experiment``)."""
    return sorted(runs_folder(results, choose_experiment(results, experiment)).glob("*.json"))


def load_records(results: Path, experiment: str | None = None) -> list[dict]:
    """Every readable record of one experiment (``choose_experiment``); an unreadable file is skipped with a
    warning naming it, and a second file of one run id (a copy under another name) is skipped too, so no run
    counts twice."""
    return _read_records(record_files(results, experiment))


def search_records(results: Path, experiment: str | None = None) -> list[dict]:
    """The records of ``experiment``, or of every experiment when None: for finding one run by its id or
    method (`bench predict`), never for counting runs."""
    if experiment is not None:
        return load_records(results, experiment)
    if not Path(results).is_dir():
        raise BenchError(f"results folder '{results}' does not exist")
    return _read_records(sorted(Path(results).glob("*/runs/*.json")))


def _read_records(paths: list[Path]) -> list[dict]:
    records: dict[tuple, dict] = {}
    for path in paths:
        try:
            record = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            warnings.warn(f"skipping unreadable record {path}: {error}", stacklevel=3)
            continue
        problem = record_problem(record)
        if problem:
            warnings.warn(f"skipping record {path}: {problem}", stacklevel=3)
            continue
        key = (path.parent.parent.name, record.get("run_id") or path.stem)
        if key in records:
            warnings.warn(f"skipping record {path}: a second record of run {key[1]}", stacklevel=3)
            continue
        records[key] = record
    return list(records.values())


def record_problem(record: object) -> str | None:
    """Why ``record`` cannot be reported on (a hand-edited or foreign file, a newer format), or None."""
    if not isinstance(record, dict):
        return "not a run record (no JSON object)"
    version = record.get("record_version", 1)
    if not isinstance(version, int) or version > RECORD_VERSION:
        return f"record_version {version!r} is newer than this medsam-bench reads ({RECORD_VERSION}); upgrade it"
    spec = record.get("spec")
    if not isinstance(spec, dict) or not all(isinstance(spec.get(key), str) for key in _TEXT_SPEC_KEYS):
        return f"its spec lacks one of {', '.join(_TEXT_SPEC_KEYS)}"
    if not (spec.get("shots") is None or _is_int(spec.get("shots"))) or not all(
        _is_int(spec.get(key)) for key in ("draw", "seed")
    ):
        return "its spec's shots, draw or seed is not an integer"
    if record.get("status") not in ("ok", "failed"):
        return f"status {record.get('status')!r} is neither ok nor failed"
    cases = record.get("cases")
    if not isinstance(cases, list) or not all(
        isinstance(case, dict) and isinstance(case.get("id"), str) and all(_is_number(case.get(m)) for m in _METRICS)
        for case in cases
    ):
        return f"its cases are not a list of {{id, {', '.join(_METRICS)}}} with numbers"
    for key in _NUMBER_KEYS:
        if record.get(key) is not None and not _is_number(record[key]):
            return f"{key} is not a number"
    return None


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def require_records(results: Path, experiment: str | None = None, split: str | None = None) -> list[dict]:
    """``load_records`` of one evaluation split (``of_split``), or one error line when there is nothing."""
    experiment = choose_experiment(results, experiment)
    records = load_records(results, experiment)
    if not records:
        present = experiments(results)
        listed = f"; experiments here: {', '.join(present)}" if present else ""
        raise BenchError(f"no run records in '{experiment_folder(results, experiment)}'{listed}")
    return of_split(records, split)


def record_split(record: dict) -> str:
    """The split a record was scored on; records written before the split was a choice were scored on test."""
    spec = record.get("spec")
    return (spec.get("eval_split") if isinstance(spec, dict) else None) or "test"


def of_split(records: list[dict], split: str | None = None) -> list[dict]:
    """The records scored on ``split``; by default on test, or on the one split there is.

    Tables and reports never mix splits: a number tuned on val must not sit in a column of test results.
    """
    present = sorted({record_split(record) for record in records})
    if split is not None and split not in EVAL_SPLITS:
        raise BenchError(f"--split takes {' or '.join(EVAL_SPLITS)}, not '{split}'")
    chosen = split or ("test" if "test" in present else present[0])
    kept = [record for record in records if record_split(record) == chosen]
    if not kept:
        raise BenchError(f"no run records scored on the {chosen} split (records here: {', '.join(present)})")
    return kept


def existing_record(results: Path, experiment: str, run_id: str) -> dict | None:
    """The record of ``run_id`` in ``experiment``, or None when there is none or it cannot be read."""
    path = record_path(results, experiment, run_id)
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def write_record(results: Path, experiment: str, record: dict) -> Path:
    """Write ``record`` (its ``run_id``'s) into ``experiment`` atomically, so no reader sees half a file; its path."""
    path = record_path(results, experiment, record["run_id"])
    write_json_atomic(path, record)
    return path


def record_stamp(results: Path, experiment: str, run_id: str) -> RecordStamp | None:
    """The stamp of ``run_id``'s record, or None when it has none."""
    try:
        status = record_path(results, experiment, run_id).stat()
    except FileNotFoundError:
        return None
    return status.st_mtime_ns, status.st_size


def _spec_row(spec: dict) -> dict:
    """The spec columns of a frame row. ``backbone`` is "" for methods without one: it is a group key, and
    pandas drops or never matches a missing key."""
    row = {column: spec.get(column) for column in SPEC_COLUMNS}
    row["shots"] = shots_label(spec.get("shots"))
    row["backbone"] = spec.get("backbone") or ""
    row["eval_split"] = spec.get("eval_split") or "test"
    row["variant"] = variant_text(spec.get("overrides"))
    return row


def variant_text(overrides: object) -> str:
    """A run's ``--set`` overrides as "key=value, …" ("" for none): runs that differ in them are different
    configurations, kept apart in every table."""
    if not isinstance(overrides, dict) or not overrides:
        return ""
    return ", ".join(f"{key}={value}" for key, value in sorted(overrides.items()))


def _row_variant(record: dict) -> str:
    """The row's ``variant``: its ``--set`` overrides and, for a `bench evaluate` record (a model scored on
    another dataset than it was trained on), "trained on <dataset> <task>", so it is a row of its own. A model
    scored on the other split of its own dataset and task is the run's configuration as a val (or test) run
    would give it, so its row is that configuration's (scored on its own split, it keeps the suffix: the run's
    own record is in the same table)."""
    spec = record.get("spec", {})
    variant = variant_text(spec.get("overrides"))
    trained_on = record.get("trained_on") if record.get("eval_of") else None
    if not isinstance(trained_on, dict):
        return variant
    same_data = (trained_on.get("dataset"), trained_on.get("task")) == (spec.get("dataset"), spec.get("task"))
    if same_data and trained_on.get("split") not in (None, record_split(record)):
        return variant
    return ", ".join(filter(None, [variant, f"trained on {trained_on.get('display') or trained_on.get('dataset')}"]))


def _description_row(record: dict) -> dict:
    """The description columns of a frame row, and when the record was finished (the newest record's
    description is the one shown when a plugin was renamed between runs)."""
    row = {}
    for field, columns in DESCRIPTION_COLUMNS.items():
        described = record.get(field)
        described = described if isinstance(described, dict) else {}  # absent, or a hand-edited file
        for key, column in columns.items():
            value = described.get(key)
            row[column] = tuple(value) if isinstance(value, list) else value
    row["finished"] = record.get("finished")
    row["started"] = record.get("started")
    return row


def runs_frame(records: list[dict]) -> pd.DataFrame:
    """One row per run: the spec and description columns, status, mean Dice/HD95 and the cost figures."""
    rows = []
    for record in records:
        spec = record.get("spec", {})
        cases = record.get("cases") or []
        row = {**_spec_row(spec), **_description_row(record), "variant": _row_variant(record)}
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
            # records written before runs measured their own peak have none: then it was the CUDA allocator's
            # peak on a GPU and the process-wide peak resident set on a CPU
            peak_memory_kind=record.get("peak_memory_kind"),
            params_total=record.get("params_total"),
            params_trainable=record.get("params_trainable"),
            epochs=(record.get("hparams") or {}).get("epochs"),
            device=record.get("device"),
            # records written before the precision was a choice computed in fp32 (every one of them on a CPU)
            precision=record.get("precision", "fp32"),
        )
        rows.append(row)
    return pd.DataFrame(rows)


def cases_frame(records: list[dict]) -> pd.DataFrame:
    """One row per (run, test case) of the runs that finished."""
    rows = []
    for record in records:
        if record.get("status") != "ok":
            continue
        base = {**_spec_row(record["spec"]), **_description_row(record), "variant": _row_variant(record),
                "run_id": record["run_id"]}
        for case in record.get("cases", []):
            rows.append({**base, "case": case["id"], **{k: v for k, v in case.items() if k != "id"}})
    return pd.DataFrame(rows)
