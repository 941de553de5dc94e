"""The contract every registered dataset must pass, parametrised over the registry as the methods' is
(test_method_contract.py).

Each dataset is written small, in its own layout (``tests/dataset_fixtures.py``; a registered dataset without a
layout there fails here), then loaded, split, drawn from, identified, and asked to frame one of its own training
images as a new image: the plane must be the sample ``load`` gives a method, pixel for pixel.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import pytest

from bench.data.dataset import OWN_DATA_FORMS, Dataset, dataset_class, load_task
from bench.data.family import Family, family_of
from bench.data.framing import frame_source, read_source
from bench.data.image_io import LUMINANCE
from bench.data.release import SPLITS, ReleaseDataset
from bench.data.samples import Task, support_ids
from bench.errors import BenchError
from bench.registry import DATASETS
from tests.dataset_fixtures import LAYOUTS, Layout


def cases() -> list:
    params = []
    for name in DATASETS.names():
        for layout in LAYOUTS.get(name) or (None,):
            params.append(pytest.param(name, layout, id=layout.id if layout else name))
    return params


@dataclass
class Written:
    """A layout's files, written once for the module, and the tasks loaded from them."""

    root: Path
    name: str  # what the dataset is loaded by: a family's dataset is ``<family>:<folder>``
    cls: type[Dataset]
    tasks: dict[str, Task] = field(default_factory=dict)

    def task(self, name: str) -> Task:
        if name not in self.tasks:
            self.tasks[name] = load_task(self.name, name, self.root)
        return self.tasks[name]


@pytest.fixture(scope="module")
def written_layouts() -> dict[str, Written]:
    return {}


@pytest.fixture
def written(
    name: str, layout: Layout | None, written_layouts: dict[str, Written], tmp_path_factory: pytest.TempPathFactory
) -> Written:
    if layout is None:
        pytest.fail(f"dataset '{name}' is registered, but tests/dataset_fixtures.py writes no files for it: add a "
                    "Layout to LAYOUTS so that the contract covers it")  # fmt: skip
    if layout.id not in written_layouts:
        root = tmp_path_factory.mktemp(layout.id)
        loaded_as = layout.write(root)
        written_layouts[layout.id] = Written(root, loaded_as, dataset_class(loaded_as, root))
    return written_layouts[layout.id]


def all_samples(task: Task) -> list:
    return [*task.train, *task.val, *task.test]


@pytest.mark.parametrize(("name", "layout"), cases())
class TestDatasetContract:
    def test_declarations(self, name: str, layout: Layout, written: Written) -> None:
        cls = written.cls
        assert issubclass(cls, Dataset) and DATASETS.get(name).name == name
        assert cls.display_name and cls.tasks and all(isinstance(task, str) for task in cls.tasks)
        for task in cls.tasks:
            assert cls.task_named(task.upper()) == task
        if issubclass(cls, ReleaseDataset):
            assert cls.preprocessing and "\n" not in cls.preprocessing and cls.layout

    def test_load(self, name: str, layout: Layout, written: Written) -> None:
        for task_name in written.cls.tasks:
            task = written.task(task_name)
            assert task.dataset == written.name and task.name == task_name
            assert task.train and task.test
            ids = [sample.id for sample in all_samples(task)]
            assert len(ids) == len(set(ids))
            for sample in all_samples(task):
                assert sample.image.dtype == np.uint8 and sample.image.ndim == 2
                assert sample.mask.dtype == bool and sample.mask.shape == sample.image.shape
                if sample.spacing is not None:
                    assert len(sample.spacing) == 2 and min(sample.spacing) > 0

    def test_split_is_written_once_and_disjoint(self, name: str, layout: Layout, written: Written) -> None:
        first = written.cls(written.root)
        if isinstance(first, ReleaseDataset):
            parts = first.split()
            path = first.split_file()
            stamp = (path.read_bytes(), path.stat().st_mtime_ns)
            second = written.cls(written.root)
            assert second.split() == parts and second.split_file() == path
            assert (path.read_bytes(), path.stat().st_mtime_ns) == stamp  # read back, not written again
        else:  # the split is part of the data (generated, or shipped): the same on every load
            parts = {part: [sample.id for sample in getattr(first.load(first.tasks[0]), part)] for part in SPLITS}
        assert parts["train"] and not set(parts["train"]) & set(parts["val"])
        assert not (set(parts["train"]) | set(parts["val"])) & set(parts["test"])
        task = written.task(written.cls.tasks[0])
        for part in SPLITS:
            assert {sample.id for sample in getattr(task, part)} <= set(parts[part])

    def test_supports_are_deterministic_and_drawn_from_train(
        self, name: str, layout: Layout, written: Written, isolated_cache: Path
    ) -> None:
        task = written.task(written.cls.tasks[0])
        drawable = {sample.id for sample in task.train if sample.labelled}
        assert support_ids(task, None, 0) == sorted(sample.id for sample in task.train)
        shots = min(2, len(drawable))
        drawn = {draw: support_ids(task, shots, draw) for draw in (0, 1)}
        for draw, ids in drawn.items():
            assert len(ids) == shots and set(ids) <= drawable
            assert support_ids(task, shots, draw) == ids  # read back from its file
        shutil.rmtree(isolated_cache / "supports")
        assert {draw: support_ids(task, shots, draw) for draw in (0, 1)} == drawn  # drawn again, identically

    def test_identity(self, name: str, layout: Layout, written: Written, tmp_path: Path) -> None:
        identity = written.cls(written.root).identity()
        if layout.change is None:  # a release: fixed (None), or a digest that is the same on every load
            assert identity is None if written.cls.fixed_release else identity == written.cls(written.root).identity()
            return
        loaded_as = layout.write(tmp_path)  # a copy of its own, to change
        first = dataset_class(loaded_as, tmp_path)(tmp_path).identity()
        assert isinstance(first, str) and first == identity  # the same files elsewhere: the same dataset
        later = 10**9 * 3600 + os.stat(tmp_path).st_mtime_ns
        for path in tmp_path.rglob("*"):
            os.utime(path, ns=(later, later))
        assert dataset_class(loaded_as, tmp_path)(tmp_path).identity() == first  # touched, not changed
        layout.change(tmp_path)
        assert dataset_class(loaded_as, tmp_path)(tmp_path).identity() != first

    def test_frame_for_prediction_frames_a_new_image_as_load(
        self, name: str, layout: Layout, written: Written, tmp_path: Path
    ) -> None:
        plugin = written.cls(written.root)
        sample = written.task(written.cls.tasks[0]).train[0]
        if layout.source is None:  # a dataset that frames no new image says so in one line
            assert not hasattr(plugin, "frame_for_prediction")
            cv2.imwrite(str(tmp_path / "new.png"), sample.image)
            with pytest.raises(BenchError, match="cannot preprocess new images"):
                frame_source(plugin, read_source(tmp_path / "new.png"))
            return
        path, index = layout.source(written.root, sample)
        channel = getattr(plugin, "channel", None)  # as bench predict reads a colour image
        source = read_source(path, LUMINANCE if channel is None else channel)
        planes = frame_source(plugin, source)
        assert len(planes) == len(source.planes)
        plane = planes[index]
        assert plane.image.dtype == np.uint8
        np.testing.assert_array_equal(plane.image, sample.image)
        assert plane.geometry.to_source(sample.mask.astype(np.float32)).shape == source.planes[index].shape


def is_family(name: str) -> bool:
    plugin = DATASETS.get(name)
    return isinstance(plugin, type) and issubclass(plugin, Family)


@pytest.mark.parametrize(("name", "layout"), [case for case in cases() if is_family(case.values[0])])
def test_family_declares_the_layouts_it_recognises(name: str, layout: Layout, written: Written, tmp_path: Path) -> None:
    family = DATASETS.get(name)
    folder = written.cls.location
    assert family.recognises(folder) and family_of(folder) is family
    assert not family.recognises(tmp_path)
    assert family.form.startswith(f"{name}:") and family.form in str(OWN_DATA_FORMS)
    assert dataset_class(str(folder)).name == written.name  # given by its path, its layout names the family
