"""Speed benchmarks of the SAM-backbone paths (``bench perf encode``, ``bench perf decode``).

Both time the harness's own code path against the plainest alternative in the same process, alternating
the two ``repeats`` times and keeping the median, so a busy machine slows both alike.
"""

from __future__ import annotations

import statistics
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from bench.backbones import Backbone
from bench.embedding_cache import EMBEDDING_SHAPE, cached_embeddings
from bench.timing import Stopwatch


def _median_rates(
    harness: Callable[[], object], reference: Callable[[], object], images: int, repeats: int, device: torch.device
) -> tuple[float, float]:
    """Images per second of each path: the two alternate ``repeats`` times and the median run counts."""
    harness_seconds, reference_seconds = [], []
    for _ in range(repeats):
        for run, seconds in ((harness, harness_seconds), (reference, reference_seconds)):
            with Stopwatch(device) as clock:
                run()
            seconds.append(clock.seconds)
    return images / statistics.median(harness_seconds), images / statistics.median(reference_seconds)


def _images(count: int, shape: tuple[int, int], seed: int) -> list[np.ndarray]:
    # the encoders' cost does not depend on content; distinct random images make every one a cache miss
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, shape, dtype=np.uint8) for _ in range(count)]


@dataclass(frozen=True)
class Comparison:
    """Images per second of the harness path and of the reference path, measured on the same images."""

    what: str
    harness: str
    reference: str
    backbone: str
    device: str
    images: int
    batch_size: int
    harness_per_second: float
    reference_per_second: float

    @property
    def ratio(self) -> float:
        return self.harness_per_second / self.reference_per_second

    def lines(self) -> list[str]:
        return [
            f"{self.what}: {self.backbone} on {self.device}, {self.images} images, "
            f"batches of {self.batch_size}",
            f"  {self.harness:<44} {self.harness_per_second:8.2f} images/s",
            f"  {self.reference:<44} {self.reference_per_second:8.2f} images/s",
            f"  ratio harness / reference: {self.ratio:.3f}",
        ]


def encode_benchmark(
    backbone: Backbone,
    images: int = 16,
    shape: tuple[int, int] = (640, 640),
    batch_size: int | None = None,
    repeats: int = 3,
    seed: int = 0,
) -> Comparison:
    """The harness's encoding path (digest, preprocess, encode, store float16 to an empty cache) against a
    bare ``image_encoder`` forward over the same, already preprocessed batches already on the device."""
    size = batch_size or backbone.encode_batch_size
    pictures = _images(images, shape, seed)
    chunks = [pictures[start : start + size] for start in range(0, images, size)]
    batches = [torch.stack([backbone.preprocess(i) for i in chunk]).to(backbone.device) for chunk in chunks]

    @torch.inference_mode()
    def bare() -> None:
        for batch in batches:
            backbone.image_encoder(batch)

    def harness() -> None:
        with tempfile.TemporaryDirectory(prefix="bench-perf-") as root:
            cached_embeddings(backbone, pictures, batch_size=size, root=Path(root))

    bare()  # warm-up: first-call allocations and kernel selection are not what is measured
    harness_rate, bare_rate = _median_rates(harness, bare, images, repeats, backbone.device)
    return Comparison(
        what="encode",
        harness="harness path (cached_embeddings, empty cache)",
        reference="bare image_encoder forward",
        backbone=backbone.name,
        device=str(backbone.device),
        images=images,
        batch_size=size,
        harness_per_second=harness_rate,
        reference_per_second=bare_rate,
    )


def decode_benchmark(backbone: Backbone, images: int = 16, repeats: int = 3, seed: int = 0) -> Comparison:
    """One box per image: ``Backbone.decode`` on the whole batch against a loop of one-image decodes."""
    generator = torch.Generator().manual_seed(seed)
    embeddings = torch.randn((images, *EMBEDDING_SHAPE), generator=generator).to(backbone.device)
    corners = torch.rand((images, 2), generator=generator) * backbone.input_size / 2
    boxes = torch.cat([corners, corners + backbone.input_size / 3], dim=1).to(backbone.device)

    @torch.inference_mode()
    def batched() -> None:
        backbone.decode(embeddings, *backbone.embed_boxes(boxes))

    @torch.inference_mode()
    def one_by_one() -> None:
        for index in range(images):
            backbone.decode(embeddings[index : index + 1], *backbone.embed_boxes(boxes[index : index + 1]))

    one_by_one()  # warm-up
    batched_rate, loop_rate = _median_rates(batched, one_by_one, images, repeats, backbone.device)
    return Comparison(
        what="decode",
        harness="batched decode (one prompt per image)",
        reference="loop of one-image decodes",
        backbone=backbone.name,
        device=str(backbone.device),
        images=images,
        batch_size=images,
        harness_per_second=batched_rate,
        reference_per_second=loop_rate,
    )
