"""What a run record says about its method and dataset, so that reports never need the plugins.

The runner writes ``method_info`` and ``dataset_info`` into every record (records describe themselves, as
benchopt's and nnU-Net's result folders do); ``bench/report`` reads them back. Records written before these
fields existed fall back to what the registry declares without importing anything: a loaded plugin's class
attributes, or the literal class attributes of a lazy entry read from its module's source.

This module imports no plugin and nothing heavy, so the runner and the report can both use it.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Sequence
from importlib.machinery import ModuleSpec
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bench.data.samples import Sample
    from bench.registry import Registry

# The row groups of Table 1, in the paper's order: a method plugin's ``group`` is one of these.
GROUPS = ("Promptable", "Automatic — fully trained", "Automatic — adapted", "Ours")
METHOD_INFO = "method_info"
DATASET_INFO = "dataset_info"


def describe_method(plugin: Any, name: str) -> dict:
    """The record's ``method_info``: what a report needs to name, place and mark the method's rows."""
    return {
        "display_name": str(getattr(plugin, "display_name", name)),
        "group": getattr(plugin, "group", None),
        "training_free": bool(getattr(plugin, "training_free", False)),
        "prompted": bool(getattr(plugin, "prompted", False)),
        # the label regimes it learns from (a prompted method: is prompted with)
        "labels": list(getattr(plugin, "labels", ())),
        "uses_backbone": bool(getattr(plugin, "uses_backbone", False)),
    }


def describe_dataset(plugin: Any, name: str, task: str, test: Sequence[Sample] = ()) -> dict:
    """The record's ``dataset_info``: display names, the dataset's task order and the unit of HD95."""
    return {
        "display_name": str(getattr(plugin, "display_name", name)),
        "task_display": str((getattr(plugin, "task_display", None) or {}).get(task, task)),
        "tasks": list(getattr(plugin, "tasks", ())),
        "spacing_unit": spacing_unit(test) if test else None,
    }


def spacing_unit(samples: Sequence[Sample]) -> str:
    """The unit HD95 is measured in (``bench.metrics``): mm where every sample has a pixel spacing, pixels
    where none has, "mixed" otherwise."""
    spaced = {sample.spacing is not None for sample in samples}
    return "mixed" if len(spaced) > 1 else "mm" if spaced == {True} else "px"


def declared(registry: Registry, name: str) -> Any | None:
    """What ``registry`` declares about ``name`` without importing anything, for ``describe_*``: the plugin
    itself when it is already loaded, else the literal class attributes of its lazy entry; None when the
    registry does not know the name or its source cannot be read."""
    if registry.is_loaded(name):
        return registry.get(name)
    target = registry.target(name)
    if target is None:
        return None
    literals = literal_class_attributes(target)
    return SimpleNamespace(**literals) if literals else None


def literal_class_attributes(target: str) -> dict[str, object]:
    """The attributes assigned a literal in the body of the class a ``"module:Class"`` target names, read
    from the module's source: neither the module nor its parent packages are imported. Attributes that are
    not literals, or that the class inherits, are left out."""
    module_name, _, class_name = target.partition(":")
    source = _module_source(module_name)
    if source is None or not class_name:
        return {}
    try:
        tree = ast.parse(source.read_text(encoding="utf-8"))
    except (OSError, SyntaxError, UnicodeDecodeError, ValueError):
        return {}
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == class_name:
            return dict(_literal_assignments(node))
    return {}


def _literal_assignments(node: ast.ClassDef):
    for statement in node.body:
        if isinstance(statement, ast.Assign) and len(statement.targets) == 1:
            target, value = statement.targets[0], statement.value
        elif isinstance(statement, ast.AnnAssign) and statement.value is not None:
            target, value = statement.target, statement.value
        else:
            continue
        if not isinstance(target, ast.Name):
            continue
        try:
            yield target.id, ast.literal_eval(value)
        except ValueError:
            continue


def _module_source(module_name: str) -> Path | None:
    """The source file the import system would load for ``module_name``, found by asking the same finders
    level by level (importlib.util.find_spec would import the parent packages)."""
    spec: ModuleSpec | None = None
    search_path = None
    parts = module_name.split(".")
    for depth in range(1, len(parts) + 1):
        name = ".".join(parts[:depth])
        loaded = sys.modules.get(name)
        spec = getattr(loaded, "__spec__", None) if loaded is not None else _find_spec(name, search_path)
        if spec is None:
            return None
        search_path = spec.submodule_search_locations
    origin = spec.origin if spec is not None else None
    return Path(origin) if origin and origin.endswith(".py") else None


def _find_spec(name: str, search_path) -> ModuleSpec | None:
    for finder in sys.meta_path:
        find_spec = getattr(finder, "find_spec", None)
        spec = find_spec(name, search_path) if find_spec is not None else None
        if spec is not None:
            return spec
    return None
