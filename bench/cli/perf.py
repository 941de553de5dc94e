"""`bench perf`: the speed and memory suite, and its single benchmarks."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from bench.cli.common import DataRootOption, ProgressBars, console, perf_app, user_errors
from bench.errors import BenchError
from bench.registry import BACKBONES, DATASETS

TINY_MATMUL = 512  # the matmul rate's matrix side in tiny mode: a fraction of a second

DatasetOption = Annotated[str | None, typer.Option(help="Default: hc18 when the data root holds it, else synthetic.")]
TaskOption = Annotated[str | None, typer.Option(help="Default: hc18's head, synthetic's ellipse, else the first.")]
BackboneOption = Annotated[
    str | None, typer.Option(help="SAM-family backbone; default litemedsam (tiny-sam-test with --tiny).")
]
CheckpointOption = Annotated[Path | None, typer.Option(help="Checkpoint file for ViT backbones.")]


@perf_app.callback(invoke_without_command=True)
@user_errors
def perf_suite(
    context: typer.Context,
    out: Annotated[Path, typer.Option(help="The Markdown report to write.")] = Path("results/perf.md"),
    data_root: DataRootOption = None,
    dataset: DatasetOption = None,
    task: TaskOption = None,
    shots: Annotated[int, typer.Option(min=1, help="Training images of every run.")] = 10,
    epochs: Annotated[int, typer.Option(min=1, help="Epochs of every trained method (quick budget otherwise).")] = 5,
    backbone: BackboneOption = None,
    checkpoint: CheckpointOption = None,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda[:N].")] = "auto",
    tiny: Annotated[
        bool, typer.Option("--tiny", help="Tests: random tiny backbone, tiny inputs; every section in seconds.")
    ] = False,
) -> None:
    """Speed and memory benchmarks; without a command, the whole suite in one Markdown report.

    The suite: encoding throughput, a cold vs a warm embedding cache, fit time per method, tightness-loss memory,
    peak memory per method and the roofline, written to --out; about 10 minutes on a 2-core CPU.
    """
    if context.invoked_subcommand is not None:
        return
    from bench.perf.report import render_report
    from bench.perf.suite import SECTIONS, check_inputs, run_suite, suite_datasets

    settings = _suite_settings(out, data_root, dataset, task, shots, epochs, backbone, checkpoint, device, tiny)
    _check_report_path(out)
    # before the progress display, so that a bad data root, checkpoint or --shots ends in one line and nothing else
    with console.status(f"loading {settings.dataset}/{settings.task} and backbone {settings.backbone}"):
        datasets = suite_datasets(settings)
        check_inputs(settings, datasets)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=False) as progress:
        sections = progress.add_task("perf", total=len(SECTIONS))

        def on_section(number: int, title: str) -> None:
            progress.update(sections, completed=number - 1, description=f"{number}. {title}")

        result = run_suite(settings, datasets, ProgressBars(progress).for_run, on_section)
        progress.update(sections, completed=len(SECTIONS), description="perf")
    from bench.paths import atomic_write

    with atomic_write(out, "w") as stream:
        stream.write(render_report(result))
    for name, seconds in result.section_seconds.items():
        console.print(f"  {name}: {seconds:.1f} s", highlight=False)
    console.print(f"wrote {out}", highlight=False)


def _suite_settings(
    out: Path, data_root: Path | None, dataset: str | None, task: str | None, shots: int, epochs: int,
    backbone: str | None, checkpoint: Path | None, device: str, tiny: bool,
):  # fmt: skip
    """The suite's settings from the options, every name checked; the command line that reproduces them."""
    import shlex

    from bench.perf.suite import SuiteSettings
    from bench.run.runner import resolve_device

    root, dataset, task = _data_choice(data_root, dataset, task)
    backbone = _backbone_choice(backbone, tiny)
    resolved_device = str(resolve_device(device))
    words = ["bench", "perf", "--out", str(out), "--dataset", dataset, "--task", task]
    if DATASETS.get(dataset).needs_data_root:
        words += ["--data-root", str(root)]
    words += ["--shots", str(shots), "--epochs", str(epochs), "--backbone", backbone]
    words += ["--checkpoint", str(checkpoint)] if checkpoint else []
    words += ["--device", resolved_device] + (["--tiny"] if tiny else [])
    sizes = {"encode_images": 2, "encode_repeats": 1, "loss_size": 40, "loss_batch": 2, "loss_repeats": 1,
             "matmul_size": TINY_MATMUL, "matmul_repeats": 1, "roofline_budgets": ("quick",), "roofline_shots": 1}
    return SuiteSettings(
        dataset=dataset, task=task, data_root=root, shots=shots, epochs=epochs, backbone=backbone,
        checkpoint=checkpoint, device=resolved_device, tiny=tiny, command=shlex.join(words),
        **(sizes if tiny else {}),
    )  # fmt: skip


def _data_choice(data_root: Path | None, dataset: str | None, task: str | None) -> tuple[Path, str, str]:
    """The resolved data root, the dataset (HC18 when the root holds it, else synthetic) and its task, checked."""
    from bench.paths import default_data_root
    from bench.perf.suite import default_dataset

    root = (data_root or default_data_root()).expanduser().resolve()
    if dataset is None:
        dataset, default_task = default_dataset(root)
        task = task or default_task
    tasks = DATASETS.get(dataset).tasks  # an unknown name fails here with the did-you-mean line
    task = task or tasks[0]
    if task not in tasks:
        raise BenchError(f"dataset '{dataset}' has no task '{task}'; its tasks are {', '.join(tasks)}")
    return root, dataset, task


def _backbone_choice(backbone: str | None, tiny: bool) -> str:
    backbone = backbone or ("tiny-sam-test" if tiny else "litemedsam")
    BACKBONES.get(backbone)  # an unknown name fails here with the did-you-mean line
    return backbone


def _check_report_path(out: Path) -> None:
    """Fail before minutes of measuring, not after, when the report could not be written."""
    if out.is_dir():
        raise BenchError(f"--out '{out}' is a folder; name the report file, e.g. {out / 'perf.md'}")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out.parent, prefix=".write-test-"):
            pass
    except OSError as error:
        raise BenchError(f"cannot write the report '{out}' ({error.strerror}); choose another with --out") from error


def _perf_backbone(backbone: str, checkpoint: Path | None, device: str):
    from bench.run.runner import resolve_device
    from bench.sam.backbones import load_backbone

    return load_backbone(backbone, checkpoint, resolve_device(device))


@perf_app.command("encode")
@user_errors
def perf_encode(
    backbone: Annotated[str, typer.Option(help="Backbone to time.")] = "litemedsam",
    checkpoint: Annotated[Path | None, typer.Option(help="Checkpoint file for ViT backbones.")] = None,
    images: Annotated[int, typer.Option(min=1, help="Images encoded per repeat.")] = 16,
    size: Annotated[int, typer.Option(min=8, help="Side of the square test images (HC18: 640).")] = 640,
    batch_size: Annotated[int | None, typer.Option(min=1, help="Default: the backbone's.")] = None,
    repeats: Annotated[int, typer.Option(min=1, help="Alternating repeats; the median is reported.")] = 3,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda[:N].")] = "auto",
) -> None:
    """Images/s of the harness's encoding path vs a bare image_encoder forward on the same batches."""
    from bench.perf.encode import encode_benchmark

    model = _perf_backbone(backbone, checkpoint, device)
    result = encode_benchmark(model, images, (size, size), batch_size, repeats)
    console.print("\n".join(result.lines()), highlight=False)


@perf_app.command("decode")
@user_errors
def perf_decode(
    backbone: Annotated[str, typer.Option(help="Backbone to time.")] = "litemedsam",
    checkpoint: Annotated[Path | None, typer.Option(help="Checkpoint file for ViT backbones.")] = None,
    images: Annotated[int, typer.Option(min=1, help="Images (one box each) per repeat.")] = 16,
    repeats: Annotated[int, typer.Option(min=1, help="Alternating repeats; the median is reported.")] = 3,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda[:N].")] = "auto",
) -> None:
    """Images/s of batched mask decoding (one box per image) vs decoding the images one at a time."""
    from bench.perf.decode import decode_benchmark

    result = decode_benchmark(_perf_backbone(backbone, checkpoint, device), images, repeats)
    console.print("\n".join(result.lines()), highlight=False)


@perf_app.command("predict")
@user_errors
def perf_predict(
    backbone: Annotated[str, typer.Option(help="Backbone to time.")] = "litemedsam",
    checkpoint: Annotated[Path | None, typer.Option(help="Checkpoint file for ViT backbones.")] = None,
    images: Annotated[int, typer.Option(min=1, help="PNG images (HC18's 800×540) predicted per repeat.")] = 8,
    repeats: Annotated[int, typer.Option(min=1, help="Alternating repeats; the median is reported.")] = 3,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda[:N].")] = "auto",
) -> None:
    """Images/s of the `bench predict` path (files in, masks out) vs the bare encoder + decoder forward."""
    from bench.perf.predict import predict_benchmark

    model = _perf_backbone(backbone, checkpoint, device)
    resolved = checkpoint.expanduser().resolve() if checkpoint else None
    result = predict_benchmark(model, resolved, images, repeats=repeats)
    console.print("\n".join(result.lines()), highlight=False)


@perf_app.command("loss")
@user_errors
def perf_loss(
    size: Annotated[int, typer.Option(min=2, help="Side of the square probability maps (HC18: 640).")] = 640,
    batch: Annotated[int, typer.Option(min=1, help="Maps per batch (the paper's batch: 4).")] = 4,
    box_fraction: Annotated[float, typer.Option(help="Side of the centred square box, as a fraction.")] = 0.6,
    repeats: Annotated[int, typer.Option(min=1, help="Timed repeats; the median is reported.")] = 5,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda[:N].")] = "cpu",
) -> None:
    """Peak memory and time of the tightness prior: row/column sums vs one full-size mask per band."""
    from bench.perf.loss import tightness_benchmark

    result = tightness_benchmark(size, batch, box_fraction, repeats, device)
    console.print("\n".join(result.lines()), highlight=False)



@perf_app.command("roofline")
@user_errors
def perf_roofline(
    only: Annotated[
        list[str] | None,
        typer.Option(help="A hot path to measure: encoder or a trained method (repeat the flag); default all."),
    ] = None,
    budget: Annotated[
        list[str] | None, typer.Option(help="The training steps' budget: paper or quick (repeat); default both.")
    ] = None,
    data_root: DataRootOption = None,
    dataset: DatasetOption = None,
    task: TaskOption = None,
    shots: Annotated[int, typer.Option(min=1, help="Support images of every training step.")] = 10,
    images: Annotated[int, typer.Option(min=1, help="Random images the encoder forwards per repeat.")] = 4,
    repeats: Annotated[int, typer.Option(min=1, help="Encoder repeats; the median is reported.")] = 3,
    batch_size: Annotated[int | None, typer.Option(min=1, help="Encoder batch; default: the backbone's.")] = None,
    backbone: BackboneOption = None,
    checkpoint: CheckpointOption = None,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda[:N].")] = "auto",
    precision: Annotated[
        str, typer.Option(help="auto, fp32, tf32 or bf16: the paths and the ceiling compute in it (docs/gpu.md).")
    ] = "auto",
    tiny: Annotated[bool, typer.Option("--tiny", help="Tests: random tiny backbone, tiny inputs, in seconds.")] = False,
) -> None:
    """Counted FLOPs per image and achieved GFLOP/s of the encoder and of each trained method's training step,
    against this machine's matmul rate in the same precision (section 6 of the suite)."""
    from bench.compute.device import check_precision
    from bench.data.resolved import DatasetPlugins
    from bench.perf.roofline import MATMUL_SIZE, RooflineSettings, check_roofline_inputs, hot_paths, measure_roofline
    from bench.perf.suite import scratch_cache
    from bench.records.spec import BUDGETS
    from bench.run.runner import resolve_device

    root, dataset, task = _data_choice(data_root, dataset, task)
    for name in budget or ():
        if name not in BUDGETS:
            raise BenchError(f"--budget takes {' or '.join(BUDGETS)}, not '{name}'")
    settings = RooflineSettings(
        backbone=_backbone_choice(backbone, tiny), checkpoint=checkpoint, device=str(resolve_device(device)),
        dataset=dataset, task=task, data_root=root, shots=shots, tiny=tiny, paths=hot_paths(only),
        budgets=tuple(dict.fromkeys(budget or BUDGETS)), encoder_images=images, encoder_repeats=repeats,
        encoder_batch=batch_size, matmul_size=TINY_MATMUL if tiny else MATMUL_SIZE, matmul_repeats=1 if tiny else 5,
        precision=check_precision(precision),
    )  # fmt: skip
    datasets = DatasetPlugins(settings.data_root)
    with console.status(f"loading backbone {settings.backbone} and checking {', '.join(settings.paths)}"):
        check_roofline_inputs(settings, datasets)
    with console.status("measuring: matmul rate, then " + ", ".join(settings.paths)), scratch_cache():
        roofline = measure_roofline(settings, datasets)
    console.print("\n".join(roofline.lines()), highlight=False, soft_wrap=True)


@perf_app.command("scoring")
@user_errors
def perf_scoring(
    cases: Annotated[int, typer.Option(min=1, help="Cases scored per pass (an ACDC task's test split: 470).")] = 470,
    size: Annotated[int, typer.Option(min=16, help="Side of the square slices (ACDC's: 256; HC18's: 640).")] = 256,
    repeats: Annotated[int, typer.Option(min=1, help="Interleaved passes of each; the median is reported.")] = 3,
) -> None:
    """Seconds to score a run's test cases: HD95 on the masks' window vs the whole image, in this process."""
    from bench.perf.scoring import scoring_benchmark

    with console.status(f"scoring {cases} cases {repeats} times each way"):
        result = scoring_benchmark(cases, size, repeats)
    console.print("\n".join(result.lines()), highlight=False)


@perf_app.command("gpu-check")
@user_errors
def perf_gpu_check(
    methods: Annotated[str, typer.Option(help="Comma-separated method names, or 'all'.")] = "all",
    dataset: Annotated[str, typer.Option(help="Dataset of the runs.")] = "synthetic",
    task: Annotated[str | None, typer.Option(help="Task; default: the dataset's first.")] = None,
    data_root: DataRootOption = None,
    budget: Annotated[str, typer.Option(help="paper or quick.")] = "paper",
    shots: Annotated[int, typer.Option(min=1, help="Training images of each trained run.")] = 10,
    backbone: Annotated[str, typer.Option(help="SAM-family backbone for SAM-based methods.")] = "litemedsam",
    checkpoint: CheckpointOption = None,
    device: Annotated[str, typer.Option(help="cuda[:N] (or cpu, to try the check itself on a CPU).")] = "cuda",
    precision: Annotated[str, typer.Option(help="auto, fp32, tf32 or bf16 (docs/gpu.md).")] = "auto",
    deterministic: Annotated[bool, typer.Option("--deterministic", help="Torch's deterministic algorithms.")] = False,
    set_: Annotated[list[str] | None, typer.Option("--set", help="Hyper-parameter override key=value.")] = None,
    results: Annotated[
        Path | None, typer.Option(help="Keep the records in <results>/gpu-check (default: a temporary folder).")
    ] = None,
) -> None:
    """One run of every method on the GPU: fit s/epoch, CUDA warm-up, peak memory and Dice, in a few minutes."""
    from rich.table import Table

    from bench.compute.device import Numerics, check_precision
    from bench.perf.gpu_check import GpuCheckSettings, all_methods, check_device, row, run_gpu_check
    from bench.run import grid

    settings = GpuCheckSettings(
        methods=all_methods() if methods.strip() == "all" else tuple(grid.names_in(methods, "--methods")),
        dataset=dataset, task=task, data_root=data_root, budget=grid.resolve_budget(budget, "cuda"), shots=shots,
        backbone=backbone, checkpoint=checkpoint, device=check_device(device),
        numerics=Numerics(check_precision(precision), deterministic),
        overrides=grid.parse_overrides(set_ or []),
    )  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="bench-gpu-check-") as scratch:
        folder = Path(results) if results is not None else Path(scratch)
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
        with Progress(*columns, console=console, transient=True) as progress:
            records = run_gpu_check(settings, folder, ProgressBars(progress).for_run)
    table = Table(title=f"gpu-check on {records[0].get('device', settings.device)}, budget {settings.budget}")
    rows = [row(record) for record in records]
    for column in rows[0]:
        table.add_column(column)
    for values in rows:
        table.add_row(*values.values())
    console.print(table)
    if any(record["status"] != "ok" for record in records):
        raise typer.Exit(1)
