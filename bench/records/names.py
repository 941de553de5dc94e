"""How records' plugin names are shown: display names, Table 1 groups, task names and method colours.

Every record describes its method and dataset (``bench.records.descriptions``) and the store's frames carry those
descriptions as columns, so a results folder renders the same on a machine without the plugins that made
it, and a new method lands in its group without touching the report code. Records written before records
described themselves fall back to what the registry declares, read without importing any plugin
(``descriptions.declared``): the report never imports model code. Names nothing describes render raw,
methods in the group "Other", after the paper's groups.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import pandas as pd

from bench.records.descriptions import GROUPS, declared, describe_method
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
    training_free: bool = False
    prompted: bool = False

    @classmethod
    def from_description(cls, name: str, description: Mapping) -> MethodInfo:
        """From a record's ``method_info`` (or the same fields of the registry's declaration)."""
        group = description.get("group")
        return cls(
            name,
            str(description.get("display_name") or name),
            group if group in GROUPS else OTHER_GROUP,
            bool(description.get("training_free")),
            bool(description.get("prompted")),
        )

    @property
    def shows_labels(self) -> bool:
        """Whether its label regime means anything: a method that neither learns from labels nor is
        prompted with them (a training-free automatic one) runs under a regime in name only."""
        return self.prompted or not self.training_free


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    display: str
    tasks: tuple[str, ...] = ()  # the plugin's own task order (CAMUS: LV, LA)
    task_display: dict[str, str] = field(default_factory=dict)
    spacing_unit: str | None = None  # of HD95: "mm", "px" or "mixed"; None when nothing says


class Names:
    """What the records in a store frame (``store.runs_frame`` or ``cases_frame``) say about their methods
    and datasets, with the registry's declarations for records that say nothing. When records of one plugin
    disagree (it was renamed between runs), the most recently finished one is followed."""

    def __init__(self, frame: pd.DataFrame | None = None) -> None:
        self._methods: dict[str, MethodInfo] = {}
        self._datasets: dict[str, DatasetInfo] = {}
        self._tasks: dict[tuple[str, str], str] = {}
        if frame is None or frame.empty:
            return
        if "finished" in frame:
            frame = frame.sort_values("finished", na_position="first", kind="stable")
        if "method_display" in frame:
            for row in _distinct(frame, "method_display", ("method", "group", "training_free", "prompted")):
                self._methods[row["method"]] = MethodInfo.from_description(row["method"], {
                    "display_name": row["method_display"], "group": row.get("group"),
                    "training_free": _true(row.get("training_free")), "prompted": _true(row.get("prompted")),
                })  # fmt: skip
        if "dataset_display" in frame:
            for row in _distinct(frame, "dataset_display", ("dataset", "task", "dataset_tasks", "task_display",
                                                            "spacing_unit")):  # fmt: skip
                tasks = row.get("dataset_tasks")
                unit = row.get("spacing_unit")
                self._datasets[row["dataset"]] = DatasetInfo(
                    row["dataset"], str(row["dataset_display"]), tuple(tasks) if isinstance(tasks, tuple) else (),
                    spacing_unit=unit if isinstance(unit, str) else None,
                )  # fmt: skip
                if isinstance(row.get("task_display"), str) and "task" in row:
                    self._tasks[(row["dataset"], row["task"])] = row["task_display"]

    def method(self, name: str) -> MethodInfo:
        if name not in self._methods:
            plugin = declared(METHODS, name)
            self._methods[name] = (
                MethodInfo(name, name, OTHER_GROUP) if plugin is None
                else MethodInfo.from_description(name, describe_method(plugin, name))
            )  # fmt: skip
        return self._methods[name]

    def default_labels(self, name: str) -> str | None:
        """The label regime `bench run` gives the method when --labels is not given (its plugin's first
        ``default_labels``, read without importing it), which picks its headline row; None when no plugin
        here declares one (the report then prefers mask, box, box-noisy in that order)."""
        labels = getattr(declared(METHODS, name), "default_labels", None)
        return str(labels[0]) if isinstance(labels, (tuple, list)) and labels else None

    def _dataset(self, name: str) -> DatasetInfo:
        if name not in self._datasets:
            self._datasets[name] = self._declared_dataset(name)
        return self._datasets[name]

    @staticmethod
    def _declared_dataset(name: str) -> DatasetInfo:
        plugin = declared(DATASETS, name)
        return DatasetInfo(
            name,
            str(getattr(plugin, "display_name", name)),
            tuple(getattr(plugin, "tasks", ())),
            dict(getattr(plugin, "task_display", None) or {}),
        )

    def dataset_display(self, dataset: str) -> str:
        return self._dataset(dataset).display

    def task_display(self, dataset: str, task: str) -> str:
        recorded = self._tasks.get((dataset, task))
        return recorded or self._declared_dataset(dataset).task_display.get(task, task)

    def task_label(self, dataset: str, task: str) -> str:
        return f"{self.dataset_display(dataset)} {self.task_display(dataset, task)}"

    def task_order(self, dataset: str) -> tuple[str, ...]:
        """The dataset plugin's own task order, or () when nothing says."""
        return self._dataset(dataset).tasks

    def spacing_unit(self, dataset: str) -> str | None:
        return self._dataset(dataset).spacing_unit

    def annotate(self, frame: pd.DataFrame) -> pd.DataFrame:
        """A copy with method_display, group, training_free, prompted, dataset_display and (given tasks)
        task_label."""
        frame = frame.copy()
        infos = {name: self.method(name) for name in frame["method"].unique()}
        frame["method_display"] = frame["method"].map(lambda name: infos[name].display)
        frame["group"] = frame["method"].map(lambda name: infos[name].group)
        frame["training_free"] = frame["method"].map(lambda name: infos[name].training_free)
        frame["prompted"] = frame["method"].map(lambda name: infos[name].prompted)
        frame["dataset_display"] = frame["dataset"].map(self.dataset_display)
        if "task" in frame:
            pairs = zip(frame["dataset"], frame["task"], strict=True)
            frame["task_label"] = [self.task_label(dataset, task) for dataset, task in pairs]
        return frame

    def palette(self, methods: Iterable[str]) -> dict[str, tuple[float, float, float]]:
        """A colour per display name of ``methods``, fixed by the sorted registered names so every figure
        agrees; methods that are not registered (plugins absent here) get the colours after them."""
        methods = set(methods)
        registered = METHODS.names()
        ordered = registered + sorted(methods - set(registered))
        import seaborn as sns  # only the plots need it; `bench table` should not pay for importing it

        colours = sns.color_palette("tab10" if len(ordered) <= 10 else "tab20", len(ordered))
        return {self.method(name).display: colour for name, colour in zip(ordered, colours, strict=True)
                if name in methods}  # fmt: skip


def _distinct(frame: pd.DataFrame, described: str, columns: tuple[str, ...]) -> list[dict]:
    """The distinct descriptions in ``frame`` (one per run, not per test case), in the frame's order."""
    present = [described, *(column for column in columns if column in frame)]
    rows = frame.loc[frame[described].notna(), present]
    return rows.drop_duplicates(keep="last").to_dict("records")


def _true(value: object) -> bool:
    """A flag from a frame cell, where a missing value may be None or NaN (which is truthy)."""
    return bool(value) and not pd.isna(value)


def shots_text(shots: str, training_free: bool) -> str:
    """Training samples as the table shows them: k, All, or – for a method that trains on nothing."""
    if training_free:
        return "–"
    return "All" if shots == "all" else str(shots)


def shots_sort_key(shots: str) -> float:
    return float("inf") if shots == "all" else float(shots)
