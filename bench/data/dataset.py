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


# One plugin object per dataset and data root, so that the tasks of one release share its scan and cache
_PLUGIN_MEMO: dict[tuple[str, str], Dataset] = {}
_TASK_MEMO: dict[tuple[str, str, str], Task] = {}
# Name forms of a user's own dataset, for the error on an unknown name
OWN_DATA_FORMS = "nnunet:<DatasetNNN_Name> (nnU-Net v2 or Decathlon layout), folder:<folder> (images/ and masks/)"


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
    if (folder / "dataset.json").is_file():
        return "nnunet"
    from bench.registry import DATASETS

    if (folder / "images").is_dir() and ((folder / "masks").is_dir() or DATASETS.get("folder").has_boxes(folder)):
        return "folder"
    what = "is not a folder" if not folder.is_dir() else "holds neither dataset.json nor images/ with masks/ or boxes"
    raise BenchError(f"'{folder}' {what}; for your own data: {OWN_DATA_FORMS}; see docs/own-data.md")


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


def check_present(names: list[str], data_root: Path | None) -> None:
    """Fail in one line, before anything is planned, when a dataset's files are not under ``data_root``."""
    for name in names:
        plugin = dataset_plugin(name, data_root)
        require = getattr(plugin, "require_cases", None)
        if require is not None:
            require()


def load_task(dataset: str, task: str, data_root: str | Path | None = None) -> Task:
    """Load one task of a registered dataset (memoised per process)."""
    from bench.registry import did_you_mean

    dataset_cls = dataset_class(dataset, data_root)
    named = dataset_cls.task_named(task)
    if named is None:
        raise BenchError(
            f"dataset '{dataset}' has no task '{task}'; its tasks are {', '.join(dataset_cls.tasks)}."
            + did_you_mean(task, list(dataset_cls.tasks))
        )
    plugin = dataset_plugin(dataset, data_root)
    key = (dataset, named, str(plugin.data_root.resolve()) if dataset_cls.needs_data_root else "")
    if key not in _TASK_MEMO:
        task = plugin.load(named)
        task.identity = plugin.identity()
        _TASK_MEMO[key] = task
    return _TASK_MEMO[key]


def dataset_plugin(dataset: str, data_root: str | Path | None = None) -> Dataset:
    """The memoised plugin object ``load_task`` uses for ``dataset`` under ``data_root``."""
    dataset_cls = dataset_class(dataset, data_root)
    plugin = dataset_cls(Path(data_root) if data_root is not None else None)
    root = str(plugin.data_root.resolve()) if dataset_cls.needs_data_root else ""
    return _PLUGIN_MEMO.setdefault((dataset, root), plugin)
