"""The dataset contract, and how a dataset name on the command line becomes a plugin and its tasks.

A dataset plugin is a class registered in ``bench.registry.DATASETS`` (``datasets/`` holds the built-ins), or a
user's own dataset named by its layout and folder (``nnunet:<DatasetNNN_Name>``, ``folder:<folder>``), which a
registered family class turns into a class for that one dataset (``dataset_class``).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from bench.data.samples import Task
from bench.errors import BenchError


class Dataset:
    """Base class of dataset plugins: a release folder (``<data_root>/<name>``) turned into Tasks.

    Subclasses set the class attributes and implement ``load(task)``. They keep heavy imports (nibabel,
    SimpleITK) inside methods so that listing datasets stays cheap.
    """

    name: str
    display_name: str
    tasks: tuple[str, ...]
    task_display: dict[str, str] = {}
    needs_data_root: bool = True
    # a built-in release that never changes (or data generated from a seed): its run ids, split and support
    # files carry no content identity. Every other dataset, a --plugin's too, is identified by its content.
    fixed_release: bool = False

    def __init__(self, data_root: Path | None = None) -> None:
        from bench.paths import default_data_root

        self.data_root = Path(data_root) if data_root is not None else default_data_root()
        self._content_identity: str | None = None
        self._tasks: dict[str, Task] = {}

    @property
    def folder(self) -> Path:
        return self.data_root / self.name

    @property
    def own_folder(self) -> Path:
        """The one subfolder of the user's data folder the tool writes into (split and cache files)."""
        return self.folder / ".bench"

    def load(self, task: str) -> Task:  # pragma: no cover - abstract
        raise NotImplementedError

    def identity(self) -> str | None:
        """What the dataset holds, as a short digest that enters run ids and names support files, so that a
        changed dataset never resumes or reuses what was made from other data; None for a fixed release.

        This default loads every task and digests its split's ids, images and masks; a plugin that can say it
        more cheaply (``bench.data.release``: its files' names and sizes) overrides it.
        """
        if self.fixed_release:
            return None
        if self._content_identity is None:
            digest = hashlib.sha256()
            for task_name in self.tasks:
                task = self.load(task_name)
                for split in ("train", "val", "test"):
                    for sample in getattr(task, split):
                        digest.update(f"\x1e{task_name}\x1f{split}\x1f{sample.id}\x1f{sample.image.shape}".encode())
                        digest.update(np.ascontiguousarray(sample.image).tobytes())
                        digest.update(np.packbits(sample.mask).tobytes())
            self._content_identity = digest.hexdigest()[:12]
        return self._content_identity

    @classmethod
    def task_named(cls, name: str) -> str | None:
        """The task ``name`` designates, compared without regard to case (``--tasks lv`` is ``LV``)."""
        by_folded = {task.casefold(): task for task in cls.tasks}
        return name if name in cls.tasks else by_folded.get(name.casefold())

    def task(self, name: str) -> Task:
        """Task ``name`` (any case), stamped with the dataset's identity; loaded once per plugin object, so that
        the runs of a grid, which share one object per dataset (``bench.data.resolved``), load it once."""
        from bench.registry import did_you_mean

        named = self.task_named(name)
        if named is None:
            raise BenchError(
                f"dataset '{self.name}' has no task '{name}'; its tasks are {', '.join(self.tasks)}."
                + did_you_mean(name, list(self.tasks))
            )
        if named not in self._tasks:
            task = self.load(named)
            task.identity = self.identity()
            self._tasks[named] = task
        return self._tasks[named]


class _OwnDataForms:
    """The name forms of a user's own dataset, for the errors on an unknown name or folder: each registered
    family's ``form``, read when an error is written (the families are plugins, imported on demand)."""

    def __str__(self) -> str:
        from bench.data.family import families

        return ", ".join(family.form for family in families())


OWN_DATA_FORMS = _OwnDataForms()


def dataset_class(name: str, data_root: str | Path | None = None) -> type[Dataset]:
    """The plugin class of dataset ``name``: a registered name, or a user's dataset named by its layout and
    folder (``nnunet:Dataset501_CAMUS2CHED224``, ``folder:mydisc``), found under ``data_root``.

    A family (``nnunet``, ``folder``) is a registered class with ``for_argument(argument, data_root)``, which
    returns a class for that one dataset with its own name, tasks and folder.
    """
    from bench.errors import UnknownNameError
    from bench.registry import DATASETS

    family, separator, argument = name.partition(":")
    if not separator and ("/" in name or name.startswith(".")):  # a folder's path: its layout says the family
        family, separator, argument = _family_of_folder(Path(name)), ":", name
    if separator and family in DATASETS:
        family_cls = DATASETS.get(family)
        if not hasattr(family_cls, "for_argument"):
            raise BenchError(f"dataset '{family}' takes no ':' argument, as in '{name}'")
        return family_cls.for_argument(argument, Path(data_root) if data_root is not None else None)
    try:
        found = DATASETS.get(name)
    except UnknownNameError as error:
        raise UnknownNameError(f"{error} For your own data: {OWN_DATA_FORMS}; see docs/own-data.md.") from None
    if hasattr(found, "for_argument"):
        raise BenchError(f"dataset '{name}' needs a folder: {name}:<folder under --data-root>")
    return found


def _family_of_folder(folder: Path) -> str:
    """The registered name of the family whose layout ``folder`` has (each family declares what it recognises)."""
    from bench.data.family import family_of

    family = family_of(folder)
    if family is not None:
        return family.name
    what = "is not a folder; for your own data" if not folder.is_dir() else "is laid out as none of"
    raise BenchError(f"'{folder}' {what}: {OWN_DATA_FORMS}; see docs/own-data.md")


def locate_datasets(names: list[str], data_root: Path | None) -> tuple[list[str], Path | None]:
    """The datasets' names as planned, and the data root their runs read them under: a user dataset given by
    its path is named by its layout and folder name (``nnunet:Dataset501_X``), and when no data root is given,
    the folder holding it becomes the data root, so that every run, in any process, finds it by that name."""
    planned = []
    for name in names:
        found = dataset_class(name, data_root)
        location = getattr(found, "location", None)
        if found.name != name and location is not None and data_root is None:
            data_root = location.parent
        if location is not None and getattr(dataset_class(found.name, data_root), "location", None) != location:
            raise BenchError(
                f"'{name}' is not under --data-root '{data_root}'; give datasets by name under one --data-root, "
                "or by paths in one folder"
            )
        planned.append(found.name)
    return planned, data_root


def load_task(dataset: str, task: str, data_root: str | Path | None = None) -> Task:
    """Load one task of a dataset: a new plugin object each call, so a caller that loads several tasks, or one
    task several times, resolves the dataset once and asks its plugin (``dataset_plugin(...).task(name)``)."""
    return dataset_plugin(dataset, data_root).task(task)


def dataset_plugin(dataset: str, data_root: str | Path | None = None) -> Dataset:
    """A new plugin object of ``dataset`` under ``data_root``; it keeps its scan and the tasks it loaded."""
    return dataset_class(dataset, data_root)(Path(data_root) if data_root is not None else None)
