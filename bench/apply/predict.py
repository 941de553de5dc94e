"""`bench predict`: a finished run's saved model applied to new images, as its dataset preprocesses them.

The run is named by id, or by method (its headline run: ``bench.records.rows.headline``). Its model is read
back (``bench.run.saved_models``), each input is framed by the run's dataset plugin (``bench.data.framing``), the
method predicts with the backbone's embeddings read through the embedding cache, as in `bench run`, and each
mask is put back on the input's own grid.
"""

from __future__ import annotations

import csv
import dataclasses
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from bench.data.dataset import dataset_plugin
from bench.data.framing import FramedPlane, SourceImage, frame_source, read_source
from bench.data.image_io import LUMINANCE
from bench.data.samples import Box, TestItem
from bench.errors import BenchError
from bench.method import Method, RunContext
from bench.progress import no_progress
from bench.records.spec import RunSpec
from bench.records.store import search_records
from bench.registry import METHODS
from bench.run.saved_models import SavedModel, build_method, check_backbone, read_saved_model

# planes handed to the method per predict call: enough for its batched decoding, few enough for a smooth bar
PREDICT_CHUNK = 32


def find_run(results: Path, which: str, experiment: str | None = None) -> dict:
    """The finished run record ``which`` names: a run id, or a method (its headline run among the runs that
    can predict: saved models, or training-free)."""
    from bench.run.saved_models import lacks_saved_model

    records = [r for r in search_records(results, experiment) if r.get("status") == "ok" and "eval_of" not in r]
    by_id = [r for r in records if r.get("run_id") == which]
    if by_id:
        return by_id[0]
    of_method = [r for r in records if r["spec"]["method"] == which]
    where = f"'{results}'" + (f" (experiment {experiment})" if experiment else "")
    if not of_method:
        raise BenchError(f"no finished run named '{which}' (a run id or a method) under {where}")
    usable = [r for r in of_method if not lacks_saved_model(r)]
    if not usable:
        raise BenchError(
            f"no run of {which} under {where} has a saved model: run it again with --save-models added to the "
            "`bench run` command that made it"
        )
    return headline_run(usable, which)


def headline_run(records: list[dict], method: str) -> dict:
    """Among one method's runs on one task, the headline row's run with the fewest shots, draw and seed."""
    from bench.records.names import shots_sort_key
    from bench.records.rows import headline
    from bench.records.store import runs_frame

    tasks = sorted({f"{r['spec']['dataset']}/{r['spec']['task']}" for r in records})
    if len(tasks) > 1:
        raise BenchError(f"{method} has runs on {', '.join(tasks)}: name the one to use by its run id")
    frame = runs_frame(records)
    frame = frame.assign(order=[shots_sort_key(s) for s in frame["shots"]]).sort_values(["order", "draw", "seed"])
    default = METHODS.get(method).default_labels[0] if method in METHODS else None
    best = headline(frame, default)
    return next(r for r in records if r["run_id"] == best["run_id"])


@dataclass
class LoadedRun:
    """A run ready to predict: its record, its trained method, the context it predicts in, its dataset."""

    record: dict
    model: SavedModel
    method: Method
    ctx: RunContext
    dataset: object

    @property
    def spec(self) -> RunSpec:
        return self.ctx.spec

    @property
    def prompted(self) -> bool:
        return METHODS.get(self.spec.method).prompted


def load_run(record: dict, results: Path, device: torch.device, checkpoint: Path | None = None,
             data_root: Path | None = None) -> LoadedRun:  # fmt: skip
    """The run's method rebuilt from its saved model, checked against the backbone at hand."""
    model = read_saved_model(record, results)
    spec = model.spec
    if checkpoint is not None:
        spec = dataclasses.replace(spec, checkpoint=str(checkpoint.expanduser().resolve()))
    ctx = RunContext(spec=spec, hparams=model.hparams, device=device)
    if METHODS.get(spec.method).uses_backbone:
        check_backbone(model, ctx.backbone, record["run_id"])  # a missing checkpoint fails here in one line
    method = build_method(model, device)
    return LoadedRun(record, model, method, ctx, dataset_plugin(spec.dataset, data_root))


@dataclass
class Framed:
    """One input file and its planes as the run's dataset frames them."""

    source: SourceImage
    planes: list[FramedPlane]

    def plane_ids(self) -> list[str]:
        if not self.source.is_volume:
            return [self.source.path.name]
        return [f"{self.source.path.name}:{z}" for z in range(len(self.planes))]


def frame_inputs(run: LoadedRun, files: Sequence[Path]) -> list[Framed]:
    """Every input read and framed before anything is predicted, so a bad file fails before any work. A colour
    image is read as the run's dataset reads its own: its luminance, unless the dataset names a channel."""
    channel = getattr(run.dataset, "channel", None)
    in_file = LUMINANCE if channel is None else channel
    return [Framed(source, frame_source(run.dataset, source)) for source in (read_source(f, in_file) for f in files)]


def colour_note(run: LoadedRun, inputs: Sequence[Framed]) -> str | None:
    """One line on the colour inputs, if any: how many, and how they were read."""
    ways = sorted({framed.source.read_as for framed in inputs if framed.source.read_as})
    count = sum(1 for framed in inputs if framed.source.read_as)
    if not count:
        return None
    return (f"{count} colour image{'s' * (count > 1)} read as {' / '.join(ways)}, as {run.spec.dataset} reads its "
            "own images")  # fmt: skip


def read_boxes(path: Path | None, method: str) -> dict[str, Box]:
    """The prompts of a prompted method: ``image,x0,y0,x1,y1`` rows (the input's own pixels, inclusive); the
    image is the file name, and ``name:z`` names slice z of a volume."""
    if path is None:
        raise BenchError(
            f"{method} is prompted with a box per image: give them with --boxes FILE.csv "
            "(columns image,x0,y0,x1,y1, in each input's own pixels)"
        )
    boxes: dict[str, Box] = {}
    try:
        with path.open(newline="") as stream:
            for line, row in enumerate(csv.DictReader(stream), start=2):
                try:
                    x0, y0, x1, y1 = (int(float(row[key])) for key in ("x0", "y0", "x1", "y1"))
                    boxes[row["image"].strip()] = Box(x0, y0, x1, y1)
                except (KeyError, TypeError, ValueError, AttributeError):
                    raise BenchError(
                        f"{path}, line {line}: expected image,x0,y0,x1,y1 with integer coordinates"
                    ) from None
    except OSError as error:
        raise BenchError(f"cannot read boxes file '{path}' ({error.strerror})") from None
    return boxes


def test_items(run: LoadedRun, framed: Framed, boxes: dict[str, Box] | None) -> list[TestItem | None]:
    """The method's items for one input's planes; None for a volume slice a prompted method has no box for."""
    items: list[TestItem | None] = []
    for plane_id, plane in zip(framed.plane_ids(), framed.planes, strict=True):
        box = None
        if boxes is not None:
            box = boxes.get(plane_id) or boxes.get(plane_id.replace(framed.source.path.name, framed.source.name, 1))
            if box is None and not framed.source.is_volume:
                raise BenchError(f"no box for '{plane_id}' in the --boxes file")
            if box is None:
                items.append(None)
                continue
            box = plane.geometry.box_to_frame(box)
        items.append(TestItem(plane_id, plane.image, plane.spacing, box))
    return items


def predict_masks(
    run: LoadedRun,
    inputs: list[Framed],
    boxes: dict[str, Box] | None = None,
    track: Callable[..., Iterator] = no_progress,
) -> Iterator[tuple[Framed, np.ndarray, list[np.ndarray]]]:
    """Per input: the boolean mask on its own grid (its array's shape), and the method's probabilities per
    plane on the frame. Inputs are predicted in chunks of whole files; ``track`` advances once per input."""
    chunk: list[Framed] = []
    for position, framed in enumerate(track(inputs, total=len(inputs), description="predicting")):
        chunk.append(framed)
        if sum(len(f.planes) for f in chunk) >= PREDICT_CHUNK or position == len(inputs) - 1:
            yield from _predict_chunk(run, chunk, boxes)
            chunk = []


def _predict_chunk(run: LoadedRun, chunk: list[Framed], boxes: dict[str, Box] | None):
    per_input = [test_items(run, framed, boxes) for framed in chunk]
    given = [item for items in per_input for item in items if item is not None]
    probabilities = iter(run.method.predict(given, run.ctx) if given else [])
    for framed, items in zip(chunk, per_input, strict=True):
        frames = [next(probabilities) if item is not None else np.zeros(plane.image.shape, np.float32)
                  for item, plane in zip(items, framed.planes, strict=True)]  # fmt: skip
        planes = [plane.geometry.to_source(p) for plane, p in zip(framed.planes, frames, strict=True)]
        yield framed, (np.stack(planes) if framed.source.is_volume else planes[0]), frames
