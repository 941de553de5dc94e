"""One 2-D plane as a method sees it, and how it came from its file: what a dataset's preprocessing makes of
an image, for its own images (``read_case``) and new ones (``bench.data.framing``) alike. The harness inverts the
geometry to put a predicted mask back on the plane's own grid."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bench.data.samples import Box, center_crop_or_pad
from bench.metrics import binarize


@dataclass(frozen=True)
class PlaneGeometry:
    """How one 2-D plane went into the frame a method sees: resampled from ``source`` to ``resampled``
    (rows, cols), then centre-cropped or padded to ``frame``."""

    source: tuple[int, int]
    resampled: tuple[int, int]
    frame: tuple[int, int]

    def to_source(self, probabilities: np.ndarray) -> np.ndarray:
        """A method's probabilities on the frame as a boolean mask on the plane's own grid: the frame uncropped
        (centre crop and pad are each other's inverse; what the crop cut is background), resampled back
        bilinearly, thresholded as the harness scores (``bench.metrics.binarize``)."""
        import cv2

        back = center_crop_or_pad(np.asarray(probabilities, dtype=np.float32), self.resampled)
        if self.resampled != self.source:
            back = cv2.resize(back, (self.source[1], self.source[0]), interpolation=cv2.INTER_LINEAR)
        return binarize(back)

    def box_to_frame(self, box: Box) -> Box:
        """A box in the plane's own pixels, in the frame's pixels (clipped to the frame)."""
        scale = (self.resampled[0] / self.source[0], self.resampled[1] / self.source[1])
        shift = [(want - have) // 2 if have < want else -((have - want) // 2)
                 for have, want in zip(self.resampled, self.frame, strict=True)]  # fmt: skip

        def place(value: int, axis: int) -> int:
            at = int(round((value + 0.5) * scale[axis] - 0.5)) + shift[axis]
            return int(np.clip(at, 0, self.frame[axis] - 1))

        return Box(place(box.x0, 1), place(box.y0, 0), place(box.x1, 1), place(box.y1, 0))


@dataclass
class FramedPlane:
    """One 2-D image as a run's dataset preprocessing gives it to a method, and how it came from its file."""

    image: np.ndarray  # uint8, the frame
    spacing: tuple[float, float] | None
    geometry: PlaneGeometry


def identity_plane(image: np.ndarray, spacing: tuple[float, float] | None) -> FramedPlane:
    """A plane given to the method as it is (a dataset without resampling or frame)."""
    shape = (int(image.shape[0]), int(image.shape[1]))
    return FramedPlane(image, spacing, PlaneGeometry(shape, shape, shape))
