"""`bench predict` and `bench evaluate`: a finished run's saved model on new images, and on other labelled data."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from bench.cli.common import DataRootOption, PluginOption, ProgressBars, app, console, load_plugins, user_errors
from bench.errors import BenchError

RunArgument = Annotated[str, typer.Argument(help="A run id, or a method name (its headline run).")]
ResultsOption = Annotated[Path, typer.Option(help="Folder of experiments and their records.")]
ExperimentOption = Annotated[str | None, typer.Option(help="The run's experiment (default: search all).")]
BoxesOption = Annotated[
    Path | None, typer.Option(help="CSV of prompts for prompted methods: image,x0,y0,x1,y1 in the input's pixels.")
]
DeviceOption = Annotated[str, typer.Option(help="auto, cpu or cuda[:N].")]
CheckpointOption = Annotated[
    Path | None, typer.Option(help="The backbone's checkpoint file, when it is not where the run found it.")
]
_COLUMNS = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())


def _prepare(which: str, results: Path, experiment: str | None, device: str, checkpoint: Path | None,
             data_root: Path | None, boxes: Path | None):  # fmt: skip
    """The run loaded for prediction and its prompts (None for a method that is not prompted)."""
    from bench.apply.predict import find_run, load_run, read_boxes
    from bench.run.runner import resolve_device

    record = find_run(results, which, experiment)
    with console.status(f"loading run {record['run_id']}"):
        run = load_run(record, results, resolve_device(device), checkpoint, data_root)
    prompts = read_boxes(boxes, run.spec.method) if run.prompted else None
    return run, prompts


def _writable_folder(folder: Path) -> None:
    import tempfile

    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-test-"):
            pass
    except OSError as error:
        raise BenchError(f"output folder '{folder}' is not writable ({error.strerror}); choose another") from None


@app.command()
@user_errors
def predict(
    run: RunArgument,
    inputs: Annotated[list[Path], typer.Argument(help="Image files or folders: PNG/TIF/JPG, NIfTI, NRRD, MHA.")],
    output: Annotated[Path, typer.Option(help="Folder the masks are written to (named as their inputs).")],
    results: ResultsOption = Path("results"),
    experiment: ExperimentOption = None,
    boxes: BoxesOption = None,
    device: DeviceOption = "auto",
    checkpoint: CheckpointOption = None,
    data_root: DataRootOption = None,
    plugin: PluginOption = None,
) -> None:
    """Segment new images with a run's saved model (`bench run --save-models`), preprocessed as its dataset
    is; each mask is written on its input's own grid, in its format (PNG for 2-D rasters)."""
    from bench.apply.predict import colour_note, frame_inputs, predict_masks
    from bench.data.framing import input_files, output_name, write_mask

    load_plugins(plugin)
    files = input_files(inputs)
    targets = {path: output / output_name(path) for path in files}
    if len(set(targets.values())) < len(targets):
        raise BenchError("two inputs would write masks of the same name; predict them into separate folders")
    clash = next((path for path, target in targets.items() if target.resolve() == path.resolve()), None)
    if clash is not None:
        raise BenchError(f"the mask of '{clash}' would overwrite it; choose another --output")
    loaded, prompts = _prepare(run, results, experiment, device, checkpoint, data_root, boxes)
    _writable_folder(output)
    with console.status(f"reading {len(files)} images"):
        framed = frame_inputs(loaded, files)
    note = colour_note(loaded, framed)
    if note:
        console.print(note, highlight=False, soft_wrap=True)
    written = 0
    with Progress(*_COLUMNS, console=console, transient=True) as progress:
        for item, mask, _ in predict_masks(loaded, framed, prompts, ProgressBars(progress).track):
            target = targets[item.source.path]
            try:
                write_mask(item.source, mask, target)
            except OSError as error:
                raise BenchError(
                    f"could not write '{target}' ({getattr(error, 'strerror', None) or error}); "
                    f"the {written} masks written before it are complete"
                ) from None
            written += 1
    console.print(f"{written} masks of run {loaded.record['run_id']} written to {output}", highlight=False)


@app.command()
@user_errors
def evaluate(
    run: RunArgument,
    inputs: Annotated[
        list[Path] | None, typer.Argument(help="Image files or folders, scored against --truth.")
    ] = None,
    truth: Annotated[Path | None, typer.Option(help="Folder of ground-truth masks named as the inputs.")] = None,
    truth_label: Annotated[
        int | None, typer.Option(help="The structure's value in the ground truth (default: any nonzero).")
    ] = None,
    dataset: Annotated[str | None, typer.Option(help="Score on a registered dataset instead of --truth.")] = None,
    split: Annotated[str, typer.Option(help="The dataset's split: test or val.")] = "test",
    task: Annotated[str | None, typer.Option(help="The dataset's task (default: the run's).")] = None,
    results: ResultsOption = Path("results"),
    experiment: ExperimentOption = None,
    boxes: BoxesOption = None,
    device: DeviceOption = "auto",
    checkpoint: CheckpointOption = None,
    data_root: DataRootOption = None,
    plugin: PluginOption = None,
) -> None:
    """Score a run's saved model on other labelled data (a dataset split, or images with --truth masks) into a
    record beside the run's, which `bench table` shows as a row "trained on …"."""
    from bench.apply.evaluate import score_folder, score_split, write_evaluation
    from bench.compute.timing import Stopwatch
    from bench.data.dataset import dataset_plugin
    from bench.data.framing import input_files

    load_plugins(plugin)
    if (dataset is None) == (truth is None):
        raise BenchError("bench evaluate takes either --dataset (a registered dataset) or --truth (a mask folder)")
    if dataset is not None and inputs:
        raise BenchError("--dataset scores the dataset's own images: give no input files with it")
    # an unknown name or a missing folder fails here in one line
    plugin = dataset_plugin(dataset, data_root) if dataset is not None else None
    files = input_files(inputs or []) if truth is not None else []
    loaded, prompts = _prepare(run, results, experiment, device, checkpoint, data_root, boxes)
    with Progress(*_COLUMNS, console=console, transient=True) as progress, Stopwatch(loaded.ctx.device) as clock:
        if dataset is not None:
            with progress.console.status(f"loading {dataset}"):
                cases, info = score_split(loaded, dataset, split, task, plugin, ProgressBars(progress).track)
            scored_on = {"dataset": dataset, "split": split}
        else:
            cases, info = score_folder(loaded, files, truth, truth_label, prompts, ProgressBars(progress).track)
            scored_on = {"folder": str(truth.resolve()), "images": len(files)}
    name = dataset or f"folder:{truth.name}"
    task_name = task or loaded.spec.task
    path, record = write_evaluation(loaded, results, cases, name, task_name, split if dataset else "test", info,
                                    scored_on, clock.seconds, str(loaded.ctx.device), files)  # fmt: skip
    console.print(
        f"run {loaded.record['run_id']} on {name}/{task_name}: mean Dice {record['mean_dice']:.4f} over "
        f"{len(cases)} cases; record {path}",
        highlight=False, soft_wrap=True,
    )  # fmt: skip
