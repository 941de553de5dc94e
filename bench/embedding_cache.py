"""The on-disk image-embedding cache every SAM-based method reads through.

Layout: ``<cache>/embeddings/<backbone name>/<checkpoint digest>-<preprocessing>/<ab>/<image digest>.npy``
(``<cache>`` is ``$BENCH_CACHE`` or the per-user cache folder), so an image is encoded once per backbone,
checkpoint and preprocessing version for a whole grid, and changing any of them misses the old entries.

Each file is written to a temporary name in its folder and renamed, so concurrent writers of the same
image never expose half a file (the last rename wins, with identical content) and a writer killed mid-way
leaves only a dot-named ``.tmp`` file that readers ignore and ``clear`` removes. A file that does not
load as an embedding is treated as missing and written again.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from bench.errors import BenchError
from bench.method import no_progress
from bench.paths import atomic_write, cache_dir

if TYPE_CHECKING:
    from bench.backbones import Backbone

EMBEDDING_SHAPE = (256, 64, 64)
# float16 halves the disk at no cost in accuracy: medsam-box with litemedsam on the 139 HC18 test images
# scores a mean Dice of 94.870 on float32 and on float16 embeddings (largest per-image difference 0.002
# points). Methods always get these stored values, so an encoding run and a cached run see the same numbers.
STORE_DTYPE = torch.float16

_counts = {"encoded": 0, "cached": 0}


def embedding_counts() -> dict[str, int]:
    """Images encoded and images read from the cache so far in this process (the runner records the delta)."""
    return dict(_counts)


def embeddings_root(root: Path | None = None) -> Path:
    return (root if root is not None else cache_dir()) / "embeddings"


def image_digest(image: np.ndarray) -> str:
    """Content digest of an image: its pixels, shape and dtype (not where it came from)."""
    digest = hashlib.sha256(f"{image.dtype.str}{image.shape}".encode())
    digest.update(np.ascontiguousarray(image).data)
    return digest.hexdigest()


class EmbeddingStore:
    """One folder of embeddings: one backbone, checkpoint and preprocessing version."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    @classmethod
    def for_backbone(cls, backbone: Backbone, root: Path | None = None) -> EmbeddingStore:
        return cls(embeddings_root(root) / backbone.cache_key)

    def path(self, digest: str) -> Path:
        return self.folder / digest[:2] / f"{digest}.npy"

    def get(self, digest: str) -> np.ndarray | None:
        path = self.path(digest)
        try:
            array = np.load(path, allow_pickle=False)
        except (OSError, ValueError, EOFError):  # missing, or damaged on disk: encode (again)
            return None
        return array if array.shape == EMBEDDING_SHAPE else None

    def put(self, digest: str, array: np.ndarray) -> None:
        try:
            # no fsync: a killed process cannot lose page-cache data, and a file damaged by a power cut
            # fails to load and is re-encoded; syncing 2 MB per image would slow every first run
            with atomic_write(self.path(digest)) as stream:
                np.save(stream, array, allow_pickle=False)
        except OSError as error:
            raise BenchError(
                f"cannot write the embedding cache under '{self.folder}' ({error.strerror}); "
                "point $BENCH_CACHE at a writable folder"
            ) from error


def _describe(store: EmbeddingStore, backbone: Backbone) -> None:
    """A small note in each cache folder saying what it holds, for people browsing the cache."""
    note = store.folder / "backbone.json"
    if note.exists():
        return
    payload = {
        "backbone": backbone.name,
        "checkpoint_sha256": backbone.checkpoint_digest,
        "preprocessing": backbone.preprocessing,
        "dtype": str(STORE_DTYPE).removeprefix("torch."),
    }
    with atomic_write(note, "w") as stream:
        json.dump(payload, stream, indent=1)


def cached_embeddings(
    backbone: Backbone,
    images: Sequence[np.ndarray],
    progress: Callable[..., Iterator] = no_progress,
    batch_size: int | None = None,
    root: Path | None = None,
) -> torch.Tensor:
    """N×256×64×64 float32 CPU embeddings of ``images``; only images missing from the cache are encoded.

    Missing images are preprocessed and encoded in batches of ``batch_size`` (default: the backbone's);
    each distinct image is encoded once even if it appears several times.
    """
    store = EmbeddingStore.for_backbone(backbone, root)
    with torch.inference_mode(False):  # a normal tensor, whether or not the caller is in inference mode
        output = torch.empty((len(images), *EMBEDDING_SHAPE), dtype=torch.float32)
    pending: dict[str, list[int]] = {}
    for index, image in enumerate(images):
        digest = image_digest(image)
        if digest in pending:
            pending[digest].append(index)
            continue
        stored = store.get(digest)
        if stored is None:
            pending[digest] = [index]
        else:
            output[index] = torch.from_numpy(stored)
            _counts["cached"] += 1
    if not pending:
        return output

    _describe(store, backbone)
    todo = list(pending)
    size = batch_size or backbone.encode_batch_size
    batches = [todo[start : start + size] for start in range(0, len(todo), size)]

    def load(batch: list[str]) -> torch.Tensor:
        return torch.stack([backbone.preprocess(images[pending[digest][0]]) for digest in batch])

    @torch.inference_mode()  # runs in a worker thread, which does not inherit the caller's mode
    def keep(batch: list[str], stored: torch.Tensor) -> None:
        for digest, embedding in zip(batch, stored, strict=True):
            for index in pending[digest]:
                output[index].copy_(embedding)
            store.put(digest, embedding.numpy())

    # a small pipeline: the next batch is preprocessed and the last one stored while the encoder runs
    writes: list[Future] = []
    with ThreadPoolExecutor(max_workers=1) as loader, ThreadPoolExecutor(max_workers=1) as writer:
        upcoming = loader.submit(load, batches[0])
        description = f"encoding {len(todo)} images with {backbone.name}"
        for number, batch in enumerate(progress(batches, total=len(batches), description=description)):
            pixels = upcoming.result()
            if number + 1 < len(batches):
                upcoming = loader.submit(load, batches[number + 1])
            writes.append(writer.submit(keep, batch, backbone.encode(pixels).to("cpu", STORE_DTYPE)))
            _counts["encoded"] += len(batch)
        for write in writes:
            write.result()  # a failed write (disk full, permissions) fails the run rather than vanishing
    return output


# --- inspecting and clearing ---------------------------------------------------------------------------


@dataclass(frozen=True)
class CacheUsage:
    backbone: str
    variants: int  # distinct (checkpoint, preprocessing) folders
    embeddings: int
    bytes: int


def _usage(folder: Path) -> CacheUsage:
    files = [path for path in folder.glob("*/*/*.npy") if not path.name.startswith(".")]
    variants = sum(1 for path in folder.iterdir() if path.is_dir())
    return CacheUsage(folder.name, variants, len(files), sum(path.stat().st_size for path in files))


def cache_usage(root: Path | None = None) -> list[CacheUsage]:
    """Per backbone: how many embeddings are cached and their size on disk."""
    base = embeddings_root(root)
    if not base.is_dir():
        return []
    return [_usage(folder) for folder in sorted(base.iterdir()) if folder.is_dir()]


def clear_cache(backbone: str | None = None, root: Path | None = None) -> list[CacheUsage]:
    """Delete the cached embeddings of one backbone (or of all); returns what was freed."""
    base = embeddings_root(root)
    if backbone is not None:
        folder = base / backbone
        if not folder.is_dir():
            from bench.registry import BACKBONES

            BACKBONES.get(backbone)  # an unknown name fails with the known names; a known one has nothing
            return []
        folders = [folder]
    else:
        folders = [folder for folder in sorted(base.iterdir()) if folder.is_dir()] if base.is_dir() else []
    freed = [_usage(folder) for folder in folders]
    for folder in folders:
        shutil.rmtree(folder)
    return freed
