"""Where and in what arithmetic a run computes: device names, the device a grid's runs will use, the GPU each
pool worker or local job is pinned to, precision, determinism, and the CUDA warm-up paid before a run's
stopwatch starts.

Precision is a recorded choice, never torch's default by accident:

* ``fp32``: strict float32 everywhere (matmuls and convolutions; TF32 switched off);
* ``tf32``: float32 tensors, matmuls and convolutions on TF32 tensor cores (NVIDIA compute capability ≥ 8.0);
* ``bf16``: ``tf32`` plus autocast to bfloat16 around fit, predict and the backbone's encoder.

``auto`` is ``tf32`` on a GPU that has it and ``fp32`` elsewhere (a CPU, an older GPU). ``--deterministic``
turns on torch's deterministic algorithms (and cuBLAS's fixed workspace), so that one seed reproduces on a GPU
where atomics in bilinear-interpolation backward and cuDNN weight gradients otherwise make it drift; an
operation without a deterministic implementation then fails the run, with torch's own message.
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass

import torch

from bench.errors import BenchError

# Flush subnormal floats to zero on the CPU. Weight decay drives the weights of dead ReLU units towards zero, where
# x86 computes with subnormals up to ~100× slower: the prompt module on all 489 HC18 images went from 66 s to
# 230 s per epoch as its weights decayed (a 3×3 convolution with those weights: 1.9 s against 0.07 s flushed).
# Values below 1.2e-38 change no prediction. The switch lives in each thread's floating-point control register
# and OpenMP's worker threads copy it when they are created, so it is set here, as the harness imports torch,
# before any parallel operation has started them.
torch.set_flush_denormal(True)

PRECISIONS = ("fp32", "tf32", "bf16")
# the precision this process applied last (apply_numerics): the embedding cache and the records read it
_active = {"precision": "fp32", "deterministic": False}


@dataclass(frozen=True)
class Numerics:
    """What a grid asks for: ``precision`` (auto or one of PRECISIONS) and ``deterministic``."""

    precision: str = "auto"
    deterministic: bool = False


DEFAULT_NUMERICS = Numerics()

def check_device_name(name: str) -> torch.device | None:
    """The device ``name`` stands for, checked for its spelling only (no CUDA is touched); None for auto."""
    if name == "auto":
        return None
    try:
        device = torch.device(name)
    except RuntimeError:
        raise BenchError(f"--device takes auto, cpu or cuda[:N], not '{name}'") from None
    if device.type not in ("cpu", "cuda"):
        raise BenchError(f"--device takes auto, cpu or cuda[:N], not '{name}'")
    return device


def resolve_device(name: str = "auto") -> torch.device:
    """The device ``name`` stands for on this machine; a CUDA device that is not here fails in one line."""
    device = check_device_name(name)
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise BenchError(f"--device {name} was asked for, but CUDA is not available on this machine")
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            known = "cuda:0" if count == 1 else f"cuda:0 to cuda:{count - 1}"
            raise BenchError(f"--device {name} was asked for, but this machine has {count} CUDA device"
                             f"{'s' * (count != 1)} ({known})")  # fmt: skip
    return device


def run_device_type(name: str, executor: str, gpus_per_run: int | None) -> str:
    """``cuda`` or ``cpu``: the kind of device the runs of a grid will compute on, known without touching it.

    A SLURM job computes on the GPUs it asks for (``--slurm-gpus``), whatever the node submitting it has; every
    other executor runs on this machine, where ``auto`` is CUDA when CUDA is available.
    """
    device = check_device_name(name)
    if device is not None:
        return device.type
    if executor == "slurm":
        return "cuda" if gpus_per_run else "cpu"
    return "cuda" if torch.cuda.is_available() else "cpu"


def has_tf32(device: torch.device) -> bool:
    """Whether ``device`` computes float32 matmuls on TF32 tensor cores (NVIDIA compute capability ≥ 8.0)."""
    return device.type == "cuda" and torch.cuda.get_device_capability(device)[0] >= 8


def check_precision(precision: str) -> str:
    if precision != "auto" and precision not in PRECISIONS:
        raise BenchError(f"--precision takes auto, {', '.join(PRECISIONS)}, not '{precision}'")
    return precision


def resolve_precision(precision: str, device: torch.device) -> str:
    """The precision a run on ``device`` computes in: ``auto`` → tf32 where the device has it, else fp32.

    ``tf32`` asked for on a device without TF32 cores computes in fp32, and says so (that is what is recorded).
    """
    check_precision(precision)
    if precision == "auto":
        return "tf32" if has_tf32(device) else "fp32"
    if precision == "tf32" and not has_tf32(device):
        return "fp32"
    return precision


def expected_precision(precision: str, device_type: str, executor: str) -> str | None:
    """The precision the runs of a grid will record, as far as the parent knows it: None when it depends on a
    GPU it cannot see (a SLURM job's, asked for ``auto`` or ``tf32``)."""
    check_precision(precision)
    if precision in ("fp32", "bf16") or device_type == "cpu":
        return "fp32" if precision in ("auto", "tf32") else precision
    if executor == "slurm":
        return None
    return resolve_precision(precision, torch.device("cuda"))


def precision_changes(record: dict, expected: str | None) -> dict[str, tuple[object, object]]:
    """``{"precision": (recorded, expected)}`` when a finished record computed in another precision than the
    grid asks for (records older than the choice computed in fp32), else empty; see
    ``bench.run.current.recipe_changes``."""
    recorded = record.get("precision", "fp32")
    return {} if expected is None or recorded == expected else {"precision": (recorded, expected)}


def apply_numerics(numerics: Numerics, device: torch.device) -> str:
    """Set torch's switches for ``numerics`` in this process; returns the precision now in force."""
    precision = resolve_precision(numerics.precision, device)
    fast = precision in ("tf32", "bf16")
    torch.backends.cuda.matmul.allow_tf32 = fast
    torch.backends.cudnn.allow_tf32 = fast
    torch.set_float32_matmul_precision("high" if fast else "highest")
    if numerics.deterministic:
        # cuBLAS reproduces only with a fixed workspace; read when cuBLAS starts, so set before any matmul
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(numerics.deterministic)
    torch.backends.cudnn.deterministic = numerics.deterministic
    torch.backends.cudnn.benchmark = False  # its timing-based choice of algorithm differs from run to run
    _active.update(precision=precision, deterministic=numerics.deterministic)
    return precision


def active_precision() -> str:
    return _active["precision"]


def autocast(device: torch.device | str) -> contextlib.AbstractContextManager:
    """bfloat16 autocast on ``device`` when the precision in force is bf16; else a context that does nothing."""
    device_type = torch.device(device).type
    return torch.autocast(device_type, dtype=torch.bfloat16, enabled=_active["precision"] == "bf16")


def cache_variant(device: torch.device | str) -> str:
    """The embedding cache's folder suffix for embeddings computed on ``device`` in the precision in force.

    Empty for CPU + fp32, so the entries every cache holds today stay valid; ``-cuda-tf32`` and the like
    otherwise, so a shared cache never mixes GPU (TF32, bf16) and CPU embeddings (about 1e-3 apart).
    """
    device_type = torch.device(device).type
    precision = _active["precision"]
    return "" if (device_type, precision) == ("cpu", "fp32") else f"-{device_type}-{precision}"


def cuda_warmup(device: torch.device) -> float:
    """Start CUDA, cuBLAS and cuDNN on ``device`` outside any timed region; returns the seconds it took.

    A fresh process pays 0.5–2 s of handle creation and lazy kernel loading on its first matmul and
    convolution; paid inside ``fit`` it would count as training time. Nothing is done (0.0) off CUDA.
    """
    if device.type != "cuda":
        return 0.0
    start = time.perf_counter()
    with torch.enable_grad():
        weights = torch.randn(8, 3, 3, 3, device=device, requires_grad=True)
        images = torch.randn(2, 3, 16, 16, device=device)
        loss = torch.nn.functional.conv2d(images, weights).sum() + (images.flatten(1) @ images.flatten(1).T).sum()
        with autocast(device):
            loss = loss + (images.flatten(1) @ images.flatten(1).T).float().sum()
        loss.backward()
    torch.cuda.synchronize(device)
    return time.perf_counter() - start


def pin_gpu(visible_gpu: str | None) -> None:
    """Make ``visible_gpu`` this process's only GPU; possible only before CUDA starts in the process."""
    if visible_gpu is None:
        return
    if torch.cuda.is_initialized() and os.environ.get("CUDA_VISIBLE_DEVICES") != visible_gpu:
        raise RuntimeError(f"cannot pin this process to GPU {visible_gpu}: CUDA started in it already")
    os.environ["CUDA_VISIBLE_DEVICES"] = visible_gpu


def pool_gpus(device: str, jobs: int, single: bool = False) -> list[str | None]:
    """``CUDA_VISIBLE_DEVICES`` for each of ``jobs`` workers: round-robin over the GPUs when ``device`` is cuda
    or auto and more than one is visible (or, with ``single``, at least one), else None (the worker inherits
    the parent's GPUs)."""
    count = torch.cuda.device_count() if device in ("cuda", "auto") else 0
    if count < (1 if single else 2):
        return [None] * jobs
    inherited = os.environ.get("CUDA_VISIBLE_DEVICES")
    names = [name.strip() for name in inherited.split(",")][:count] if inherited else [str(i) for i in range(count)]
    return [names[slot % len(names)] for slot in range(jobs)]


def local_job_gpus(device: str, jobs: int) -> list[str | None]:
    """``CUDA_VISIBLE_DEVICES`` for each of ``jobs`` local submitit job slots, which submitit otherwise starts
    with no GPU at all: one GPU each, round-robin, for cuda or auto; every GPU of the parent for an explicit
    ``cuda:N`` (the user's choice of device); None (no GPU) for cpu or a machine without one."""
    count = torch.cuda.device_count() if device != "cpu" else 0
    if count == 0:
        return [None] * jobs
    if device in ("cuda", "auto"):
        return pool_gpus(device, jobs, single=True)
    inherited = os.environ.get("CUDA_VISIBLE_DEVICES")
    return [inherited or ",".join(str(index) for index in range(count))] * jobs
