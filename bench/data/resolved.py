"""The datasets of one grid, each resolved once into its plugin object under one data root.

Planning a grid resolves every dataset it names here; the grid's expansion, its checks, its runs and the
encoding before a fan-out then share those objects, so each release is scanned, and each task loaded, once
per process.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from bench.data.dataset import Dataset, dataset_plugin
from bench.data.samples import Task


class DatasetPlugins:
    """Dataset name → its plugin object under ``data_root``, resolved on first use and kept.

    Pickled (into a pool worker or a submitit job) as its data root alone: a user dataset's class is made at run
    time and cannot be pickled, so the receiving process resolves each name again, once, as its run needs it.
    """

    def __init__(self, data_root: Path | None = None) -> None:
        self.data_root = Path(data_root) if data_root is not None else None
        self._plugins: dict[str, Dataset] = {}

    @classmethod
    def resolve(cls, names: Iterable[str], data_root: Path | None) -> DatasetPlugins:
        """The plugins of ``names`` under ``data_root``, resolved now: an unknown name fails here."""
        plugins = cls(data_root)
        for name in names:
            plugins[name]  # noqa: B018 (resolved for its error, and kept)
        return plugins

    def __getitem__(self, name: str) -> Dataset:
        if name not in self._plugins:
            plugin = dataset_plugin(name, self.data_root)
            self._plugins[name] = plugin
            # a dataset given by its path is planned, and its runs look it up, under its own name
            self._plugins.setdefault(plugin.name, plugin)
        return self._plugins[name]

    def task(self, dataset: str, task: str) -> Task:
        """Task ``task`` of ``dataset``, loaded once by its plugin."""
        return self[dataset].task(task)

    def check_present(self) -> None:
        """Fail in one line, before anything is planned, when a dataset's files are not under the data root."""
        for plugin in dict.fromkeys(self._plugins.values()):
            require = getattr(plugin, "require_cases", None)
            if require is not None:
                require()

    def __getstate__(self) -> dict:
        return {"data_root": self.data_root}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["data_root"])
