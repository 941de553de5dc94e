"""`bench train`: one method trained on a dataset's labelled training images and saved, for `bench predict`.

It is one run of `bench run` (the same spec and run id as `bench run --shots all`, or `--shots k --draws` for
a support draw), with its model saved: a dataset with no test split (ten images with boxes) trains and scores
nothing, one with a test split with masks is scored as `bench run` scores it.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from bench.cli import run_options as options
from bench.cli.common import DataRootOption, PluginOption, ProgressBars, app, console, load_plugins, user_errors
from bench.errors import BenchError

if TYPE_CHECKING:
    from bench.records.spec import PlannedRun, RunSpec
    from bench.run.settings import GridSettings


@app.command()
@user_errors
def train(
    method: Annotated[str, typer.Argument(help="The method to train, e.g. prompt-module.")],
    dataset: Annotated[str, typer.Argument(help="folder:<folder>, nnunet:<folder>, a path, or a dataset name.")],
    task: Annotated[str | None, typer.Option(help="The structure (default: the dataset's only one).")] = None,
    labels: Annotated[str | None, typer.Option(help="mask, box or box-noisy (default: the method's own).")] = None,
    shots: Annotated[str, typer.Option(help="'all' training images, or k of them (a support draw).")] = "all",
    draw: Annotated[int, typer.Option(help="Which support draw of k images (with --shots k).")] = 0,
    seed: Annotated[int, typer.Option(help="The model-initialisation seed.")] = 0,
    budget: Annotated[str, typer.Option(help="auto (paper on a GPU, else quick), paper or quick.")] = "auto",
    backbone: options.Backbone = "litemedsam",
    checkpoint: options.Checkpoint = None,
    set_: options.Overrides = None,
    data_root: DataRootOption = None,
    results: options.Results = Path("results"),
    experiment: Annotated[str, typer.Option(help="Subfolder of --results for the record and model.")] = "trained",
    device: options.Device = "auto",
    plugin: PluginOption = None,
) -> None:
    """Train one method on the labelled training images of a dataset (boxes from a box file count) and save its
    model; no test split needed. Then `bench predict <run id> IMAGES --output MASKS`."""
    from bench.cli.common import check_writable
    from bench.compute.device import run_device_type
    from bench.data.dataset import locate_datasets
    from bench.data.resolved import DatasetPlugins
    from bench.records import store
    from bench.registry import BACKBONES, METHODS
    from bench.run import grid
    from bench.run.executors import parent_device
    from bench.run.runner import run_claimed
    from bench.run.saved_models import lacks_saved_model
    from bench.run.settings import GridSettings

    load_plugins(plugin)
    if METHODS.get(method).uses_backbone:
        BACKBONES.get(backbone)
    (name,), data_root = locate_datasets([dataset], data_root)
    datasets = DatasetPlugins.resolve([name], data_root)
    if task is None and len(datasets[name].tasks) != 1:
        raise BenchError(f"{name} has the structures {', '.join(datasets[name].tasks)}: name one with --task")
    parsed_shots = grid.parse_shots(shots)
    if len(parsed_shots) != 1:
        raise BenchError(f"bench train trains one configuration: --shots takes one value, not '{shots}'")
    checked_device = parent_device(device, "inline")
    request = grid.GridRequest(
        methods=[method], datasets=[name], tasks=[task] if task else None, shots=parsed_shots,
        labels=[labels] if labels else None, seeds=[seed], draws=draw + 1,
        budget=grid.resolve_budget(budget, run_device_type(device, "inline", None)), backbone=backbone,
        checkpoint=str(checkpoint.resolve()) if checkpoint else None, overrides=grid.parse_overrides(set_ or []),
    )  # fmt: skip
    spec = _one_run(grid.expand_grid(request, datasets), method, name, draw if parsed_shots[0] is not None else 0)
    loaded = datasets.task(spec.dataset, spec.task)  # bad data fails here, before anything is written
    settings = GridSettings(results, experiment, datasets, str(checked_device), save_models=True)
    record = store.existing_record(results, experiment, spec.run_id)
    if record and record.get("status") == "ok" and not lacks_saved_model(record):
        console.print(f"{spec.run_id} is trained already; its record is in {store.runs_folder(results, experiment)}",
                      highlight=False, soft_wrap=True)  # fmt: skip
        return
    check_writable(store.runs_folder(results, experiment), results)
    console.print(f"training {method} ({spec.budget}) on {spec.shots_label} of {len(loaded.train)} training images of "
                  f"{name}/{spec.task}, {spec.labels} labels", highlight=False, soft_wrap=True)  # fmt: skip
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console) as progress:
        summary = run_claimed(spec, settings, progress=ProgressBars(progress).track)
    if summary["status"] != "ok":
        console.print(f"[red]failed[/red]: {summary.get('error') or summary.get('holder')}", highlight=False)
        raise typer.Exit(1)
    _print_trained(spec, settings)


def _one_run(planned: list[PlannedRun], method: str, dataset: str, draw: int) -> RunSpec:
    """The one run of the planned ones that is support draw ``draw``; a BenchError when there are several (label
    regimes) or it is skipped."""
    chosen = [item for item in planned if item.spec.draw == draw]
    if len(chosen) != 1:
        raise BenchError(f"{method} runs under {len(chosen)} label regimes here: choose one with --labels")
    if chosen[0].skip_reason:
        raise BenchError(f"{method} cannot train on {dataset} as asked: {chosen[0].skip_reason}")
    return chosen[0].spec


def _print_trained(spec: RunSpec, settings: GridSettings) -> None:
    """What the trained run's record says: its id, time, training images, score and model file."""
    from bench.records import store

    results, experiment = settings.results, settings.experiment
    record = store.existing_record(results, experiment, spec.run_id) or {}
    scored = (f"mean Dice {record['mean_dice']:.4f} on its {len(record['cases'])} test images"
              if record.get("cases") else "no test images with masks: nothing scored")  # fmt: skip
    saved = record.get("saved_model")
    model = (f"model {store.experiment_folder(results, experiment) / saved['file']}" if saved
             else "nothing to save (training-free: it predicts as it is)")  # fmt: skip
    console.print(
        f"trained run {spec.run_id} in {record.get('fit_seconds', 0):.0f} s on {record['trained_on']['images']} "
        f"images ({record['trained_on']['drawn_boxes']} drawn boxes); {scored}; {model}",
        highlight=False, soft_wrap=True,
    )  # fmt: skip
