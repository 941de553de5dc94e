"""Whether a finished record still stands for its run as a grid would run it now: the one rule that both the
planning of a grid (what is left to run) and a worker about to run a run (finished elsewhere meanwhile?) apply.

A record's run id holds only the ``--set`` overrides, so a record can match a run id yet be of another recipe:
made before a method's defaults changed, or in another precision. Such a record is outdated, and so is a
trained run without its saved model when the grid keeps models (``--save-models``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from bench.compute.device import precision_changes
from bench.records.spec import RunSpec
from bench.registry import METHODS
from bench.run.saved_models import lacks_saved_model

if TYPE_CHECKING:
    from bench.run.settings import GridSettings


def is_current(record: dict | None, spec: RunSpec, settings: GridSettings) -> bool:
    """Whether ``record`` (None: no record) makes running ``spec`` under ``settings`` unnecessary: finished, of
    the current recipe and precision (``outdated_by``), and with its saved model when the grid keeps models."""
    if not record or record.get("status") != "ok" or outdated_by(record, spec, settings):
        return False
    return not (settings.save_models and lacks_saved_model(record))


def outdated_by(record: dict, spec: RunSpec, settings: GridSettings) -> dict[str, tuple[object, object]]:
    """What makes a finished ``record`` of another recipe than ``spec`` under ``settings``: key → (recorded,
    current), hyper-parameters (``recipe_changes``) and precision; empty when it is of this one."""
    # a plugin known only to the workers (loaded from a file there) cannot be checked for its recipe here
    changed = recipe_changes(record, spec) if spec.method in METHODS else {}
    return changed | precision_changes(record, settings.expected_precision())


def recipe_changes(record: dict, spec: RunSpec) -> dict[str, tuple[object, object]]:
    """Hyper-parameters whose value in ``record`` differs from what ``spec`` resolves to now: key → (recorded,
    current). Not empty when a method's defaults changed after the record was made: the run id (which holds
    only the ``--set`` overrides) still matches, but the record is of another recipe. A key the record lacks
    (added since) counts with ``Method.former_hparams``' value, or is not compared; keys the spec's label
    regime never reads (``Method.unused_hparams``) are not compared either."""
    method_cls = METHODS.get(spec.method)
    recorded = jsonable(method_cls.former_hparams) | (record.get("hparams") or {})
    current = jsonable(vars(method_cls.resolve_hparams(spec.budget, spec.overrides)))
    unused = method_cls.unused_hparams.get(spec.labels, frozenset())
    return {key: (recorded[key], value) for key, value in current.items()
            if key in recorded and key not in unused and recorded[key] != value}  # fmt: skip


def jsonable(values: dict) -> dict:
    """``values`` as a record holds them: plain JSON values kept, anything else as its text."""
    return {key: value if isinstance(value, (int, float, str, bool, type(None))) else str(value)
            for key, value in values.items()}  # fmt: skip
