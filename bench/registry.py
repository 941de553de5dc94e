"""A small generic plugin registry.

Built-ins are registered lazily as ``"module:attribute"`` strings so listing names imports no model code;
installed packages add plugins through entry points; a loose file can be loaded with ``load_plugin_file``.
Unknown names fail with the known names and the closest match.
"""

from __future__ import annotations

import ast
import difflib
import importlib
import importlib.util
import sys
from collections.abc import Callable, Iterator
from importlib.metadata import entry_points
from pathlib import Path
from typing import Generic, TypeVar

from bench.errors import BenchError, UnknownNameError

T = TypeVar("T")


def did_you_mean(name: str, known: list[str]) -> str:
    """The sentence appended to an unknown-name error: the closest known name, if any is close."""
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.5)
    return f" Did you mean '{close[0]}'?" if close else ""


class Registry(Generic[T]):
    """Names → plugin objects of one kind (methods, datasets, backbones).

    ``base`` is the ``"module:Class"`` every entry must subclass: a string, resolved when an entry is checked,
    because the contracts live in layers above this core module. ``builtins`` is a package whose modules
    declare their plugins with a bare ``@REGISTRY.register`` on a class with a literal ``name``: those names
    are read from the modules' source, so listing them imports nothing and each name is written once.
    """

    def __init__(
        self, kind: str, entry_point_group: str | None = None, base: str | None = None, builtins: str | None = None
    ) -> None:
        self.kind = kind
        self.entry_point_group = entry_point_group
        self.base = base
        self.builtins = builtins
        self._loaded: dict[str, T] = {}
        self._lazy: dict[str, str] = {}
        self._entry_points_scanned = False

    def register(self, name: str | T, obj: T | str | None = None) -> Callable[[T], T] | T | None:
        """Register a plugin. Three forms:

        - ``@REGISTRY.register`` on a class: under the class's own ``name`` attribute;
        - ``@REGISTRY.register("name")`` on a class: under ``name``, which the class takes as its ``name``;
        - ``REGISTRY.register("name", obj)``: ``obj`` or a lazy ``"module:attr"`` string.

        A taken name takes the same plugin again (a module imported twice) and refuses another one.
        """
        if not isinstance(name, str):  # the bare decorator
            self.register(_declared_name(name, self.kind), name)
            return name
        if obj is None:

            def decorator(target: T) -> T:
                if getattr(target, "name", name) != name:
                    raise BenchError(f"{self.kind} class {_dotted(target)} is registered as '{name}' but its name "
                                     f"says '{target.name}': write the name once, in the class")  # fmt: skip
                if isinstance(target, type) and "name" not in vars(target):
                    target.name = name
                self.register(name, target)
                return target

            return decorator
        self._refuse_a_second_plugin(name, obj)
        if isinstance(obj, str):
            self._lazy[name] = obj
            self._loaded.pop(name, None)
        else:
            self._check_base(name, obj)
            self._loaded[name] = obj
            self._lazy.pop(name, None)
        return None

    def _refuse_a_second_plugin(self, name: str, obj: T | str) -> None:
        offered = obj if isinstance(obj, str) else _dotted(obj)
        if not isinstance(obj, str):  # a class: the built-ins and entry points it could clash with are known by now
            self._discover()
        taken = self._lazy.get(name) or (_dotted(self._loaded[name]) if name in self._loaded else None)
        if taken is not None and not _same_plugin(taken, offered):
            raise BenchError(f"{self.kind} '{name}' is taken by {taken}: {offered} needs another name")

    def _check_base(self, name: str, obj: object) -> None:
        if self.base is None:
            return
        module_name, _, class_name = self.base.partition(":")
        base = getattr(importlib.import_module(module_name), class_name)
        if not (isinstance(obj, type) and issubclass(obj, base)):
            raise BenchError(f"{self.kind} '{name}' ({_dotted(obj)}) is not a subclass of {self.base}")

    def unregister(self, name: str) -> None:
        """Forget ``name`` (loaded or lazy); a no-op when it is not registered."""
        self._loaded.pop(name, None)
        self._lazy.pop(name, None)

    def _discover(self) -> None:
        """Add the built-ins declared in ``builtins`` and the installed packages' entry points, once."""
        if self._entry_points_scanned:
            return
        self._entry_points_scanned = True
        found = dict(_declared_builtins(self.builtins)) if self.builtins else {}
        if self.entry_point_group is not None:
            found |= {point.name: point.value for point in entry_points(group=self.entry_point_group)}
        for name, target in found.items():
            if name not in self._loaded and name not in self._lazy:
                self._lazy[name] = target

    def names(self) -> list[str]:
        self._discover()
        return sorted(set(self._loaded) | set(self._lazy))

    def is_loaded(self, name: str) -> bool:
        return name in self._loaded

    def target(self, name: str) -> str | None:
        """The ``"module:attribute"`` a lazy entry (built-in or entry point) will import; None when ``name``
        is loaded already or unknown."""
        self._discover()
        return self._lazy.get(name)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in self.names()

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def get(self, name: str) -> T:
        """The plugin registered under ``name``, importing it on first use."""
        self._discover()
        if name in self._loaded:
            return self._loaded[name]
        if name not in self._lazy:
            known = self.names()
            raise UnknownNameError(
                f"unknown {self.kind} '{name}'. Known {self.kind}s: {', '.join(known) or '(none)'}."
                + did_you_mean(name, known)
            )
        target = self._lazy[name]
        module_name, _, attribute = target.partition(":")
        try:
            module = importlib.import_module(module_name)
            obj = getattr(module, attribute) if attribute else module
        except (ImportError, AttributeError) as error:
            raise BenchError(f"{self.kind} '{name}' could not be loaded from '{target}': {error}") from error
        self._check_base(name, obj)
        self._loaded[name] = obj
        return obj


def _dotted(obj: object) -> str:
    """``module:QualifiedName`` of a class or function: the same plugin imported twice has the same one."""
    return f"{getattr(obj, '__module__', '?')}:{getattr(obj, '__qualname__', repr(obj))}"


def _same_plugin(taken: str, offered: str) -> bool:
    """Whether two ``module:Name`` targets are one plugin: the same, or a class a package re-exports (an entry
    point may name ``package:Class`` for a class defined in ``package.module``). The lazy target cannot simply be
    imported to compare: the class registers while its module is still being imported."""
    taken_module, _, taken_name = taken.partition(":")
    offered_module, _, offered_name = offered.partition(":")
    same_module = offered_module == taken_module or offered_module.startswith(taken_module + ".")
    return taken_name == offered_name and same_module


def _declared_name(target: object, kind: str) -> str:
    name = vars(target).get("name") if isinstance(target, type) else None
    if not isinstance(name, str) or not name:
        raise BenchError(f"{kind} class {_dotted(target)} has no name: give it a class attribute name = '...'")
    return name


def _declared_builtins(package: str) -> Iterator[tuple[str, str]]:
    """(name, "module:Class") of each class in ``package``'s modules decorated with a bare ``X.register``, read
    from the source with ``ast``: the modules are not imported."""
    spec = importlib.util.find_spec(package)  # imports the parent package only (bench), which is loaded anyway
    for folder in (spec.submodule_search_locations or []) if spec else []:
        for path in sorted(Path(folder).glob("*.py")):
            for node in ast.parse(path.read_text(encoding="utf-8")).body:
                if isinstance(node, ast.ClassDef) and any(_is_bare_register(d) for d in node.decorator_list):
                    yield _literal_name(node, path), f"{package}.{path.stem}:{node.name}"


def _is_bare_register(decorator: ast.expr) -> bool:
    return isinstance(decorator, ast.Attribute) and decorator.attr == "register"


def _literal_name(node: ast.ClassDef, path: Path) -> str:
    for statement in node.body:
        if (isinstance(statement, ast.Assign) and len(statement.targets) == 1
                and isinstance(statement.targets[0], ast.Name) and statement.targets[0].id == "name"
                and isinstance(statement.value, ast.Constant) and isinstance(statement.value.value, str)):  # fmt: skip
            return statement.value.value
    raise BenchError(f"{path}: class {node.name} is registered but has no literal name = '...'")


def load_plugin_file(path: str | Path) -> None:
    """Import a loose Python file so that its ``@register`` decorators run."""
    path = Path(path)
    if not path.is_file():
        raise BenchError(f"plugin file '{path}' does not exist")
    module_name = f"bench_plugin_{path.stem}_{abs(hash(path.resolve())) % 10**8}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise BenchError(f"plugin file '{path}' is not a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as error:  # a broken plugin is the user's input: report it in one line
        del sys.modules[module_name]
        raise BenchError(f"plugin file '{path}' failed to import: {type(error).__name__}: {error}") from error


METHODS: Registry = Registry("method", "bench.methods", base="bench.method:Method", builtins="bench.methods")
DATASETS: Registry = Registry("dataset", "bench.datasets", base="bench.data.dataset:Dataset", builtins="bench.datasets")
BACKBONES: Registry = Registry("backbone", "bench.backbones")  # the entry-point group users know

# The backbones, lazily: listing them imports nothing heavy. Methods and datasets declare themselves (builtins).
BACKBONES.register("litemedsam", "bench.sam.backbones:LiteMedSAM")
BACKBONES.register("medsam-vit-b", "bench.sam.backbones:MedSAMViTB")
BACKBONES.register("sam-vit-b", "bench.sam.backbones:SAMViTB")
BACKBONES.register("sam-vit-l", "bench.sam.backbones:SAMViTL")
BACKBONES.register("sam-vit-h", "bench.sam.backbones:SAMViTH")
BACKBONES.register("tiny-sam-test", "bench.sam.tiny_backbone:TinyRandomSAM")
