"""The test predictions a run keeps beside its record: every scored case's binarised mask, bit-packed.

One ``.npz`` per run (``store.prediction_path``), written by the runner before the record and read by the
qualitative figure and the HTML results page, which never recompute a prediction. Every case is kept, not a
sample: the case browser shows each test case of each Table 1 row. The masks are stored as one bit per pixel
(``np.packbits`` of all masks, flattened and concatenated in the order of ``ids``) with each mask's shape,
then deflated by ``np.savez_compressed``: lossless, 8× smaller than one byte per pixel before compression, and
a smooth structure's long runs of equal bytes deflate further. Measured on HC18 (640 × 640 masks): the 139 test
cases' ground-truth masks take 184 kB in this layout (372 kB as one deflated bool array each, the old layout),
and 8 real UNet predictions 9.7 kB (19 kB before); on ``hc18-demo``'s 40 test cases, a UNet run's file is 18 kB
and Otsu's ragged masks' 35 kB. About 1 kB per case, then: a run keeps all 139 cases in under 200 kB, a grid of a
hundred runs in under 20 MB.

Files of the older layout (``ids`` and one bool array ``mask_<i>`` per case, the first 8 cases by id) still read.

A file may hold a re-run's masks rather than the record's own (``mark_as_rerun``: ``bench recheck
--keep-predictions`` keeps them for records whose predictions were never kept, when the re-run did not reproduce the
record exactly). Such a file carries the re-run's provenance and per-case scores (``rerun``, a JSON string), so a
page or figure shows each mask beside the Dice it scored and says it is a re-run's, never the record's.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from bench.errors import BenchError
from bench.metrics import binarize
from bench.paths import atomic_write

FORMAT = 2  # 1: bool arrays of the first 8 cases by id (``mask_<i>``); 2: every case, bit-packed


def save_predictions(path: Path, ids: Sequence[str], probabilities: Sequence[np.ndarray]) -> None:
    """Every case's mask (probability > 0.5), in id order: ``ids``, ``shapes`` (n × 2) and ``bits``.

    Masks are stored by position rather than under their ids because ids may hold characters a zip member
    name should not. Written to a temporary file and renamed, like the records.
    """
    order = sorted(range(len(ids)), key=ids.__getitem__)
    masks = [binarize(probabilities[i]) for i in order]
    shapes = np.array([mask.shape for mask in masks], dtype=np.int64).reshape(len(masks), 2)
    flat = np.concatenate([mask.ravel() for mask in masks]) if masks else np.zeros(0, bool)
    with atomic_write(path) as stream:
        np.savez_compressed(stream, format=np.int64(FORMAT), ids=np.array([ids[i] for i in order], dtype=str),
                            shapes=shapes, bits=np.packbits(flat))  # fmt: skip


def mark_as_rerun(path: Path, rerun: dict) -> None:
    """Mark the predictions file ``path`` as made by ``rerun`` (a re-run's record) rather than by the record of its
    run id: the re-run's code, device, date, mean Dice and per-case scores are stored beside the masks."""
    with np.load(path) as saved:
        arrays = dict(saved)
    cases = [{"id": case["id"], "dice": case.get("dice"), "hd95": case.get("hd95")} for case in rerun["cases"]]
    provenance = {key: rerun.get(key) for key in ("git_rev", "device", "cpu", "finished", "mean_dice")}
    arrays["rerun"] = np.array(json.dumps({**provenance, "cases": cases}))
    with atomic_write(path) as stream:
        np.savez_compressed(stream, **arrays)


@contextmanager
def _opened(path: Path) -> Iterator:
    """The predictions file's arrays; an unreadable file is one error line that names it."""
    try:
        with np.load(path) as saved:
            yield saved
    except (OSError, ValueError, KeyError) as error:
        raise BenchError(f"predictions file '{path}' is unreadable ({error}); run it again") from error


def rerun_of(path: Path) -> dict | None:
    """The re-run whose masks the file holds (``mark_as_rerun``), or None when they are the record's own."""
    with _opened(path) as saved:
        return json.loads(str(saved["rerun"])) if "rerun" in saved else None


def with_kept_scores(record: dict, path: Path) -> dict:
    """``record`` as the masks kept at ``path`` scored: the record itself, or, where they are a re-run's, a copy with
    the re-run's per-case scores as ``cases`` and its provenance as ``rerun`` (code revision, device, and the
    record's own mean Dice as ``record_mean_dice``)."""
    rerun = rerun_of(path) if path.is_file() else None
    if rerun is None:
        return record
    provenance = {key: rerun.get(key) for key in ("git_rev", "device", "finished")}
    return record | {"cases": rerun["cases"], "rerun": provenance | {"record_mean_dice": record["mean_dice"]}}


def rerun_note(record: dict) -> str | None:
    """How a figure or page names masks that are a re-run's (``with_kept_scores``), or None for a record's own."""
    rerun = record.get("rerun")
    if rerun is None:
        return None
    revision = (rerun.get("git_rev") or "unknown")[:10]
    return f"masks and scores of a re-run at {revision} (the record's mean Dice: {rerun['record_mean_dice']:.3f})"


def kept_ids(path: Path) -> set[str]:
    """The ids of the cases whose masks the file keeps (every scored case, or the first 8 in the older layout)."""
    with _opened(path) as saved:
        return {str(case) for case in saved["ids"]}


def load_predictions(path: Path) -> dict[str, np.ndarray]:
    """Case id → boolean mask from a predictions file written by the runner (either layout)."""
    with _opened(path) as saved:
        ids = [str(case) for case in saved["ids"]]
        if "bits" not in saved:  # the first layout: one bool array per case
            return {case: saved[f"mask_{i}"].astype(bool) for i, case in enumerate(ids)}
        shapes = saved["shapes"]
        sizes = np.prod(shapes, axis=1) if len(shapes) else np.zeros(0, np.int64)
        flat = np.unpackbits(saved["bits"], count=int(sizes.sum())).astype(bool)
    starts = np.concatenate([[0], np.cumsum(sizes)])
    return {case: flat[starts[i] : starts[i + 1]].reshape(shapes[i]) for i, case in enumerate(ids)}
