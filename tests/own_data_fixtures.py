"""Small datasets in the users' layouts (nnU-Net v2, the Decathlon's, a plain image folder), written into a test's
temporary folder: images with a bright disc (label 1) and, on most of them, a darker square (label 2)."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np

LABELS = {"background": 0, "disc": 1, "square": 2}


def labelled_image(index: int, shape: tuple[int, int] = (48, 64)) -> tuple[np.ndarray, np.ndarray]:
    """A uint8 image and its label map; every third image has no square."""
    rng = np.random.default_rng(index)
    labels = np.zeros(shape, np.uint8)
    centre = (int(rng.integers(15, shape[1] - 15)), int(rng.integers(15, shape[0] - 15)))
    cv2.circle(labels, centre, int(rng.integers(5, 10)), 1, thickness=-1)
    if index % 3:
        top = int(rng.integers(0, shape[0] - 8))
        labels[top : top + 6, 2:8] = 2
    image = (rng.normal(60, 10, shape) + 120 * (labels == 1) + 50 * (labels == 2)).clip(0, 255).astype(np.uint8)
    return image, labels


def write_nnunet_2d(root: Path, cases: int = 12, test_cases: int = 0, name: str = "Dataset123_Toy") -> Path:
    """An nnU-Net v2 raw dataset of PNG files; ``test_cases`` more in imagesTs/ + labelsTs/."""
    folder = root / name
    for index in range(cases + test_cases):
        images, labels = ("imagesTr", "labelsTr") if index < cases else ("imagesTs", "labelsTs")
        (folder / images).mkdir(parents=True, exist_ok=True)
        (folder / labels).mkdir(parents=True, exist_ok=True)
        image, label_map = labelled_image(index)
        cv2.imwrite(str(folder / images / f"case{index:03d}_0000.png"), image)
        cv2.imwrite(str(folder / labels / f"case{index:03d}.png"), label_map)
    description = {"channel_names": {"0": "US"}, "labels": LABELS, "numTraining": cases, "file_ending": ".png",
                   "name": "Toy discs"}  # fmt: skip
    (folder / "dataset.json").write_text(json.dumps(description))
    return folder


def write_volume(path: Path, array: np.ndarray, spacing: tuple[float, ...]) -> None:
    """An array (z×rows×cols, or channels×z×rows×cols) as a NIfTI file with ``spacing`` per axis (x, y, z)."""
    import SimpleITK as sitk

    if array.ndim == 4:
        image = sitk.JoinSeries([sitk.GetImageFromArray(channel) for channel in array])
        image.SetSpacing((*spacing, 1.0))
    else:
        image = sitk.GetImageFromArray(array)
        image.SetSpacing(spacing)
    sitk.WriteImage(image, str(path))


def volume_case(index: int, slices: int = 5) -> tuple[np.ndarray, np.ndarray]:
    pairs = [labelled_image(index * 10 + z) for z in range(slices)]
    image = np.stack([image for image, _ in pairs]).astype(np.int16) * 4  # MR-like values beyond uint8
    labels = np.stack([labels for _, labels in pairs])
    labels[0] = 0  # an apical slice without any structure
    return image, labels


def write_decathlon(root: Path, cases: int = 6, modalities: int = 2, name: str = "Task09_Toy") -> Path:
    """A Medical Segmentation Decathlon task: 4-D images (every modality in one file), labels keyed by value."""
    folder = root / name
    (folder / "imagesTr").mkdir(parents=True)
    (folder / "labelsTr").mkdir(parents=True)
    training = []
    for index in range(cases):
        image, labels = volume_case(index)
        # the second modality is the first inverted, so the two read as different images
        stacked = np.stack([image if modality % 2 == 0 else image.max() - image for modality in range(modalities)])
        write_volume(folder / "imagesTr" / f"toy_{index:03d}.nii.gz", stacked, (0.8, 0.7, 5.0))
        write_volume(folder / "labelsTr" / f"toy_{index:03d}.nii.gz", labels.astype(np.uint8), (0.8, 0.7, 5.0))
        training.append({"image": f"./imagesTr/toy_{index:03d}.nii.gz", "label": f"./labelsTr/toy_{index:03d}.nii.gz"})
    description = {"name": "Toy", "modality": {str(m): f"MR{m}" for m in range(modalities)},
                   "labels": {"0": "background", "1": "disc", "2": "square"}, "numTraining": cases,
                   "training": training, "test": []}  # fmt: skip
    (folder / "dataset.json").write_text(json.dumps(description))
    return folder


def write_image_folder(root: Path, count: int = 12, binary_value: int | None = None, name: str = "mydiscs") -> Path:
    """``images/`` and ``masks/`` with matching stems; with ``binary_value`` each mask is 0/value (the disc)."""
    folder = root / name
    (folder / "images").mkdir(parents=True)
    (folder / "masks").mkdir(parents=True)
    for index in range(count):
        image, labels = labelled_image(index)
        if binary_value is not None:
            labels = np.where(labels == 1, binary_value, 0).astype(np.uint8)
        colour = cv2.merge([image, image, (image * 0.5).astype(np.uint8)])  # a colour photograph
        cv2.imwrite(str(folder / "images" / f"img{index:02d}.png"), colour)
        cv2.imwrite(str(folder / "masks" / f"img{index:02d}.png"), labels)
    return folder
