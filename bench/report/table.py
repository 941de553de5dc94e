"""The results table: mean ± std over runs (seeds × draws) of each run's mean metric."""

from __future__ import annotations

import pandas as pd

from bench.errors import BenchError

FORMATS = ("md", "latex", "csv")
METRICS = ("dice", "hd95")


def summarise(runs: pd.DataFrame, metric: str = "dice") -> pd.DataFrame:
    """One row per (method, labels, shots, dataset, task): mean, std and number of finished runs."""
    if metric not in METRICS:
        raise BenchError(f"--metric takes {', '.join(METRICS)}, not '{metric}'")
    finished = runs[runs["status"] == "ok"].copy()
    scale = 100.0 if metric == "dice" else 1.0
    finished["value"] = finished[metric] * scale
    keys = ["method", "labels", "shots", "dataset", "task", "budget"]
    grouped = finished.groupby(keys, dropna=False)["value"]
    return grouped.agg(mean="mean", std=lambda v: v.std(ddof=0), runs="count").reset_index()


def render_table(runs: pd.DataFrame, metric: str = "dice", fmt: str = "md") -> str:
    if fmt not in FORMATS:
        raise BenchError(f"--format takes {', '.join(FORMATS)}, not '{fmt}'")
    summary = summarise(runs, metric)
    if summary.empty:
        raise BenchError("no finished runs to tabulate")
    summary["cell"] = [f"{m:.2f} ± {s:.2f}" for m, s in zip(summary["mean"], summary["std"], strict=True)]
    summary["column"] = summary["dataset"] + " " + summary["task"]
    wide = summary.pivot_table(
        index=["method", "labels", "shots", "budget"], columns="column", values="cell", aggfunc="first"
    ).fillna("–")
    wide.columns.name = None
    wide = wide.reset_index()
    if fmt == "csv":
        return wide.to_csv(index=False)
    if fmt == "latex":
        return wide.to_latex(index=False, escape=True)
    return wide.to_markdown(index=False)
