"""The on-disk image-embedding cache every SAM-based method reads through.

Layout: ``<cache>/embeddings/<backbone name>/<checkpoint digest>-<preprocessing><variant>/<ab>/<image digest>.npy``
(``<cache>`` is ``$BENCH_CACHE`` or the per-user cache folder), so an image is encoded once per backbone,
checkpoint, preprocessing version, device kind and precision for a whole grid, and changing any of them misses
the old entries. ``<variant>`` (``bench.compute.device.cache_variant``) is empty for CPU + fp32, the key every cache
held before the precision was a choice, and e.g. ``-cuda-tf32`` otherwise: GPU and CPU embeddings differ by ~1e-3.

Processes sharing the cache (parallel runs, a lab's jobs) claim an image before encoding it (a
``<image digest>.claim`` file beside its entry, ``bench.records.claims``): an image is encoded once between them, and
one that another process is encoding is read when that process has written it; only when a claim's holder
dies is its image encoded again, by whoever waits for it. Each file is written to a temporary name in its
folder and renamed, so no reader ever sees half a file, and a writer killed mid-way leaves only a dot-named
``.tmp`` file that readers ignore and ``clear`` removes. A file that does not load as an embedding is treated
as missing and written again.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from bench.compute.device import active_precision, autocast, cache_variant
from bench.errors import BenchError
from bench.paths import atomic_write, cache_dir
from bench.progress import no_progress
from bench.records import claims

if TYPE_CHECKING:
    from bench.sam.backbones import Backbone

EMBEDDING_SHAPE = (256, 64, 64)
# float16 halves the disk at no cost in accuracy: medsam-box with litemedsam on the 139 HC18 test images
# scores a mean Dice of 94.870 on float32 and on float16 embeddings (largest per-image difference 0.002
# points). Methods always get these stored values, so an encoding run and a cached run see the same numbers.
STORE_DTYPE = torch.float16
# how often a process waiting for images another process is encoding looks for them, in seconds
CLAIM_POLL_SECONDS = 0.2

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
    """One folder of embeddings: one backbone, checkpoint, preprocessing version, device kind and precision."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    @classmethod
    def for_backbone(cls, backbone: Backbone, root: Path | None = None) -> EmbeddingStore:
        return cls(embeddings_root(root) / f"{backbone.cache_key}{cache_variant(backbone.device)}")

    def path(self, digest: str) -> Path:
        return self.folder / digest[:2] / f"{digest}.npy"

    def get(self, digest: str) -> np.ndarray | None:
        path = self.path(digest)
        try:
            array = np.load(path, allow_pickle=False)
        except (OSError, ValueError, EOFError):  # missing, or damaged on disk: encode (again)
            return None
        return array if array.shape == EMBEDDING_SHAPE else None

    def claim(self, digest: str) -> claims.Claim | claims.Holder:
        """Claim the encoding of ``digest`` for this process, or the live holder of the claim."""
        return claims.acquire(self._claim_path(digest))

    def holder(self, digest: str) -> claims.Holder | None:
        return claims.live_holder(self._claim_path(digest))

    def _claim_path(self, digest: str) -> Path:
        return self.folder / digest[:2] / f"{digest}{claims.SUFFIX}"

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
        "device": backbone.device.type,
        "precision": active_precision(),
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

    Missing images are preprocessed and encoded in batches of ``batch_size`` (default: the size the backbone
    measures fastest on its device); each distinct image is encoded once even if it appears several times, and
    once between processes that need it at the same time (see the module's note).
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
    # processes sharing the cache claim each image before encoding it (``bench.records.claims``), so an image is encoded
    # once between them; one that another process is encoding is read from the cache when it is written
    while pending:
        mine, theirs = _claim_missing(store, pending, output)
        try:
            if mine:
                mine_pending = {digest: pending[digest] for digest in mine}
                _encode(backbone, images, mine_pending, store, output, batch_size, progress)
        finally:
            for claim in mine.values():
                claims.release(claim)
        pending = _wait_for_others(store, {digest: pending[digest] for digest in theirs}, output)
    return output


def _claim_missing(
    store: EmbeddingStore, pending: dict[str, list[int]], output: torch.Tensor
) -> tuple[dict[str, claims.Claim], list[str]]:
    """Claim the ``pending`` images: those this process now holds (to encode), and those another process holds.

    An image written since it was missed is read into ``output`` instead.
    """
    mine: dict[str, claims.Claim] = {}
    theirs = []
    for digest, indices in pending.items():
        claim = store.claim(digest)
        if isinstance(claim, claims.Holder):
            theirs.append(digest)
        elif not _read_into(store, digest, indices, output):
            mine[digest] = claim
        else:
            claims.release(claim)
    return mine, theirs


def _wait_for_others(
    store: EmbeddingStore, waiting: dict[str, list[int]], output: torch.Tensor
) -> dict[str, list[int]]:
    """Read the ``waiting`` images into ``output`` as other processes write them; returns, as soon as there are
    any, those whose claim ended without an entry (its holder died): this process encodes them."""
    while waiting:
        for digest in [digest for digest, indices in waiting.items() if _read_into(store, digest, indices, output)]:
            del waiting[digest]
        freed = {digest: indices for digest, indices in waiting.items() if store.holder(digest) is None}
        if freed:
            return freed
        if waiting:
            time.sleep(CLAIM_POLL_SECONDS)
    return {}


def _read_into(store: EmbeddingStore, digest: str, indices: list[int], output: torch.Tensor) -> bool:
    """Copy the cached embedding of ``digest`` to ``output[indices]``; False when it is not cached."""
    stored = store.get(digest)
    if stored is None:
        return False
    for index in indices:
        output[index] = torch.from_numpy(stored)
    _counts["cached"] += 1
    return True


def _encode(
    backbone: Backbone,
    images: Sequence[np.ndarray],
    pending: dict[str, list[int]],
    store: EmbeddingStore,
    output: torch.Tensor,
    batch_size: int | None,
    progress: Callable[..., Iterator],
) -> None:
    """Encode the images of ``pending`` (digest → their indices in ``images``) into ``output`` and the cache,
    ``batch_size`` at a time, or as many as the backbone measured fastest on its device (``encode_batch_size``)."""
    todo = list(pending)
    # images preprocessed ahead of the encoder: two batches, whether the caller or the backbone sizes them
    ahead = 2 * max(batch_size or 0, backbone.max_encode_batch)

    def load(digest: str) -> torch.Tensor:
        return backbone.preprocess(images[pending[digest][0]])

    @torch.inference_mode()  # runs in a worker thread, which does not inherit the caller's mode
    def keep(batch: list[str], stored: torch.Tensor) -> None:
        for digest, embedding in zip(batch, stored, strict=True):
            for index in pending[digest]:
                output[index].copy_(embedding)
            store.put(digest, embedding.numpy())

    def encode_in_batches(loader: ThreadPoolExecutor, writer: ThreadPoolExecutor) -> Iterator[str]:
        """Yields each image's digest once its batch is encoded (the progress bar counts images)."""
        loading = {position: loader.submit(load, todo[position]) for position in range(min(ahead, len(todo)))}
        start = 0
        while start < len(todo):
            batch = todo[start : start + (batch_size or backbone.encode_batch_size)]
            pixels = torch.stack([loading.pop(start + offset).result() for offset in range(len(batch))])
            for position in range(start + ahead, min(start + len(batch) + ahead, len(todo))):
                loading[position] = loader.submit(load, todo[position])
            with autocast(backbone.device):
                encoded = backbone.encode(pixels)
            writes.append(writer.submit(keep, batch, encoded.to("cpu", STORE_DTYPE)))
            _counts["encoded"] += len(batch)
            start += len(batch)
            yield from batch

    # a small pipeline: the next images are preprocessed and the last batch stored while the encoder runs
    writes: list[Future] = []
    with ThreadPoolExecutor(max_workers=1) as loader, ThreadPoolExecutor(max_workers=1) as writer:
        description = f"encoding {len(todo)} images with {backbone.name}"
        for _ in progress(encode_in_batches(loader, writer), total=len(todo), description=description):
            pass
        for write in writes:
            write.result()  # a failed write (disk full, permissions) fails the run rather than vanishing


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
