"""The options of `bench run` (and those `bench train` shares with it), one type each, so that a command's
signature reads as its list of options."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

Methods = Annotated[str, typer.Option(help="Comma-separated method names, or 'all'.")]
Datasets = Annotated[
    str,
    typer.Option(
        help="Comma-separated dataset names; own data: nnunet:<folder>, folder:<folder> or a path. Default: "
        "the HC18 subset shipped with the package ($BENCH_DATASETS overrides it; the test suite sets synthetic).",
        envvar="BENCH_DATASETS", show_envvar=False,
    ),
]
Tasks = Annotated[str | None, typer.Option(help="Tasks (structures, any case); default: every task.")]
Shots = Annotated[str, typer.Option(help="Training images per run: integers and/or 'all'.")]
Labels = Annotated[str | None, typer.Option(help="mask, box, box-noisy; default: each method's own regimes.")]
Seeds = Annotated[str | None, typer.Option(help="Init seeds; default: the budget's (paper 0,1,2).")]
Draws = Annotated[int | None, typer.Option(help="Support draws per k; default: the budget's (paper 3).")]
Budget = Annotated[
    str, typer.Option(help="auto (paper when the runs compute on a GPU, else quick), paper or quick.")
]
EvalSplit = Annotated[
    str, typer.Option(help="Split the runs are scored on: test, or val for model development and tuning.")
]
Backbone = Annotated[str, typer.Option(help="SAM-family backbone for SAM-based methods.")]
Checkpoint = Annotated[Path | None, typer.Option(help="Checkpoint file for ViT backbones.")]
DataRoot = Annotated[Path | None, typer.Option(help="Folder holding the dataset releases.")]
Results = Annotated[Path, typer.Option(help="Folder of experiments and their records.")]
Experiment = Annotated[str, typer.Option(help="Subfolder of --results for this grid.")]
Overrides = Annotated[list[str] | None, typer.Option("--set", help="Hyper-parameter override key=value.")]
Device = Annotated[str, typer.Option(help="auto, cpu or cuda[:N].")]
Precision = Annotated[
    str, typer.Option(help="auto (tf32 on GPUs that have it, else fp32), fp32, tf32 or bf16 (docs/gpu.md).")
]
Deterministic = Annotated[
    bool, typer.Option("--deterministic", help="Torch's deterministic algorithms: a seed reproduces on a GPU.")
]
Executor = Annotated[str, typer.Option(help="inline, pool, submitit (local) or slurm.")]
Jobs = Annotated[int, typer.Option(help="Parallel runs: pool workers, or the SLURM array parallelism.")]
Detach = Annotated[
    bool, typer.Option("--detach", help="submitit/slurm: submit and return; re-run or `bench status` collects.")
]
SlurmPartition = Annotated[str | None, typer.Option(help="SLURM partition.")]
SlurmTime = Annotated[int, typer.Option(help="Time limit per run in minutes (slurm, submitit).")]
SlurmGpus = Annotated[int | None, typer.Option(help="GPUs per run (slurm).")]
SlurmCpus = Annotated[int | None, typer.Option(help="CPUs per run (slurm).")]
SlurmMemGb = Annotated[float | None, typer.Option(help="Memory per run in GB (slurm).")]
SlurmAccount = Annotated[str | None, typer.Option(help="SLURM account.")]
SlurmQos = Annotated[str | None, typer.Option(help="SLURM QOS.")]
SlurmArrayParallelism = Annotated[int | None, typer.Option(help="Array tasks running at once (default: --jobs).")]
SlurmArgs = Annotated[
    list[str] | None,
    typer.Option("--slurm-arg", help="Other submitit/sbatch option key=value, e.g. constraint=a100."),
]
DryRun = Annotated[bool, typer.Option("--dry-run", help="Print the plan and run nothing.")]
StopAfter = Annotated[
    str | None,
    typer.Option(help="Start no run once this much time (e.g. 8m, 1h30m) has passed since the command began "
                 "(inline, pool); run the command again to go on."),
]
SaveModels = Annotated[
    bool, typer.Option("--save-models", help="Keep what each run trained in <experiment>/models/ (see predict).")
]
