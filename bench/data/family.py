"""Families of user datasets: a layout (``nnunet``, ``folder``) that names a dataset by its folder.

A family is a registered class that declares, in one place, the folder layouts it reads:

* ``form``: how a dataset of the family is named, in one line (``folder:<folder> (images/ and masks/)``), for
  the errors on a name or folder the tool does not know;
* ``recognises(folder)``: whether a folder is laid out as the family reads it, so that a dataset given by its
  path (``--datasets path/to/Dataset501_X``) finds its family and ``bench ls`` lists it;
* ``for_argument(argument, data_root)``: the class of one dataset of the family, named ``<family>:<folder>``.

``bench.data.user_dataset.UserDataset`` is a family that reads its datasets; ``families`` lists the registered ones.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from bench.data.samples import safe_name
from bench.errors import BenchError

if TYPE_CHECKING:
    from bench.data.user_dataset import UserDataset

# ``<family>:<folder>@<channel>``: the channel by index or by its name in the dataset's channel list
CHANNEL_MARK = "@"


class Family:
    """What names a user dataset: a family's declarations, and the class of one of its datasets by name."""

    family = ""
    form = ""  # one line: the name a dataset of the family takes and the layout it has
    # where two families recognise one folder, the one of higher precedence names it
    precedence = 0
    location: Path = Path()
    channel: int | None = 0
    default_channel: int | None = 0  # what a name without ``@N`` reads: nnU-Net's channel 0000
    description: dict = {}  # what ``describe`` found: labels, channels, the box file read (``drawn``)

    @classmethod
    def recognises(cls, folder: Path) -> bool:  # pragma: no cover - abstract
        """Whether ``folder`` is laid out as a dataset of this family (cheap: a few file checks)."""
        raise NotImplementedError

    _classes: dict[tuple, type] = {}

    @classmethod
    def for_argument(cls, argument: str, data_root: Path | None) -> type[UserDataset]:
        """The class of one dataset of this family: ``argument`` is its folder (a path, or a name looked up
        under the data root) with an optional ``@channel``."""
        location_text, _, channel_text = argument.partition(CHANNEL_MARK)
        if not location_text:
            raise BenchError(f"'{cls.family}:' needs a folder, as in {cls.family}:<folder>")
        location = cls.locate(location_text, data_root)
        description = cls.describe(location)
        channel = cls.channel_index(channel_text, description.get("channels", {}), location)
        stamp = tuple((path.name, path.stat().st_mtime_ns) for path in cls.description_files(location))
        key = (cls, location, channel, stamp)
        if key not in Family._classes:
            marked = channel != cls.default_channel
            name = f"{cls.family}:{location.name}" + (f"{CHANNEL_MARK}{channel}" if marked else "")
            tasks = tuple(description["labels"])
            Family._classes[key] = type(
                f"{cls.__name__}_{safe_name(location.name)}",
                (cls,),
                {
                    "name": name,
                    "display_name": str(description.get("name") or location.name),
                    "tasks": tasks,
                    "task_display": {task: task for task in tasks},
                    "task_labels": dict(description["labels"]),
                    "location": location,
                    "channel": channel,
                    "description": description,
                    "__module__": cls.__module__,
                },
            )
        return Family._classes[key]

    @classmethod
    def locate(cls, text: str, data_root: Path | None) -> Path:
        """The dataset's folder: a path as given, else ``<data_root>/<text>``, ``<data_root>/<family>/<text>``
        or (nnU-Net's own variable) ``$nnUNet_raw/<text>``; ``NNN`` finds the folder ``DatasetNNN_*``."""
        from bench.paths import default_data_root

        given = Path(text).expanduser()
        if given.is_absolute() or text.startswith(".") or os.sep in text:
            if not given.is_dir():
                raise BenchError(f"{cls.family}: no dataset folder '{text}'")
            return given.resolve()
        root = Path(data_root) if data_root is not None else default_data_root()
        bases = [root, root / cls.family]
        if os.environ.get("nnUNet_raw"):
            bases.append(Path(os.environ["nnUNet_raw"]))
        for base in bases:
            candidates = [base / text]
            if text.isdigit():
                candidates = sorted(base.glob(f"Dataset{int(text):03d}_*"))
            for candidate in candidates:
                if candidate.is_dir():
                    return candidate.resolve()
        looked = ", ".join(f"'{base}'" for base in bases)
        raise BenchError(
            f"{cls.family}: no dataset folder '{text}' under {looked}; set --data-root to the folder that holds it, "
            f"or give its path ({cls.family}:path/to/{text})"
        )

    @classmethod
    def describe(cls, location: Path) -> dict:  # pragma: no cover - abstract
        """The dataset's ``labels`` (task name → value or values), optional ``name`` and ``channels``
        (index → name); a BenchError naming the file when its description is wrong."""
        raise NotImplementedError

    @classmethod
    def description_files(cls, location: Path) -> list[Path]:
        """The files ``describe`` reads: a changed one makes a new class."""
        return []

    @classmethod
    def channel_index(cls, text: str, channels: dict[int, str], location: Path) -> int | None:
        if not text:
            return cls.default_channel
        by_name = {name.casefold(): index for index, name in channels.items()}
        if text.isdigit() and (not channels or int(text) in channels):
            return int(text)
        if text.casefold() in by_name:
            return by_name[text.casefold()]
        known = ", ".join(f"{index} ({name})" for index, name in sorted(channels.items())) or "0"
        raise BenchError(f"{cls.family}:{location.name} has no channel '{text}'; its channels: {known}")


def families() -> list[type[Family]]:
    """The registered families, the one of highest precedence first. Listing them imports every dataset plugin
    (which are families is known only from their classes); one that fails to import is left out here, and says
    why when it is named."""
    from bench.registry import DATASETS

    found = []
    for name in DATASETS.names():
        try:
            plugin = DATASETS.get(name)
        except BenchError:
            continue
        if isinstance(plugin, type) and issubclass(plugin, Family):
            found.append(plugin)
    return sorted(found, key=lambda family: (-family.precedence, family.family))


def family_of(folder: Path) -> type[Family] | None:
    """The family whose layout ``folder`` has (the one of highest precedence where several have), or None."""
    return next((family for family in families() if family.recognises(folder)), None)
