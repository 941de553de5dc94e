"""The training-time report (cost per method and dataset) and the run-status summary, from the records."""

from __future__ import annotations

import numpy as np
import pandas as pd

from bench.records.names import GROUP_ORDER, Names, shots_sort_key, shots_text
from bench.records.rows import budget_rank, headline, labels_rank, one_line, with_row_names

COST_KEYS = ["budget", "dataset", "method", "variant", "labels", "shots", "backbone"]
COST_NOTES = (
    "One row per Table 1 row; tasks of a dataset are pooled. Fit time: mean ± std over runs; time per epoch:"
    " fit time over the run's `epochs` hyper-parameter (– for methods without epochs); time per image-step:"
    " time per epoch over the run's training images; inference: per test image; parameters: total and"
    " trainable; peak memory: each run's own peak, largest over the runs, and"
    " the measure it is (memory measure): on a GPU the CUDA allocator's peak allocation minus what was allocated"
    " at the run's start (cuda-allocator-increase; older records: the allocator's peak, cuda-allocator); on a"
    " CPU the highest resident set size sampled during fit and prediction minus the resident set at the run's"
    " start (cpu-rss-increase; it excludes the data and the backbone loaded before the run). Older records give"
    " no measure: there a CPU figure is the process-wide peak resident set. Ratios (× the reference) compare a"
    " row with the reference method's headline row of the same budget, dataset and training samples: never"
    " across budgets, whose epochs and input sizes differ, and never for a method that does not train (no"
    " trainable parameters), whose fit time is bookkeeping."
)
_REFERENCE_SAME = ["budget", "dataset", "shots"]


def training_images(records: list[dict]) -> dict[str, float]:
    """Run id → how many training images the run was fitted on (its support set), for the image-step time."""
    return {record["run_id"]: float(len(record["support_ids"])) for record in records
            if record.get("status") == "ok" and record.get("support_ids")}  # fmt: skip


def cost_table(
    runs: pd.DataFrame, reference: str, images: dict[str, float] | None = None
) -> pd.DataFrame:
    """Per Table 1 row (COST_KEYS), pooling tasks: costs, and ratios to the reference's headline row.

    ``images`` (``training_images``) gives each run's training images for ``ms_per_image_step``. ``fit_ratio``
    and ``epoch_ratio`` are the row's mean fit time and time per epoch over those of the reference's headline
    row (``rows.headline``) at the same budget, dataset and training samples; NaN without one, and for methods
    that do not train (``trains`` False: training-free, or no trainable parameters). Time per epoch is each
    run's fit time over its ``hparams["epochs"]``, averaged; NaN for methods without epochs.
    """
    finished = runs[runs["status"] == "ok"].copy()
    if finished.empty:
        return pd.DataFrame()
    if "variant" not in finished:
        finished["variant"] = ""
    # `bench evaluate` records have no fit time (None): numeric columns, so their rows' costs are NaN, not objects
    for column in ("fit_seconds", "infer_seconds_per_image", "peak_memory_mb", "params_total", "params_trainable"):
        if column in finished:
            finished[column] = pd.to_numeric(finished[column], errors="coerce")
    epochs = pd.to_numeric(finished["epochs"], errors="coerce")
    finished["seconds_per_epoch"] = finished["fit_seconds"] / epochs.where(epochs > 0)
    counts = finished["run_id"].map(images or {}).astype(float)
    finished["ms_per_image_step"] = 1000.0 * finished["seconds_per_epoch"] / counts.where(counts > 0)
    finished["infer_ms_per_image"] = finished["infer_seconds_per_image"] * 1000.0
    grouped = finished.groupby(COST_KEYS, dropna=False)
    table = grouped.agg(
        runs=("run_id", "count"),
        params_total=("params_total", "max"),
        params_trainable=("params_trainable", "max"),
        fit_seconds_mean=("fit_seconds", "mean"),
        fit_seconds_std=("fit_seconds", lambda v: v.std(ddof=0)),
        seconds_per_epoch=("seconds_per_epoch", "mean"),
        ms_per_image_step=("ms_per_image_step", "mean"),
        infer_ms_per_image=("infer_ms_per_image", "mean"),
        peak_memory_mb=("peak_memory_mb", "max"),
        peak_memory_kind=("peak_memory_kind", lambda v: "; ".join(sorted({str(k) for k in v.dropna()}))),
        device=("device", lambda v: "; ".join(sorted({str(d) for d in v.dropna()}))),
    ).reset_index()
    names = Names(runs)
    table = with_row_names(table, names)
    table["trains"] = ~table["training_free"].astype(bool) & (table["params_trainable"].fillna(1) > 0)
    _reference_ratios(table, reference, names.default_labels(reference))
    table["_shots"] = table["shots"].map(shots_sort_key)
    table["_group"] = table["group"].map(GROUP_ORDER.index)
    table["_labels"] = table["labels"].map(labels_rank)
    table["_budget"] = table["budget"].map(budget_rank)
    table = table.sort_values(["_budget", "dataset_display", "_shots", "_group", "method_display", "_labels",
                               "variant"])  # fmt: skip
    return table.drop(columns=["_shots", "_group", "_labels", "_budget"]).reset_index(drop=True)


def _reference_ratios(table: pd.DataFrame, reference: str, default_labels: str | None) -> None:
    """Fill ``reference_row``, ``fit_ratio`` and ``epoch_ratio`` of ``table`` in place."""
    table["reference_row"] = None
    table[["fit_ratio", "epoch_ratio"]] = np.nan
    for _, same in table.groupby(_REFERENCE_SAME):
        chosen = headline(same[(same["method"] == reference) & same["trains"]], default_labels)
        if chosen is None:
            continue
        trained = same[same["trains"]].index
        table.loc[trained, "reference_row"] = chosen["row_label"]
        for ratio, column in (("fit_ratio", "fit_seconds_mean"), ("epoch_ratio", "seconds_per_epoch")):
            denominator = chosen[column] if chosen[column] > 0 else np.nan
            table.loc[trained, ratio] = table.loc[trained, column] / denominator


def _number(value: float, spec: str) -> str:
    return "–" if value is None or pd.isna(value) else format(value, spec)


def _times(value: float) -> str:
    return _number(value, ".2f") + ("×" if not pd.isna(value) else "")


def cost_markdown(table: pd.DataFrame, reference_display: str) -> str:
    rows = [
        {
            "Method": row.row_display,
            "Labels": row.labels,
            "Dataset": row.dataset_display,
            "Training samples": shots_text(row.shots, row.training_free),
            "Backbone": row.backbone or "–",
            "Budget": "–" if row.training_free else row.budget,  # as Table 1: nothing to budget
            "Runs": str(row.runs),
            "Params (total)": _number(row.params_total, ",.0f"),
            "Params (trainable)": _number(row.params_trainable, ",.0f"),
            "Fit time [s]": f"{_number(row.fit_seconds_mean, '.1f')} ± {_number(row.fit_seconds_std, '.1f')}",
            "Time per epoch [s]": _number(row.seconds_per_epoch, ".2f"),
            "Time per image-step [ms]": _number(row.ms_per_image_step, ".0f"),
            "Inference [ms/image]": _number(row.infer_ms_per_image, ".1f"),
            "Peak memory [MB]": _number(row.peak_memory_mb, ",.0f"),
            "Memory measure": row.peak_memory_kind or "–",
            "Device": row.device or "–",
            f"Fit time vs {reference_display}": _times(row.fit_ratio),
            f"Per epoch vs {reference_display}": _times(row.epoch_ratio),
        }
        for row in table.itertuples()
    ]
    return pd.DataFrame(rows).to_markdown(index=False, disable_numparse=True)


def ratio_sentences(table: pd.DataFrame) -> list[str]:
    """"AutoSAM · mask · k=10 · quick against Prompt module (ours) · mask · k=10 · quick (HC18): fit time
    0.37×, time per epoch 1.83×." for each row compared with a reference row other than itself."""
    sentences = []
    compared = table[table["reference_row"].notna() & (table["reference_row"] != table["row_label"])]
    for row in compared.itertuples():
        parts = [f"fit time {_times(row.fit_ratio)}"]
        if not pd.isna(row.epoch_ratio):
            parts.append(f"time per epoch {_times(row.epoch_ratio)}")
        sentences.append(f"{one_line(row.row_label)} against {one_line(row.reference_row)}"
                         f" ({row.dataset_display}): {', '.join(parts)}.")  # fmt: skip
    return sentences
