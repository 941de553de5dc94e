"""The shared embedding cache: hits, misses, invalidation, concurrent and killed writers, info and clear."""

from __future__ import annotations

import multiprocessing
import os
import signal
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from bench.errors import UnknownNameError
from bench.sam.backbones import load_backbone
from bench.sam.embedding_cache import (
    EMBEDDING_SHAPE,
    EmbeddingStore,
    cache_usage,
    cached_embeddings,
    clear_cache,
    embedding_counts,
    embeddings_root,
    image_digest,
)
from bench.sam.tiny_backbone import TinyRandomSAM, tiny_sam


def images(count: int, seed: int = 0, shape: tuple[int, int] = (40, 56)) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, shape, dtype=np.uint8) for _ in range(count)]


def encoded_during(call) -> tuple[torch.Tensor, dict[str, int]]:
    before = embedding_counts()
    result = call()
    return result, {key: value - before[key] for key, value in embedding_counts().items()}


@pytest.fixture(scope="module")
def tiny():
    return load_backbone("tiny-sam-test")


def test_miss_then_hit(tiny) -> None:
    pictures = images(3)
    first, counts = encoded_during(lambda: cached_embeddings(tiny, pictures))
    assert counts == {"encoded": 3, "cached": 0}
    assert first.shape == (3, *EMBEDDING_SHAPE) and first.dtype == torch.float32
    second, counts = encoded_during(lambda: cached_embeddings(tiny, pictures[::-1]))
    assert counts == {"encoded": 0, "cached": 3}
    assert torch.equal(second, first.flip(0))  # first (encoding) and later (cached) runs see the same numbers
    # and those are the encoder's output at the stored precision
    with torch.inference_mode():
        direct = tiny.encode(tiny.preprocess(pictures[0])[None])[0]
    torch.testing.assert_close(first[0], direct.half().float(), rtol=0, atol=0)
    assert len(list(embeddings_root().glob("tiny-sam-test/*/*/*.npy"))) == 3


def test_called_in_inference_mode_it_still_returns_a_normal_tensor(tiny) -> None:
    pictures = images(2, seed=7)
    with torch.inference_mode():
        inside = cached_embeddings(tiny, pictures)  # encodes
    assert not inside.is_inference()  # so a method may later use it in a graph it trains
    torch.testing.assert_close(inside, cached_embeddings(tiny, pictures), rtol=0, atol=0)


def test_an_image_repeated_in_one_call_is_encoded_once(tiny) -> None:
    picture = images(1, seed=1)[0]
    result, counts = encoded_during(lambda: cached_embeddings(tiny, [picture, picture.copy(), picture]))
    assert counts == {"encoded": 1, "cached": 0}
    assert torch.equal(result[0], result[2]) and torch.equal(result[0], result[1])


def test_the_key_is_the_pixels_not_the_array(tiny) -> None:
    picture = images(1, seed=2)[0]
    assert image_digest(picture) == image_digest(np.asfortranarray(picture).copy())
    assert image_digest(picture) != image_digest(picture.T.copy())  # same bytes, other shape
    changed = picture.copy()
    changed[0, 0] ^= 1
    assert image_digest(changed) != image_digest(picture)


def test_a_new_checkpoint_invalidates(tmp_path: Path) -> None:
    pictures = images(2, seed=3)
    first_path, copy_path, other_path = tmp_path / "a.pth", tmp_path / "copy-of-a.pth", tmp_path / "b.pth"
    torch.save(tiny_sam(seed=1).state_dict(), first_path)
    copy_path.write_bytes(first_path.read_bytes())
    torch.save(tiny_sam(seed=2).state_dict(), other_path)

    def embed_with(checkpoint: Path):
        return encoded_during(lambda: cached_embeddings(load_backbone("tiny-sam-test", checkpoint), pictures))

    first, counts = embed_with(first_path)
    assert counts["encoded"] == 2
    # the same weights under another file name hit: the key is the checkpoint's content
    _, counts = embed_with(copy_path)
    assert counts == {"encoded": 0, "cached": 2}
    other, counts = embed_with(other_path)
    assert counts == {"encoded": 2, "cached": 0}
    assert not torch.allclose(first, other)


def test_a_new_preprocessing_version_invalidates(tiny) -> None:
    class Revised(TinyRandomSAM):
        preprocessing = TinyRandomSAM.preprocessing + "-revised"

    revised = Revised(tiny.model, tiny.checkpoint_digest)
    pictures = images(2, seed=4)
    cached_embeddings(tiny, pictures)
    _, counts = encoded_during(lambda: cached_embeddings(revised, pictures))
    assert counts == {"encoded": 2, "cached": 0}
    _, counts = encoded_during(lambda: cached_embeddings(tiny, pictures))
    assert counts == {"encoded": 0, "cached": 2}  # both versions are kept side by side
    assert [entry.variants for entry in cache_usage() if entry.backbone == "tiny-sam-test"] == [2]


def test_a_damaged_file_is_encoded_again(tiny) -> None:
    pictures = images(2, seed=5)
    good = cached_embeddings(tiny, pictures)
    store = EmbeddingStore.for_backbone(tiny)
    store.path(image_digest(pictures[0])).write_bytes(b"\x93NUMPY truncated")
    again, counts = encoded_during(lambda: cached_embeddings(tiny, pictures))
    assert counts == {"encoded": 1, "cached": 1}
    assert torch.equal(again, good)
    assert store.get(image_digest(pictures[0])) is not None  # rewritten


def test_a_failed_write_leaves_nothing_behind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = EmbeddingStore(tmp_path / "store")

    def save_half_then_die(stream, array, allow_pickle=False):
        stream.write(b"\x93NUMPY half a header")
        raise KeyboardInterrupt

    monkeypatch.setattr(np, "save", save_half_then_die)
    with pytest.raises(KeyboardInterrupt):
        store.put("ab" * 32, np.zeros(EMBEDDING_SHAPE, np.float16))
    assert store.get("ab" * 32) is None
    assert [path for path in (tmp_path / "store").rglob("*") if path.is_file()] == []


def _write_forever(folder: str, started) -> None:
    store = EmbeddingStore(Path(folder))
    index = 0
    while True:
        store.put(f"{index:064x}", np.full(EMBEDDING_SHAPE, index % 1000, np.float16))
        index += 1
        started.set()


def test_a_killed_writer_leaves_only_complete_files(tmp_path: Path) -> None:
    context = multiprocessing.get_context("fork")
    started = context.Event()
    writer = context.Process(target=_write_forever, args=(str(tmp_path / "store"), started))
    writer.start()
    assert started.wait(60)
    time.sleep(0.3)
    os.kill(writer.pid, signal.SIGKILL)
    writer.join()
    store = EmbeddingStore(tmp_path / "store")
    written = sorted((tmp_path / "store").glob("*/*.npy"))
    assert written
    for path in written:
        array = store.get(path.stem)
        assert array is not None and np.all(array == int(path.stem, 16) % 1000), path


def _hammer(folder: str, digests: list[str], seed: int, problems) -> None:
    store = EmbeddingStore(Path(folder))
    rng = np.random.default_rng(seed)
    for _ in range(3):
        for digest in rng.permutation(digests):
            store.put(digest, np.full(EMBEDDING_SHAPE, int(digest[:4], 16) % 1000, np.float16))
            seen = store.get(digests[0])
            if seen is not None and not np.all(seen == int(digests[0][:4], 16) % 1000):
                problems.put(digest)


def test_concurrent_writers(tmp_path: Path) -> None:
    context = multiprocessing.get_context("fork")
    problems = context.Queue()
    digests = [f"{i:04x}" + "0" * 60 for i in range(1, 9)]
    folder = str(tmp_path / "store")
    writers = [context.Process(target=_hammer, args=(folder, digests, seed, problems)) for seed in range(3)]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join(120)
        assert writer.exitcode == 0
    assert problems.empty()
    store = EmbeddingStore(tmp_path / "store")
    for digest in digests:
        array = store.get(digest)
        assert array is not None and np.all(array == int(digest[:4], 16) % 1000)
    assert not list((tmp_path / "store").rglob("*.tmp"))  # every temporary file was renamed


def test_info_and_clear(tiny, tmp_path: Path) -> None:
    from bench.cli import app

    cached_embeddings(tiny, images(2, seed=6))
    leftover = next(embeddings_root().glob("tiny-sam-test/*/*")) / ".deadbeef.killed.tmp"
    leftover.write_bytes(b"partial")  # a killed writer's temporary file is not an embedding
    (usage,) = cache_usage()
    assert (usage.backbone, usage.embeddings) == ("tiny-sam-test", 2)
    assert usage.bytes == 2 * (np.prod(EMBEDDING_SHAPE) * 2 + 128)  # float16 plus the .npy header

    runner = CliRunner()
    info = runner.invoke(app, ["cache", "info"])
    assert info.exit_code == 0 and "tiny-sam-test" in info.output and "4.0 MiB" in info.output

    with pytest.raises(UnknownNameError, match="Did you mean 'litemedsam'"):
        clear_cache("litemedsm")
    assert clear_cache("litemedsam") == []  # known, nothing cached
    cleared = runner.invoke(app, ["cache", "clear", "--backbone", "tiny-sam-test"])
    assert cleared.exit_code == 0 and "removed 2 embeddings (4.0 MiB)" in cleared.output
    assert cache_usage() == []
    unknown = runner.invoke(app, ["cache", "clear", "--backbone", "nope"])
    assert unknown.exit_code == 2 and "unknown backbone 'nope'" in unknown.output
