"""`synthetic`: a generated two-structure dataset, the embedded default that needs no download.

Every 256×256 image holds both structures, so a method has to learn *which* one is its task:

* ``ellipse`` — a filled ellipse with a bright rim and a darker, textured inside (fetal-head-like);
* ``blob`` — an irregular, star-shaped homogeneous region (ventricle-like);

plus an unlabelled distractor (a bright ring or a second, smaller blob of another brightness). Contrasts
vary per image and the ellipse's rim drops out over arcs. Images are ultrasound-like (multiplicative
speckle, depth attenuation, an acoustic shadow) or MR-like (additive noise, smooth bias field), at random.
Everything is drawn from ``default_rng(seed, index)``, so the data is identical on every machine.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

import cv2
import numpy as np

from bench.data.dataset import Dataset
from bench.data.samples import Sample, Task, stable_seed
from bench.registry import DATASETS

if TYPE_CHECKING:
    from bench.data.framing import SourceImage
    from bench.data.planes import FramedPlane

SIZE = 256
SPLIT_SIZES = {"train": 120, "val": 20, "test": 40}


def _ellipse_mask(rng: np.random.Generator, centre: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    axes = (int(rng.integers(22, 50)), int(rng.integers(18, 40)))
    angle = float(rng.uniform(0, 180))
    filled = np.zeros((SIZE, SIZE), np.uint8)
    cv2.ellipse(filled, centre, axes, angle, 0, 360, 1, thickness=-1)
    rim = np.zeros((SIZE, SIZE), np.uint8)
    # the rim drops out over one or two arcs, as a skull outline does where the beam hits it tangentially
    start = 0.0
    for _ in range(int(rng.integers(1, 3))):
        gap_start = start + rng.uniform(20, 150)
        gap_end = gap_start + rng.uniform(25, 70)
        cv2.ellipse(rim, centre, axes, angle, start, gap_start, 1, thickness=int(rng.integers(2, 5)))
        start = gap_end
    if start < 360:
        cv2.ellipse(rim, centre, axes, angle, start, 360, 1, thickness=int(rng.integers(2, 5)))
    return filled.astype(bool), rim.astype(bool)


def _blob_mask(rng: np.random.Generator, centre: tuple[int, int], radius: float) -> np.ndarray:
    angles = np.linspace(0, 2 * np.pi, 64, endpoint=False)
    harmonics = rng.uniform(0.05, 0.22, size=3) * rng.choice([-1, 1], size=3)
    phases = rng.uniform(0, 2 * np.pi, size=3)
    wobble = 1 + sum(h * np.cos((k + 2) * angles + p) for k, (h, p) in enumerate(zip(harmonics, phases, strict=True)))
    points = np.stack([centre[0] + radius * wobble * np.cos(angles), centre[1] + radius * wobble * np.sin(angles)], 1)
    mask = np.zeros((SIZE, SIZE), np.uint8)
    cv2.fillPoly(mask, [np.round(points).astype(np.int32)], 1)
    return mask.astype(bool)


def _free_centre(rng: np.random.Generator, occupied: np.ndarray, margin: int, clearance: int) -> tuple[int, int]:
    """A centre at least ``clearance`` pixels from everything drawn so far (best of a few tries)."""
    distance = cv2.distanceTransform((~occupied).astype(np.uint8), cv2.DIST_L2, 5)
    best, best_distance = (SIZE // 2, SIZE // 2), -1.0
    for _ in range(40):
        x, y = (int(v) for v in rng.integers(margin, SIZE - margin, size=2))
        if distance[y, x] >= clearance:
            return x, y
        if distance[y, x] > best_distance:
            best, best_distance = (x, y), float(distance[y, x])
    return best


def generate_image(seed: int, index: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """One synthetic image (uint8) and its two structure masks."""
    rng = np.random.default_rng(stable_seed("synthetic", seed, index))
    ellipse_centre = tuple(int(v) for v in rng.integers(70, SIZE - 70, size=2))
    ellipse, rim = _ellipse_mask(rng, ellipse_centre)
    blob = _blob_mask(rng, _free_centre(rng, ellipse, 45, 60), float(rng.uniform(14, 30)))
    blob &= ~ellipse
    occupied = ellipse | blob

    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32) / SIZE
    gradient = rng.uniform(-20, 20) * xx + rng.uniform(-20, 20) * yy
    intensity = np.full((SIZE, SIZE), rng.uniform(45, 75), np.float32) + gradient
    texture = cv2.GaussianBlur(rng.normal(0, 1, (SIZE, SIZE)).astype(np.float32), (0, 0), 3) * 25

    # contrasts vary per image, and the inside of the ellipse can be close to the background
    background = float(intensity.mean())
    inside = background + rng.uniform(10, 60)
    intensity[ellipse] = inside + texture[ellipse]
    intensity[rim] = rng.uniform(150, 215)
    intensity[blob] = background + rng.uniform(35, 100)

    # Distractor: a bright ring like the ellipse's rim, or a second blob of another brightness.
    distractor_centre = _free_centre(rng, occupied, 25, 35)
    if rng.random() < 0.5:
        ring = np.zeros((SIZE, SIZE), np.uint8)
        cv2.circle(ring, distractor_centre, int(rng.integers(8, 16)), 1, thickness=int(rng.integers(2, 4)))
        intensity[ring.astype(bool) & ~occupied] = rng.uniform(170, 210)
    else:
        decoy = _blob_mask(rng, distractor_centre, float(rng.uniform(8, 14))) & ~occupied
        intensity[decoy] = rng.uniform(95, 130)

    if rng.random() < 0.5:  # ultrasound-like: speckle, attenuation with depth, an acoustic shadow
        shadow_x = rng.uniform(0, 1)
        shadow = np.abs(xx - shadow_x - (yy - 0.5) * rng.uniform(-0.3, 0.3)) < rng.uniform(0.03, 0.1)
        intensity = np.where(shadow, intensity * rng.uniform(0.35, 0.7), intensity)
        speckle = rng.rayleigh(scale=0.8, size=(SIZE, SIZE)).astype(np.float32)
        intensity = cv2.GaussianBlur(intensity * speckle, (0, 0), 1.0) * (1.15 - 0.45 * yy)
    else:  # MR-like: smooth bias field and additive noise
        bias = 1 + cv2.GaussianBlur(rng.normal(0, 1, (SIZE, SIZE)).astype(np.float32), (0, 0), 40) * 8
        intensity = cv2.GaussianBlur(intensity, (0, 0), 1.2) * bias + rng.normal(0, rng.uniform(12, 24), (SIZE, SIZE))
    image = np.clip(intensity, 0, 255).astype(np.uint8)
    return image, {"ellipse": ellipse, "blob": blob}


@functools.cache
def generated_images(seed: int) -> tuple[tuple[np.ndarray, dict[str, np.ndarray]], ...]:
    """Every image with both masks, made once per process for all tasks and plugin objects: a grid resolves its
    datasets once, but the test suite and the Python API load this one hundreds of times (≈ 1.2 s each)."""
    return tuple(generate_image(seed, index) for index in range(sum(SPLIT_SIZES.values())))


@DATASETS.register
class Synthetic(Dataset):
    """Generated from a seed; ``data_root`` is ignored."""

    fixed_release = True
    name = "synthetic"
    display_name = "Synthetic"
    tasks = ("ellipse", "blob")
    task_display = {"ellipse": "Ellipse", "blob": "Blob"}
    needs_data_root = False
    seed = 0

    def frame_for_prediction(self, source: SourceImage) -> list[FramedPlane]:
        """A new 2-D image as it is (the synthetic images have no preprocessing); non-uint8 pixels are
        percentile-rescaled to uint8 (the hook of ``bench.data.framing``)."""
        from bench.data.planes import identity_plane
        from bench.data.samples import percentile_to_uint8
        from bench.errors import BenchError

        planes = source.planes
        if len(planes) != 1:
            raise BenchError(f"synthetic takes 2-D images; '{source.path}' is a volume of {len(planes)} slices")
        image = planes[0] if planes[0].dtype == np.uint8 else percentile_to_uint8(planes[0])
        return [identity_plane(image, None)]

    @property
    def _generated(self) -> tuple[tuple[np.ndarray, dict[str, np.ndarray]], ...]:
        return generated_images(self.seed)

    def load(self, task: str) -> Task:
        splits: dict[str, list[Sample]] = {name: [] for name in SPLIT_SIZES}
        index = 0
        for split, count in SPLIT_SIZES.items():
            for _ in range(count):
                image, masks = self._generated[index]
                sample_id = f"syn{index:03d}"
                splits[split].append(Sample(sample_id, image, masks[task], None, subject=sample_id))
                index += 1
        return Task(self.name, task, splits["train"], splits["val"], splits["test"], info={"seed": self.seed})
