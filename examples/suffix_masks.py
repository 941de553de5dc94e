"""An example dataset plugin: a folder of ``<stem>.png`` images with ``<stem>_mask.png`` beside each.

Written as a user would, for a layout the built-in families (``nnunet:``, ``folder:``) do not read. It reads the
folder ``<data_root>/suffixmasks``; the harness caches what it reads, writes the split once, draws the support
sets and names the dataset's content in its run ids. Use it with

    bench data check suffixmasks --plugin examples/suffix_masks.py --data-root DIR
    bench run --plugin examples/suffix_masks.py --datasets suffixmasks --data-root DIR --methods unet
"""

from __future__ import annotations

import cv2
import numpy as np

from bench.data.inventory import Slice
from bench.data.release import Case, ReleaseDataset, UnreadableFile
from bench.data.samples import percentile_to_uint8
from bench.registry import DATASETS


@DATASETS.register  # under its name below
class SuffixMasks(ReleaseDataset):
    name = "suffixmasks"  # the folder under --data-root, and the name on the command line and in tables
    display_name = "Suffix masks"
    tasks = ("lesion",)  # the structures, by the names `--tasks` takes
    task_display = {"lesion": "Lesion"}
    task_labels = {"lesion": 1}  # the value of each task in the label maps read_case returns
    preprocessing = "own grid; 0.5–99.5 percentile intensity window per image"
    layout = "<data_root>/suffixmasks/<stem>.png with <stem>_mask.png beside each"
    case_kind = "images"

    def find_cases(self) -> tuple[list[Case], list[str]]:
        images = sorted(path for path in self.folder.glob("*.png") if not path.stem.endswith("_mask"))
        cases = [Case(path.stem, path.stem, (path, path.with_name(f"{path.stem}_mask.png"))) for path in images]
        return cases, [f"{len(cases)} images"]

    def read_case(self, case: Case) -> tuple[list[Slice], list[tuple[str, str]]]:
        image_path, mask_path = case.files
        image = cv2.imread(str(image_path), cv2.IMREAD_GRAYSCALE)
        mask = cv2.imread(str(mask_path), cv2.IMREAD_GRAYSCALE)
        if image is None or mask is None:  # skipped, named in a warning and counted by `bench data check`
            raise UnreadableFile(image_path if image is None else mask_path, "not a readable PNG")
        if not mask.any():  # left out and counted, with the reason
            return [], [(case.id, "empty mask")]
        labels = (mask > 0).astype(np.uint8)
        kept = (1.0,)  # nothing is cropped: the whole structure stays
        return [Slice(case.id, case.subject, percentile_to_uint8(image), labels, None, image.shape, None, kept)], []
