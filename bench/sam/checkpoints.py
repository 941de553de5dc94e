"""Reading a checkpoint file into a model: ``weights_only`` loading, and user errors in one line each."""

from __future__ import annotations

import hashlib
import warnings
from pathlib import Path
from typing import Any

import torch

from bench.errors import BenchError


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a checkpoint file, loaded with ``weights_only=True``; user errors in one line."""
    if not path.is_file():
        raise BenchError(f"checkpoint '{path}' does not exist")
    try:
        # torch warns about a plain pickle's protocol before failing on it: the user sees our line only
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            payload: Any = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # the file is the user's: whatever unpickling fails with, say so in one line
        raise BenchError(
            f"'{path}' is not a PyTorch checkpoint that loads with weights_only=True ({type(error).__name__})"
        ) from error
    for wrapper in ("model", "state_dict"):  # training scripts often save {"model": state_dict, ...}
        if isinstance(payload, dict) and isinstance(payload.get(wrapper), dict):
            payload = payload[wrapper]
    if not isinstance(payload, dict) or not all(isinstance(v, torch.Tensor) for v in payload.values()):
        raise BenchError(f"'{path}' holds no state dict (a mapping of parameter names to tensors)")
    return payload


def load_weights(
    model: torch.nn.Module, state: dict[str, torch.Tensor], path: Path, architecture: str
) -> None:
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    misshapen = sorted(k for k in set(expected) & set(state) if expected[k].shape != state[k].shape)
    if missing or unexpected or misshapen:
        example = (misshapen or missing or unexpected)[0]
        raise BenchError(
            f"'{path}' is not a {architecture} state dict ({len(misshapen)} tensors of the wrong shape, "
            f"{len(missing)} missing, {len(unexpected)} unexpected; e.g. '{example}')"
        )
    model.load_state_dict(state)


def file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        while chunk := stream.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()
