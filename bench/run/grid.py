"""The expansion of CLI flags into a grid of run specs, with the reason a combination is skipped."""

from __future__ import annotations

import dataclasses
import itertools
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from bench.data.resolved import DatasetPlugins
from bench.errors import BenchError
from bench.records.spec import BUDGETS, EVAL_SPLITS, PAPER_DRAWS, PAPER_SEEDS, PlannedRun, RunSpec
from bench.registry import METHODS


def parse_shots(text: str) -> list[int | None]:
    shots: list[int | None] = []
    for part in names_in(text, "--shots"):
        if part == "all":
            shots.append(None)
            continue
        try:
            value = int(part)
        except ValueError:
            value = 0
        if value < 1:
            raise BenchError(f"--shots takes positive integers or 'all' (e.g. 1,10,all), not '{part}'")
        shots.append(value)
    return _unique(shots)


def parse_ints(text: str, flag: str, minimum: int = 0, maximum: int = 2**32 - 1) -> list[int]:
    """Comma-separated integers in [minimum, maximum] (the default maximum is the largest NumPy seed)."""
    values = []
    for part in names_in(text, flag):
        try:
            value = int(part)
        except ValueError as error:
            raise BenchError(f"{flag} takes integers ≥ {minimum} separated by commas, not '{part}'") from error
        if not minimum <= value <= maximum:
            raise BenchError(f"{flag} takes integers from {minimum} to {maximum}, not {value}")
        values.append(value)
    return _unique(values)


def parse_overrides(pairs: Sequence[str]) -> tuple[tuple[str, object], ...]:
    """``key=value`` strings; values are read as JSON where they parse (numbers, booleans), else text."""
    overrides = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise BenchError(f"--set takes key=value, not '{pair}'")
        try:
            overrides[key.strip()] = json.loads(raw)
        except json.JSONDecodeError:
            overrides[key.strip()] = raw
    return tuple(sorted(overrides.items()))


def resolve_budget(budget: str, device_type: str) -> str:
    """``auto`` is the paper budget when the runs compute on a GPU (``device_type`` cuda) and the quick one
    on a CPU; ``bench.compute.device.run_device_type`` says which, for the grid's executor."""
    if budget == "auto":
        return "paper" if device_type == "cuda" else "quick"
    if budget not in BUDGETS:
        raise BenchError(f"--budget takes auto, paper or quick, not '{budget}'")
    return budget


def check_eval_split(split: str) -> str:
    if split not in EVAL_SPLITS:
        raise BenchError(f"--eval-split takes {' or '.join(EVAL_SPLITS)}, not '{split}'")
    return split


@dataclass(frozen=True)
class GridRequest:
    """What a grid is asked to run, its options parsed: names as given, ``None`` for "the default" (every task,
    each method's own label regimes, the budget's seeds and draws). ``budget`` is auto, paper or quick; it is
    resolved (``resolve_budget``) before the grid is expanded."""

    methods: Sequence[str]
    datasets: Sequence[str]
    tasks: Sequence[str] | None = None
    shots: Sequence[int | None] = (10,)
    labels: Sequence[str] | None = None
    seeds: Sequence[int] | None = None
    draws: int | None = None
    budget: str = "quick"
    backbone: str = "litemedsam"
    checkpoint: str | None = None
    overrides: tuple[tuple[str, object], ...] = ()
    eval_split: str = "test"


def expand_grid(request: GridRequest, datasets: DatasetPlugins) -> list[PlannedRun]:
    """Every (method, dataset, task, labels, shots, draw, seed) combination, with skips and their reasons.

    ``request.seeds``/``draws`` default to the budget's protocol (paper: 3 × 3; quick: 1 × 1). All-data runs
    have a single draw; training-free methods run once per task and label regime. ``datasets``: the grid's
    plugins, which say each dataset's tasks and identity.
    """
    seed_list, draw_count = _check_request(request)
    method_classes = {name: METHODS.get(name) for name in request.methods}
    # a user's dataset given by its path is planned under its own name (``nnunet:<folder>``)
    plugins = {plugin.name: plugin for plugin in (datasets[name] for name in request.datasets)}
    _check_tasks(request, [type(plugin) for plugin in plugins.values()])
    identities = {name: plugin.identity() for name, plugin in plugins.items()}
    unknown_keys = {key for key, _ in request.overrides} - {
        f.name for cls in method_classes.values() for f in dataclasses.fields(cls.HParams)
    }
    if unknown_keys:
        raise BenchError(f"no selected method has the hyper-parameter {', '.join(sorted(unknown_keys))} (--set)")

    planned: list[PlannedRun] = []
    for method_name, method_cls in method_classes.items():
        # an override applies to the methods that have that hyper-parameter, and only keys their run ids
        own_fields = {f.name for f in dataclasses.fields(method_cls.HParams)}
        # converted to the declared types here, so a bad value fails before anything runs and `epochs=3.0`
        # keys the same run as `epochs=3`
        method_overrides = method_cls.coerce_overrides(
            (key, value) for key, value in request.overrides if key in own_fields
        )
        regimes = _unique(list(request.labels or method_cls.default_labels))
        # a training-free method does not depend on the training set: one run, whatever --shots says
        method_shots = [None] if method_cls.training_free else _unique(list(request.shots))
        uses_backbone = method_cls.uses_backbone
        for dataset_name, plugin in plugins.items():
            chosen = {plugin.task_named(task) for task in request.tasks or ()}
            dataset_tasks = [t for t in plugin.tasks if not request.tasks or t in chosen]
            for task, regime, shot in itertools.product(dataset_tasks, regimes, method_shots):
                for draw, seed in _draws_and_seeds(method_cls, shot, draw_count, seed_list):
                    spec = RunSpec(
                        method=method_name, dataset=dataset_name, task=task, labels=regime, shots=shot, draw=draw,
                        seed=seed, budget=request.budget, backbone=request.backbone if uses_backbone else None,
                        checkpoint=request.checkpoint if uses_backbone else None, overrides=method_overrides,
                        eval_split=request.eval_split, dataset_identity=identities[dataset_name],
                    )  # fmt: skip
                    # a dataset whose training images carry boxes only cannot train a mask regime
                    dataset_skip = getattr(plugin, "skip_labels", lambda _labels: None)(regime)
                    planned.append(PlannedRun(spec, method_cls.skip(spec) or dataset_skip))
    return planned


def _check_request(request: GridRequest) -> tuple[list[int], int]:
    """Fail in one line on a request no grid can be expanded from; its seeds and its draws per k."""
    from bench.data.samples import LABEL_REGIMES

    if request.budget not in BUDGETS:
        raise BenchError(f"budget must be resolved to one of {BUDGETS} before expanding a grid")
    check_eval_split(request.eval_split)
    for regime in request.labels or ():
        if regime not in LABEL_REGIMES:
            raise BenchError(f"--labels takes {', '.join(LABEL_REGIMES)}, not '{regime}'")
    seeds = _unique(list(request.seeds)) if request.seeds else list(PAPER_SEEDS if request.budget == "paper" else (0,))
    draws = request.draws if request.draws is not None else (PAPER_DRAWS if request.budget == "paper" else 1)
    if draws < 1:
        raise BenchError("--draws must be at least 1")
    return seeds, draws


def _check_tasks(request: GridRequest, dataset_classes: list[type]) -> None:
    """Fail in one line on a ``--tasks`` name none of the datasets has."""
    all_tasks = {task for cls in dataset_classes for task in cls.tasks}
    for task in request.tasks or ():
        if not any(cls.task_named(task) for cls in dataset_classes):
            from bench.registry import did_you_mean

            raise BenchError(
                f"unknown task '{task}' for {', '.join(request.datasets)}; known tasks: "
                f"{', '.join(sorted(all_tasks))}.{did_you_mean(task, sorted(all_tasks))}"
            )


def _draws_and_seeds(
    method_cls: type, shot: int | None, draw_count: int, seeds: list[int]
) -> Iterable[tuple[int, int]]:
    if method_cls.training_free:
        return [(0, 0)]
    draw_range = [0] if shot is None else list(range(draw_count))
    return [(draw, seed) for draw in draw_range for seed in seeds]


def split_list(text: str) -> list[str]:
    return [part.strip() for part in str(text).split(",") if part.strip()]


def names_in(text: str, flag: str) -> list[str]:
    """``split_list`` of a flag the user gave: an empty value is a mistake, not "use the default"."""
    parts = split_list(text)
    if not parts:
        raise BenchError(f"{flag} was given an empty value")
    return parts


def _unique(values: list) -> list:
    return list(dict.fromkeys(values))

