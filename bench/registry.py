"""A small generic plugin registry.

Built-ins are registered lazily as ``"module:attribute"`` strings so listing names imports no model code;
installed packages add plugins through entry points; a loose file can be loaded with ``load_plugin_file``.
Unknown names fail with the known names and the closest match.
"""

from __future__ import annotations

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
    """Names → plugin objects of one kind (methods, datasets, backbones)."""

    def __init__(self, kind: str, entry_point_group: str | None = None) -> None:
        self.kind = kind
        self.entry_point_group = entry_point_group
        self._loaded: dict[str, T] = {}
        self._lazy: dict[str, str] = {}
        self._entry_points_scanned = False

    def register(self, name: str, obj: T | str | None = None) -> Callable[[T], T] | None:
        """Register ``obj`` (or a ``"module:attr"`` string) under ``name``; without ``obj``, a decorator."""
        if obj is None:

            def decorator(target: T) -> T:
                self.register(name, target)
                return target

            return decorator
        if isinstance(obj, str):
            self._lazy[name] = obj
            self._loaded.pop(name, None)
        else:
            self._loaded[name] = obj
            self._lazy.pop(name, None)
        return None

    def unregister(self, name: str) -> None:
        """Forget ``name`` (loaded or lazy); a no-op when it is not registered."""
        self._loaded.pop(name, None)
        self._lazy.pop(name, None)

    def _scan_entry_points(self) -> None:
        if self._entry_points_scanned or self.entry_point_group is None:
            return
        self._entry_points_scanned = True
        for entry_point in entry_points(group=self.entry_point_group):
            if entry_point.name not in self._loaded and entry_point.name not in self._lazy:
                self._lazy[entry_point.name] = entry_point.value

    def names(self) -> list[str]:
        self._scan_entry_points()
        return sorted(set(self._loaded) | set(self._lazy))

    def is_loaded(self, name: str) -> bool:
        return name in self._loaded

    def target(self, name: str) -> str | None:
        """The ``"module:attribute"`` a lazy entry (built-in or entry point) will import; None when ``name``
        is loaded already or unknown."""
        self._scan_entry_points()
        return self._lazy.get(name)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in self.names()

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def get(self, name: str) -> T:
        """The plugin registered under ``name``, importing it on first use."""
        self._scan_entry_points()
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
        self._loaded[name] = obj
        return obj


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


METHODS: Registry = Registry("method", "bench.methods")
DATASETS: Registry = Registry("dataset", "bench.datasets")
BACKBONES: Registry = Registry("backbone", "bench.sam.backbones")

# Built-ins, lazily: listing them imports nothing heavy.
METHODS.register("unet", "bench.methods.unet:UNet")
METHODS.register("transunet", "bench.methods.transunet:TransUNet")
METHODS.register("prompt-module", "bench.methods.prompt_module:PromptModule")
METHODS.register("medsam-box", "bench.methods.medsam_box:MedSAMBox")
METHODS.register("autosam", "bench.methods.autosam:AutoSAM")
METHODS.register("persam", "bench.methods.persam:PerSAM")
METHODS.register("persam-f", "bench.methods.persam:PerSAMF")
DATASETS.register("synthetic", "bench.datasets.synthetic:Synthetic")
DATASETS.register("hc18", "bench.datasets.hc18:HC18")
DATASETS.register("hc18-whole", "bench.datasets.hc18:HC18Whole")
DATASETS.register("hc18-demo", "bench.datasets.hc18_demo:HC18Demo")
DATASETS.register("camus", "bench.datasets.camus:CAMUS")
DATASETS.register("camus-whole", "bench.datasets.camus:CAMUSWhole")
DATASETS.register("acdc", "bench.datasets.acdc:ACDC")
DATASETS.register("nnunet", "bench.datasets.nnunet:NNUNet")
DATASETS.register("folder", "bench.datasets.image_folder:ImageFolder")
BACKBONES.register("litemedsam", "bench.sam.backbones:LiteMedSAM")
BACKBONES.register("medsam-vit-b", "bench.sam.backbones:MedSAMViTB")
BACKBONES.register("sam-vit-b", "bench.sam.backbones:SAMViTB")
BACKBONES.register("sam-vit-l", "bench.sam.backbones:SAMViTL")
BACKBONES.register("sam-vit-h", "bench.sam.backbones:SAMViTH")
BACKBONES.register("tiny-sam-test", "bench.sam.tiny_backbone:TinyRandomSAM")
