"""How records' plugin names are shown: display names, Table 1 groups, task names and method colours.

Everything comes from the plugins themselves, so a new method lands in its group without touching the
report code. Records of methods or datasets that are no longer registered still render, under their raw
names (methods in the group "Other", after the paper's groups).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import pandas as pd

from bench.errors import BenchError
from bench.method import GROUPS
from bench.registry import DATASETS, METHODS

OTHER_GROUP = "Other"
GROUP_ORDER = (*GROUPS, OTHER_GROUP)
# "Best automatic result" is bolded among these: every group except the prompted one and unknown methods.
AUTOMATIC_GROUPS = tuple(group for group in GROUPS if group != "Promptable")
LABEL_ORDER = ("mask", "box", "box-noisy")


@dataclass(frozen=True)
class MethodInfo:
    name: str
    display: str
    group: str
    training_free: bool


def method_info(name: str) -> MethodInfo:
    try:
        cls = METHODS.get(name)
    except BenchError:  # unknown or unloadable: the record still renders under its raw name
        return MethodInfo(name, name, OTHER_GROUP, False)
    group = getattr(cls, "group", OTHER_GROUP)
    return MethodInfo(
        name,
        getattr(cls, "display_name", name),
        group if group in GROUPS else OTHER_GROUP,
        bool(getattr(cls, "training_free", False)),
    )


def dataset_display(name: str) -> str:
    try:
        return getattr(DATASETS.get(name), "display_name", name)
    except BenchError:
        return name


def task_display(dataset: str, task: str) -> str:
    try:
        return (getattr(DATASETS.get(dataset), "task_display", None) or {}).get(task, task)
    except BenchError:
        return task


def task_order(dataset: str) -> tuple[str, ...]:
    """The dataset plugin's own task order (CAMUS: LV, LA), or () when the plugin is unknown."""
    try:
        return tuple(getattr(DATASETS.get(dataset), "tasks", ()))
    except BenchError:
        return ()


def shots_text(shots: str, training_free: bool) -> str:
    """Training samples as the table shows them: k, All, or – for a method that trains on nothing."""
    if training_free:
        return "–"
    return "All" if shots == "all" else str(shots)


def shots_sort_key(shots: str) -> float:
    return float("inf") if shots == "all" else float(shots)


def annotate(frame: pd.DataFrame) -> pd.DataFrame:
    """A copy with method_display, group, training_free, dataset_display and (given tasks) task_label."""
    frame = frame.copy()
    infos = {name: method_info(name) for name in frame["method"].unique()}
    frame["method_display"] = frame["method"].map(lambda name: infos[name].display)
    frame["group"] = frame["method"].map(lambda name: infos[name].group)
    frame["training_free"] = frame["method"].map(lambda name: infos[name].training_free)
    frame["dataset_display"] = frame["dataset"].map(dataset_display)
    if "task" in frame:
        pairs = zip(frame["dataset"], frame["task"], strict=True)
        frame["task_label"] = [f"{dataset_display(d)} {task_display(d, t)}" for d, t in pairs]
    return frame


def method_palette(names: Iterable[str] = ()) -> dict[str, tuple[float, float, float]]:
    """A colour per method display name, fixed by the sorted registered names so every figure agrees.

    Names that are not registered (records of removed methods) get the colours after the registered ones.
    """
    registered = METHODS.names()
    ordered = registered + sorted(set(names) - set(registered))
    import seaborn as sns  # only the plots need it; `bench table` should not pay for importing it

    colours = sns.color_palette("tab10" if len(ordered) <= 10 else "tab20", len(ordered))
    return {method_info(name).display: colour for name, colour in zip(ordered, colours, strict=True)}
