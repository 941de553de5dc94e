"""`hc18-demo`: a small, downscaled subset of HC18 shipped inside the package, the main command's default.

Real fetal-head ultrasound, so that the first table a new user makes ranks the methods as the full HC18
results do, with no download. Its images are drawn from the ``hc18`` plugin's own split (train images from its
train split, test images from its test split), preprocessed as ``hc18`` does (the paper's 640×640 frame) and
then shrunk to ``SIZE``×``SIZE`` (area interpolation for images, the area vote of ``resize_labels`` for masks),
their pixel size growing by the same factor. ``bench data make-demo`` re-makes the files from the HC18 release.

HC18 is CC BY 4.0 (van den Heuvel et al., 2018); the attribution, citation and the changes made are in
``hc18_demo/README.md`` beside the images.
"""

from __future__ import annotations

import functools
import json
import shutil
from importlib import resources
from pathlib import Path

import numpy as np

from bench.data.dataset import Dataset
from bench.data.samples import Sample, Task, resize_image, resize_labels, stable_seed
from bench.errors import BenchError
from bench.registry import DATASETS

SIZE = 256  # LiteMedSAM's input size: nothing a method sees is lost, and the wheel stays small
# images per split: 20 train images leave room for the support draws of k = 10; the test count keeps the main
# command within 10 min on a 2-core CPU (docs/datasets.md)
SPLIT_COUNTS = {"train": 20, "val": 5, "test": 40}
INDEX_FILE = "subset.json"
FOLDER = "hc18_demo"
KEPT_FILES = ("README.md",)  # written by hand, not by make_demo


def shipped_folder() -> Path:
    """The subset's folder inside the installed package."""
    return Path(str(resources.files("bench.datasets") / FOLDER))


@DATASETS.register
class HC18Demo(Dataset):
    """The shipped subset; ``data_root`` is ignored. Its content identity keys its run ids (``Dataset.identity``),
    so records of a re-made subset never resume as records of this one."""

    name = "hc18-demo"
    display_name = "HC18 (demo subset)"
    tasks = ("head",)
    task_display = {"head": "Fetal head"}
    needs_data_root = False

    @functools.cached_property
    def _index(self) -> dict:
        path = shipped_folder() / INDEX_FILE
        try:
            return json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as error:
            raise BenchError(f"the shipped HC18 subset is missing or broken ({path}: {error}); reinstall") from error

    def load(self, task: str) -> Task:
        import cv2

        folder = shipped_folder()
        index = self._index
        splits: dict[str, list[Sample]] = {}
        for split in SPLIT_COUNTS:
            samples = []
            for sample_id in index[split]:
                image = cv2.imread(str(folder / "images" / f"{sample_id}.png"), cv2.IMREAD_GRAYSCALE)
                mask = cv2.imread(str(folder / "masks" / f"{sample_id}.png"), cv2.IMREAD_GRAYSCALE)
                if image is None or mask is None:
                    raise BenchError(f"the shipped HC18 subset lacks the image or mask of {sample_id} in {folder}")
                spacing = float(index["pixel_size_mm"][sample_id])
                samples.append(Sample(sample_id, image, mask > 0, (spacing, spacing), subject=sample_id))
            splits[split] = samples
        info = {"source": index["source"], "preprocessing": index["preprocessing"]}
        return Task(self.name, task, splits["train"], splits["val"], splits["test"], info=info)


def make_demo(data_root: Path | None, out: Path) -> dict[str, int]:
    """Write the subset into ``out`` from the HC18 release under ``data_root``: images, masks, ``subset.json``.

    The images of each split are a seeded draw from the same split of ``hc18``, so the demo scores a subset of the
    full results' test images and trains on images of their train split. Returns the images written per split.
    """
    import cv2

    from bench.data.dataset import load_task

    task = load_task("hc18", "head", data_root)
    # written beside ``out`` and swapped in at the end, so an interrupted build leaves the old subset whole
    building = out.with_name(f".{out.name}.building")
    shutil.rmtree(building, ignore_errors=True)
    (building / "images").mkdir(parents=True)
    (building / "masks").mkdir(parents=True)
    index: dict = {
        "source": "HC18 training set (Zenodo 10.5281/zenodo.1327317), CC BY 4.0; see README.md",
        "preprocessing": f"hc18 (640×640 paper frame), then shrunk to {SIZE}×{SIZE}",
        "pixel_size_mm": {},
    }
    for split, count in SPLIT_COUNTS.items():
        samples = getattr(task, split)
        if len(samples) < count:
            raise BenchError(f"hc18 has {len(samples)} {split} images; the demo takes {count}")
        order = np.random.default_rng(stable_seed("hc18-demo", split)).permutation(len(samples))
        chosen = sorted((samples[i] for i in order[:count]), key=lambda sample: sample.id)
        for sample in chosen:
            image = resize_image(sample.image, (SIZE, SIZE))
            mask = resize_labels(sample.mask.astype(np.uint8), (SIZE, SIZE))
            cv2.imwrite(str(building / "images" / f"{sample.id}.png"), image, [cv2.IMWRITE_PNG_COMPRESSION, 9])
            cv2.imwrite(str(building / "masks" / f"{sample.id}.png"), mask * 255, [cv2.IMWRITE_PNG_COMPRESSION, 9])
            # the frame is square and so is the shrink: one factor for rows and columns
            index["pixel_size_mm"][sample.id] = round(sample.spacing[0] * sample.image.shape[0] / SIZE, 6)
        index[split] = [sample.id for sample in chosen]
    (building / INDEX_FILE).write_text(json.dumps(index, indent=1, sort_keys=True) + "\n")
    for kept in KEPT_FILES:  # the attribution travels with the images
        if (out / kept).exists():
            shutil.copy2(out / kept, building / kept)
    shutil.rmtree(out, ignore_errors=True)
    building.rename(out)
    return {split: len(index[split]) for split in SPLIT_COUNTS}
