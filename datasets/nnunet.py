"""`nnunet:<DatasetNNN_Name>`: any dataset in the nnU-Net raw layout, v2 or the Decathlon's (nnU-Net v1's).

nnU-Net v2 (``dataset.json`` with ``labels`` name → value, ``channel_names`` and ``file_ending``):

    DatasetNNN_Name/dataset.json
    DatasetNNN_Name/imagesTr/<case>_<channel, 4 digits><file_ending>   labelsTr/<case><file_ending>
    DatasetNNN_Name/imagesTs/…  (optional; with labelsTs/ they are the test split, without they are not used)

The Medical Segmentation Decathlon and nnU-Net v1 (``dataset.json`` with ``labels`` value → name, ``modality``
and a ``training`` list of ``{"image": "./imagesTr/x.nii.gz", "label": "./labelsTr/x.nii.gz"}``; the image is
one file holding every modality, or, converted by nnU-Net v1, ``x_0000.nii.gz`` per modality).

Tasks are the structures of ``labels`` by name (``background`` and nnU-Net's ``ignore`` are not tasks); a v2
region (a name with a list of values) is a task whose mask is any of them. 2-D files (PNG, BMP, TIFF) are read
with OpenCV, volumes (NIfTI, NRRD, MetaImage) with SimpleITK and cut into slices across their coarsest axis.
"""

from __future__ import annotations

import json
from pathlib import Path

from bench.data.box_files import box_file_paths, find_box_file, read_drawn_boxes
from bench.data.image_io import file_ending, is_volume
from bench.data.release import Case
from bench.data.user_dataset import UserDataset
from bench.errors import BenchError
from bench.registry import DATASETS

DESCRIPTION = "dataset.json"
NOT_TASKS = ("background", "ignore")


def _json(path: Path, family: str) -> dict:
    if not path.is_file():
        raise BenchError(f"{family}: no {path.name} in '{path.parent}'; an nnU-Net dataset folder holds one")
    try:
        payload = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise BenchError(f"{family}: '{path}' is not valid JSON ({error})") from error
    if not isinstance(payload, dict):
        raise BenchError(f"{family}: '{path}' must hold a JSON object")
    return payload


def _labels(raw: object, path: Path) -> tuple[dict[str, int | tuple[int, ...]], set[int]]:
    """Task name → value (or a region's values), and the values that are not tasks (``ignore``), from either
    spelling of ``labels``: v2's name → value, or the Decathlon's value → name."""
    if not isinstance(raw, dict) or not raw:
        raise BenchError(f"nnunet: '{path}' has no 'labels' object")
    if all(str(key).isdigit() for key in raw):  # the Decathlon / v1 spelling: {"0": "background", "1": "LV"}
        by_name: dict[str, object] = {}
        for value, name in raw.items():
            if str(name) in by_name:
                raise BenchError(f"nnunet: '{path}' names label '{name}' twice")
            by_name[str(name)] = int(value)
    else:
        by_name = {str(name): value for name, value in raw.items()}
    folded = {name.casefold(): name for name in by_name}
    if "background" not in folded or by_name[folded["background"]] != 0:
        raise BenchError(f"nnunet: '{path}' labels need 'background': 0")
    tasks: dict[str, int | tuple[int, ...]] = {}
    other: set[int] = set()
    seen: dict[int, str] = {}
    for name, value in by_name.items():
        values = value if isinstance(value, list) else [value]
        if not values or not all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 255 for v in values):
            raise BenchError(f"nnunet: '{path}' label '{name}' must be an integer from 0 to 255 (or a list of them)")
        if not isinstance(value, list):
            if value in seen:
                raise BenchError(f"nnunet: '{path}' gives labels '{seen[value]}' and '{name}' the same value {value}")
            seen[value] = name
        if name.casefold() == "ignore":
            other.update(values)
        elif name.casefold() != "background":
            tasks[name] = tuple(values) if isinstance(value, list) else value
    if not tasks:
        raise BenchError(f"nnunet: '{path}' labels name no structure besides background")
    return tasks, other


@DATASETS.register
class NNUNet(UserDataset):
    """A dataset in the nnU-Net v2 or Decathlon layout; ``nnunet:<folder>`` names one."""

    name = "nnunet"
    display_name = "nnU-Net / Decathlon dataset"
    tasks = ()
    family = "nnunet"
    form = "nnunet:<DatasetNNN_Name> (a folder with dataset.json: nnU-Net v2 or Decathlon layout)"
    precedence = 1  # a dataset.json says more than an images/ folder beside it: the folder is nnU-Net's
    case_kind = "labelled cases"
    layout = (
        "DatasetNNN_Name/dataset.json with imagesTr/<case>_0000<ending> and labelsTr/<case><ending> (nnU-Net v2), "
        "or a Decathlon dataset.json whose 'training' list names image/label pairs"
    )
    homepage = "https://github.com/MIC-DKFZ/nnUNet/blob/master/documentation/dataset_format.md"
    description: dict = {}

    @classmethod
    def recognises(cls, folder: Path) -> bool:
        return (folder / DESCRIPTION).is_file()

    @classmethod
    def description_files(cls, location: Path) -> list[Path]:
        return [location / DESCRIPTION] + [path for path in box_file_paths(location) if path.exists()]

    @classmethod
    def describe(cls, location: Path) -> dict:
        path = location / DESCRIPTION
        payload = _json(path, cls.family)
        tasks, other = _labels(payload.get("labels"), path)
        raw_channels = payload.get("channel_names") or payload.get("modality") or {"0": "image"}
        try:
            channels = {int(index): str(name) for index, name in raw_channels.items()}
        except (AttributeError, ValueError) as error:
            raise BenchError(f"nnunet: '{path}' channel_names must map channel numbers to names") from error
        decathlon = isinstance(payload.get("training"), list) and "file_ending" not in payload
        ending = str(payload.get("file_ending") or ".nii.gz")
        drawn, box_only = cls._drawn_boxes(location, tasks, ending, decathlon)
        return {"labels": tasks, "other_values": sorted(other), "name": payload.get("name"), "channels": channels,
                "decathlon": decathlon, "file_ending": ending, "training": payload.get("training"),
                "drawn": drawn, "box_only": box_only}  # fmt: skip

    @classmethod
    def _drawn_boxes(cls, location: Path, tasks: dict, ending: str, decathlon: bool) -> tuple[object, int]:
        """The box file beside dataset.json (its names are files of imagesTr/) and how many images it alone
        labels (no file in labelsTr/); (None, 0) without one."""
        box_file = find_box_file(location)
        if box_file is None:
            return None, 0
        if decathlon or is_volume(ending):
            raise BenchError(f"nnunet:{location.name}: box files label 2-D images; this dataset's are volumes")
        drawn = read_drawn_boxes(box_file, location / "imagesTr", tasks)
        labels = location / "labelsTr"
        # imagesTr/<case>_0000<ending> is labelled by labelsTr/<case><ending>
        box_only = [path for path in drawn.boxes if not (labels / f"{path.name[: -len(ending) - 5]}{ending}").is_file()]
        return drawn, len(box_only)

    def find_cases(self) -> tuple[list[Case], list[str]]:
        if self.description.get("decathlon"):
            return self._decathlon_cases()
        ending = self.description["file_ending"]
        train = self._paired("imagesTr", "labelsTr", ending, required=True)
        labelled_test = (self.folder / "labelsTs").is_dir()
        test = self._paired("imagesTs", "labelsTs", ending, required=False) if labelled_test else []
        notes = [f"{len(train)} cases in imagesTr, {len(test)} labelled in imagesTs (the test split)"]
        if (self.folder / "imagesTs").is_dir() and not test:
            notes.append("imagesTs/ without labelsTs/: not used (no ground truth to score)")
        return train + test, notes

    def _paired(self, images: str, labels: str, ending: str, required: bool) -> list[Case]:
        image_folder, label_folder = self.folder / images, self.folder / labels
        if not image_folder.is_dir():
            if required:
                raise self.missing(f"no {images}/ folder")
            return []
        if file_ending(ending) != ending.lower():
            raise BenchError(f"{self.name}: file_ending '{ending}' is not a format this tool reads")
        # each channel is a file of its own (<case>_0001…), except in files that hold several (an RGB PNG)
        in_file = 0
        channel_files = self._channel_files(image_folder, f"_{self.channel:04d}{ending}")
        if not channel_files and self.channel:
            channel_files, in_file = self._channel_files(image_folder, f"_0000{ending}"), self.channel
        suffix = f"_{self.channel if not in_file else 0:04d}{ending}"
        label_files = {
            path.name[: -len(ending)]: path
            for path in label_folder.glob(f"*{ending}")
            if not path.name.startswith(".")
        } if label_folder.is_dir() else {}  # fmt: skip
        if not channel_files and required:
            raise self.missing(f"no {images}/<case>{suffix} files")
        drawn = self.description.get("drawn") if images == "imagesTr" else None
        boxed = set(drawn.boxes) if drawn else set()
        for case in sorted(channel_files):
            if case not in label_files and channel_files[case] not in boxed:
                raise BenchError(f"{self.name}: {images}/{channel_files[case].name} has no label file "
                                 f"{labels}/{case}{ending}" + " nor a box in the box file" * bool(drawn))  # fmt: skip
        for case in sorted(label_files):
            if case not in channel_files:
                raise BenchError(f"{self.name}: {labels}/{label_files[case].name} has no image {images}/{case}{suffix}")
        return [
            Case(case, case, (channel_files[case], *([label_files[case]] if case in label_files else [])), (in_file,))
            for case in sorted(channel_files)
        ]  # fmt: skip

    @staticmethod
    def _channel_files(folder: Path, suffix: str) -> dict[str, Path]:
        return {
            path.name[: -len(suffix)]: path
            for path in folder.iterdir()
            if path.name.endswith(suffix) and not path.name.startswith(".")
        }

    def _decathlon_cases(self) -> tuple[list[Case], list[str]]:
        cases = []
        for entry in self.description["training"]:
            if not isinstance(entry, dict) or "image" not in entry or "label" not in entry:
                raise BenchError(f"{self.name}: each 'training' entry of dataset.json needs 'image' and 'label'")
            image, label = self.folder / entry["image"], self.folder / entry["label"]
            in_file = self.channel  # the Decathlon's images hold every modality on a 4th axis
            if not image.exists():  # converted by nnU-Net v1: one file per modality, <case>_0000.nii.gz
                ending = file_ending(image)
                image, in_file = image.with_name(f"{image.name[: -len(ending)]}_{self.channel:04d}{ending}"), 0
            for path, kind in ((image, "image"), (label, "label")):
                if not path.is_file():
                    raise BenchError(f"{self.name}: the {kind} file '{entry[kind]}' listed in dataset.json is missing")
            case = label.name[: -len(file_ending(label))]
            cases.append(Case(case, case, (image, label), (in_file,)))
        if not cases:
            raise self.missing("an empty 'training' list")
        return sorted(cases, key=lambda case: case.id), [f"{len(cases)} cases listed under 'training' (Decathlon)"]

    def test_cases(self) -> set[str] | None:
        labelled_test = self.folder / "labelsTs"
        if self.description.get("decathlon") or not labelled_test.is_dir():
            return None
        ending = self.description["file_ending"]
        return {path.name[: -len(ending)] for path in labelled_test.glob(f"*{ending}")}
