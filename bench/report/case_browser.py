"""What the HTML page's case browser shows: per structure, every test case with its image, its ground truth and
the kept prediction of each Table 1 row, as small images ready to embed.

A Table 1 row is shown by one of its runs: its lowest draw and seed (draw 0, seed 0 in a full grid), named in the
column's title. Where that run's kept masks are a re-run's (``predictions.mark_as_rerun``), its cells show the
re-run's scores, which go with those masks, and the column says so. Predictions are read from the files the runner
keeps (``bench.records.predictions``), never recomputed; a run without a file, or a case its file lacks (older runs
kept 8 cases), shows as "no predictions kept". Images and ground truth come from the dataset plugin, as for the
qualitative figure.

Each case's image is a JPEG (a display copy, not data) at two sizes: a thumbnail for the rows (longest side
``THUMB_SIDE``) and a large one for the case's view (``LARGE_SIDE``, never enlarged); an image hardly larger than a
thumbnail (``SHARED_SIDE``, e.g. ACDC's 256-px slices) is one copy that its row shows scaled down. Masks are
one-bit palette PNGs, the row's colour over transparency, at the same two sizes: filled at thumbnail size, laid
over the image by the page, and as a contour at the large size. A smooth mask deflates to a few hundred bytes,
so each prediction costs a small part of what an image does, and the page stays one file.
"""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
from PIL import Image

from bench.data.dataset import load_task
from bench.errors import BenchError
from bench.records.names import Names
from bench.records.predictions import load_predictions, rerun_note, with_kept_scores
from bench.records.rows import ROW_KEYS, one_line, shown_runs, with_row_names
from bench.records.store import prediction_path, record_split
from bench.report.figure import TRUTH_COLOUR, mean_dice
from bench.report.plots import row_styles

THUMB_SIDE = 192  # px, longest side of a row's images
LARGE_SIDE = 512  # px, longest side of a case's large view (smaller images keep their size)
SHARED_SIDE = 288  # px: an image no longer than this is in the page once, its row showing it at thumbnail size
JPEG_QUALITY = 80
FILL_ALPHA = 110  # of 255: a filled mask over a thumbnail, the image still visible beneath
CONTOUR_PIXELS = 2  # thickness of a contour in the large view, in its own pixels


@dataclass(frozen=True)
class BrowserColumn:
    """One Table 1 row as the case browser shows it: the run that stands for it and its kept predictions."""

    label: str  # the row as the plots name it: "UNet · mask · k=10 · quick"
    method: str
    method_display: str
    colour: str  # "#rrggbb", the row's colour in the static plots
    run: str  # "seed 0, draw 0"
    mean_dice: float  # of the scores the cells show: a re-run's where its masks are kept (``rerun``)
    kept: bool  # whether the run has a predictions file
    rerun: str | None = None  # ``predictions.rerun_note`` where the kept masks are a re-run's, else None


@dataclass
class CaseCell:
    dice: float | None
    hd95: float | None
    thumb: str | None = None  # data URI of the filled prediction, None when no prediction is kept
    contour: str | None = None


@dataclass
class Case:
    id: str
    image_thumb: str
    image_large: str  # the same data URI as ``image_thumb`` for an image of at most ``SHARED_SIDE``
    truth_thumb: str
    truth_contour: str
    thumb_size: tuple[int, int]  # (width, height) the row shows its image at
    cells: list[CaseCell] = field(default_factory=list)


@dataclass
class TaskBrowser:
    dataset: str
    task: str
    label: str  # "HC18 head"
    split: str
    columns: list[BrowserColumn]
    cases: list[Case]
    problem: str | None = None  # why no case is shown (the dataset is not on this machine), else None


def _hex(colour: tuple[float, float, float]) -> str:
    return "#" + "".join(f"{round(255 * channel):02x}" for channel in colour[:3])


def _rgb(colour: str) -> tuple[int, int, int]:
    return int(colour[1:3], 16), int(colour[3:5], 16), int(colour[5:7], 16)


def _scaled_shape(shape: tuple[int, ...], side: int) -> tuple[int, int]:
    """(width, height) with the longest side at most ``side``."""
    scale = min(1.0, side / max(shape[:2]))
    return max(1, round(shape[1] * scale)), max(1, round(shape[0] * scale))


def _uri(kind: str, encoded: bytes) -> str:
    return f"data:image/{kind};base64,{base64.b64encode(encoded).decode('ascii')}"


def image_uri(image: np.ndarray, side: int) -> str:
    """A grey-scale uint8 image as a JPEG data URI, its longest side at most ``side``."""
    resized = cv2.resize(image, _scaled_shape(image.shape, side), interpolation=cv2.INTER_AREA)
    ok, encoded = cv2.imencode(".jpg", resized, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise BenchError("OpenCV could not encode a thumbnail as JPEG")
    return _uri("jpeg", encoded.tobytes())


def case_images(image: np.ndarray) -> tuple[str, str, tuple[int, int]]:
    """A case's thumbnail and large-view JPEG data URIs, one URI for both where the image is at most
    ``SHARED_SIDE`` (a second copy would save the page little), and the (width, height) its row shows it at."""
    large = image_uri(image, LARGE_SIDE)
    thumb = large if max(image.shape[:2]) <= SHARED_SIDE else image_uri(image, THUMB_SIDE)
    return thumb, large, _scaled_shape(image.shape, THUMB_SIDE)


def _resized_mask(mask: np.ndarray, side: int) -> np.ndarray:
    """The mask at the size ``image_uri`` gives its image: the area fraction each new pixel covers, > 0.5."""
    return cv2.resize(mask.astype(np.float32), _scaled_shape(mask.shape, side), interpolation=cv2.INTER_AREA) > 0.5


def mask_uri(mask: np.ndarray, colour: str, side: int, contour: bool = False) -> str:
    """A boolean mask as a PNG data URI: ``colour`` where it is set (or on its outline with ``contour``), transparent
    elsewhere. A two-entry palette at one bit per pixel: a smooth mask takes about a kilobyte at 512 px."""
    shown = _resized_mask(mask, side)
    alpha = FILL_ALPHA
    if contour:
        kernel = np.ones((2 * CONTOUR_PIXELS - 1,) * 2, np.uint8)
        inside = cv2.erode(shown.astype(np.uint8), kernel, borderType=cv2.BORDER_CONSTANT, borderValue=0)
        shown, alpha = shown & ~inside.astype(bool), 255
    image = Image.frombytes("P", (shown.shape[1], shown.shape[0]), shown.astype(np.uint8).tobytes())
    image.putpalette([0, 0, 0, *_rgb(colour)])
    stream = io.BytesIO()
    image.save(stream, "PNG", bits=1, transparency=bytes([0, alpha]), compress_level=9)
    return _uri("png", stream.getvalue())


def _shown_runs(runs: pd.DataFrame, names: Names) -> pd.DataFrame:
    """The run that stands for each Table 1 row on each structure (``rows.shown_runs``), with its row's names and
    colour (every finished run counts for the colours, as in the static plots)."""
    finished = with_row_names(runs[runs["status"] == "ok"], names)
    styles = row_styles(finished, names)
    finished = finished.assign(colour=[_hex(styles[label].colour) for label in finished["row_label"]])
    return finished[finished["run_id"].isin(shown_runs(runs, names))]


def _columns(
    rows: list[tuple], finished: pd.DataFrame, records: dict[str, dict], dataset: str, task: str, results: Path
) -> list[tuple[BrowserColumn, dict]]:
    """A column per Table 1 row (``rows``: their ROW_KEYS values, in the table's order) that ran on the task, with
    the record of the run that stands for it as its kept masks scored (``with_kept_scores``; ``records``: by id)."""
    first = finished[(finished["dataset"] == dataset) & (finished["task"] == task)].set_index(ROW_KEYS)
    columns = []
    for key in rows:
        if key not in first.index:
            continue
        run = first.loc[key]
        path = prediction_path(results, run["experiment"], run["run_id"])
        scored = with_kept_scores(records[run["run_id"]], path)
        columns.append((BrowserColumn(one_line(run["row_label"]), key[0], run["method_display"], run["colour"],
                                      f"seed {run['seed']}, draw {run['draw']}", mean_dice(scored), path.exists(),
                                      rerun_note(scored)), scored))  # fmt: skip
    return columns


def task_browsers(
    records: list[dict], runs: pd.DataFrame, rows: list[tuple], columns: list[tuple[str, str]], results: Path,
    names: Names, data_root: Path | None = None,
) -> list[TaskBrowser]:
    """A browser per structure (``columns``: Table 1's (dataset, task) pairs, in its order) over Table 1's ``rows``
    (their ROW_KEYS values); a structure whose dataset cannot be read here says why instead of showing cases."""
    finished = _shown_runs(runs, names)
    by_id = {record["run_id"]: record for record in records}
    split = record_split(records[0])  # the caller passes the records of one split (store.of_split)
    browsers = []
    for dataset, task in columns:
        chosen = _columns(rows, finished, by_id, dataset, task, results)
        browser = TaskBrowser(dataset, task, names.task_label(dataset, task), split, [c for c, _ in chosen], [])
        try:
            samples = getattr(load_task(dataset, task, data_root), split)
        except BenchError as error:
            browser.problem = str(error)
        else:
            browser.cases = _cases(samples, [scored for _, scored in chosen], browser.columns, results)
        browsers.append(browser)
    return browsers


def _cases(samples: list, chosen: list[dict], columns: list[BrowserColumn], results: Path) -> list[Case]:
    cases = {}
    for sample in samples:
        thumb, large, thumb_size = case_images(sample.image)
        cases[sample.id] = Case(sample.id, thumb, large, mask_uri(sample.mask, TRUTH_COLOUR, THUMB_SIDE),
                                mask_uri(sample.mask, TRUTH_COLOUR, LARGE_SIDE, contour=True), thumb_size)
    shapes = {sample.id: sample.mask.shape for sample in samples}
    # a column at a time: only one run's masks are in memory at once
    for record, column in zip(chosen, columns, strict=True):
        scores = {case["id"]: case for case in record["cases"]}
        kept = load_predictions(prediction_path(results, record["experiment"], record["run_id"])) if column.kept else {}
        for case_id, case in cases.items():
            score = scores.get(case_id, {})
            cell = CaseCell(score.get("dice"), score.get("hd95"))
            mask = kept.get(case_id)
            if mask is not None:
                if mask.shape != shapes[case_id]:
                    raise BenchError(f"kept prediction of {case_id} in {record['run_id']} has shape {mask.shape},"
                                     f" the image {shapes[case_id]}: the dataset has changed")  # fmt: skip
                cell.thumb = mask_uri(mask, column.colour, THUMB_SIDE)
                cell.contour = mask_uri(mask, column.colour, LARGE_SIDE, contour=True)
            case.cells.append(cell)
    return list(cases.values())

