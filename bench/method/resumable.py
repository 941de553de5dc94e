"""Fits that outlive their process: a trained method's epoch loop saved every few minutes, and when the grid's
``--stop-after`` time has passed, then picked up at the next epoch by the next command that runs the run.

A fit of hours on a CPU, or one longer than the slices of GPU time it gets, then finishes over several commands
(or SLURM jobs) with nothing lost but the epochs after the last save. Resuming gives the fit an uninterrupted one
would have computed: the trainable modules, optimiser and schedule, the method's own generators and the global
random states (dropout, augmentation) are saved together at an epoch's end. The record's ``fit_seconds`` is the sum
over the slices, and ``fit_slices`` says which code and device ran which epochs.
"""

from __future__ import annotations

import datetime as dt
import random
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench.compute.timing import Deadline, synchronize
from bench.paths import atomic_write

# how often a running fit is saved: at most this much work is lost to a killed process (SLURM's time limit, a
# machine going away); a save costs a state dict written to disk
CHECKPOINT_SECONDS = 600.0


class FitPaused(Exception):  # noqa: N818 (not an error: the fit stopped where the grid's time slice ended)
    """The fit stopped after ``epochs_done`` of ``epochs`` because the grid's ``--stop-after`` time has passed;
    its state is saved and the next command that runs the run goes on from there."""

    def __init__(self, epochs_done: int, epochs: int) -> None:
        super().__init__(f"paused after epoch {epochs_done} of {epochs}")
        self.epochs_done = epochs_done
        self.epochs = epochs


@dataclass
class FitCheckpoint:
    """Where one run's fit is saved, and when: every ``every_seconds`` and once ``deadline`` has passed.

    ``identity`` (the resolved hyper-parameters, the precision) must equal the saved one for a fit to be picked up:
    a changed recipe starts again. ``slice_info`` (code revision, device) goes into each slice of ``fit_slices``.
    The runner sets ``fit_started`` as its fit stopwatch starts, so that a slice's seconds are the stopwatch's.
    """

    path: Path
    identity: dict
    slice_info: dict
    deadline: Deadline = field(default_factory=Deadline)
    every_seconds: float = CHECKPOINT_SECONDS
    fit_started: float = field(default_factory=time.perf_counter)
    device: torch.device | str = "cpu"
    earlier_slices: list[dict] = field(default_factory=list)  # read from the saved fit
    _first_epoch: int = 0  # of this slice
    _epochs_done: int = 0

    @property
    def earlier_seconds(self) -> float:
        return sum(part["seconds"] for part in self.earlier_slices)

    def slices(self, seconds: float) -> list[dict]:
        """Every slice of the fit, this one (``seconds`` long so far) last, as the record's ``fit_slices`` has them."""
        this = {"epochs": [self._first_epoch, self._epochs_done], "seconds": seconds, **self.slice_info,
                "ended": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}  # fmt: skip
        return [*self.earlier_slices, this]

    def epochs(self, count: int, state: dict[str, Any], training_log: list[dict], progress: Callable,
               description: str) -> Iterator[int]:  # fmt: skip
        """``range(count)`` from the first epoch not saved yet, saving ``state`` and ``training_log`` as it goes.

        ``state`` names what the fit changes: objects with ``state_dict``/``load_state_dict`` (modules, optimisers,
        schedules) and ``torch.Generator``s. Raises ``FitPaused`` at an epoch's end once the deadline has passed.
        """
        self._first_epoch = self._epochs_done = self._resume(count, state, training_log)
        last_save = time.monotonic()
        shown = description if self._first_epoch == 0 else f"{description} (from {self._first_epoch + 1})"
        for epoch in progress(range(self._first_epoch, count), description=shown):
            yield epoch
            self._epochs_done = epoch + 1
            if self._epochs_done == count:
                return
            if self.deadline.passed():
                self._save(count, state, training_log)
                raise FitPaused(self._epochs_done, count)
            if time.monotonic() - last_save >= self.every_seconds:
                self._save(count, state, training_log)
                last_save = time.monotonic()

    def _save(self, count: int, state: dict[str, Any], training_log: list[dict]) -> None:
        synchronize(self.device)  # the slice's seconds end with the work queued on the device
        seconds = time.perf_counter() - self.fit_started
        saved = {
            "identity": self.identity, "epochs_done": self._epochs_done, "epochs": count,
            "training_log": training_log, "slices": self.slices(seconds),
            "state": {name: _state_of(item) for name, item in state.items()}, "random": _random_states(self.device),
        }  # fmt: skip
        with atomic_write(self.path) as stream:
            torch.save(saved, stream)

    def _resume(self, count: int, state: dict[str, Any], training_log: list[dict]) -> int:
        """Load the saved fit into ``state`` and ``training_log``; the first epoch to run (0: nothing saved)."""
        if not self.path.exists():
            return 0
        try:
            saved = torch.load(self.path, map_location="cpu", weights_only=True)
        except Exception as error:  # never half-written (atomic_write), but perhaps from another torch
            warnings.warn(f"the saved fit {self.path} cannot be read ({error}); training from the start", stacklevel=2)
            return 0
        if saved["identity"] != self.identity or saved["epochs"] != count or set(saved["state"]) != set(state):
            warnings.warn(f"the saved fit {self.path.name} was made with other settings; training from the start",
                          stacklevel=2)  # fmt: skip
            return 0
        for name, item in state.items():
            _load_state(item, saved["state"][name], self.device)
        _restore_random_states(saved["random"], self.device)
        training_log[:] = saved["training_log"]
        self.earlier_slices = saved["slices"]
        return saved["epochs_done"]


def _state_of(item: Any) -> Any:
    return item.get_state() if isinstance(item, torch.Generator) else item.state_dict()


def _load_state(item: Any, saved: Any, device: torch.device | str) -> None:
    if isinstance(item, torch.Generator):
        item.set_state(saved)
    elif isinstance(item, torch.optim.Optimizer):
        item.load_state_dict(saved)  # its tensors follow its parameters' device
    elif isinstance(item, torch.nn.Module):
        item.load_state_dict({key: value.to(device) for key, value in saved.items()})
    else:
        item.load_state_dict(saved)


def _random_states(device: torch.device | str) -> dict:
    """The global generators' states as tensors and lists (``torch.load`` reads them with ``weights_only``)."""
    kind, keys, position, has_gauss, gauss = np.random.get_state()
    python_version, python_state, python_gauss = random.getstate()
    states = {
        "torch": torch.get_rng_state(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "position": position,
                  "has_gauss": has_gauss, "gauss": gauss},
        "python": {"version": python_version, "state": list(python_state), "gauss": python_gauss},
    }  # fmt: skip
    if torch.device(device).type == "cuda":
        states["cuda"] = torch.cuda.get_rng_state(torch.device(device))
    return states


def _restore_random_states(states: dict, device: torch.device | str) -> None:
    torch.set_rng_state(states["torch"])
    numpy = states["numpy"]
    keys = numpy["keys"].numpy().astype(np.uint32)
    np.random.set_state((numpy["kind"], keys, numpy["position"], numpy["has_gauss"], numpy["gauss"]))
    python = states["python"]
    random.setstate((python["version"], tuple(python["state"]), python["gauss"]))
    if "cuda" in states and torch.device(device).type == "cuda":
        torch.cuda.set_rng_state(states["cuda"], torch.device(device))
