"""The package's shape, read from the source: layers whose imports only point down, plugins that import only the
contract, a handful of core modules, short functions. See docs/architecture.md for the map these rules keep."""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# where each part of the ``bench`` package lives on disk (methods/ and datasets/ are mapped by setuptools)
SOURCE_FOLDERS = {"bench": REPO / "bench", "bench.methods": REPO / "methods", "bench.datasets": REPO / "datasets"}
CORE = {"bench.errors", "bench.paths", "bench.progress", "bench.metrics", "bench.registry"}
# lowest first: a module imports from its own layer's package or from a layer below, never from one above
LAYERS = ("core", "data", "records", "compute", "sam", "method", "run", "apply", "report", "perf", "cli")
# a plugin sits just above the layer of the contract it implements...
PLUGIN_CEILING = {"bench.methods": "method", "bench.datasets": "data"}
# ...and imports only the contract's public modules (and its own package's), never the harness that drives it
PLUGIN_CONTRACT = {
    "bench.methods": CORE | {"bench.method", "bench.method.training", "bench.method.box_losses",
                             "bench.data.samples", "bench.records.spec", "bench.sam.backbones",
                             "bench.sam.checkpoints", "bench.sam.embedding_cache"},
    "bench.datasets": CORE | {f"bench.data.{name}" for name in ("dataset", "release", "samples", "user_dataset",
                              "family", "planes", "framing", "image_io", "inventory", "box_files")},
}  # fmt: skip
LONGEST_FUNCTION = 80


@dataclass(frozen=True)
class Module:
    name: str
    path: Path

    @property
    def layer(self) -> str:
        return layer_of(self.name)


def layer_of(module: str) -> str:
    if module in CORE:
        return "core"
    parts = module.split(".")
    if parts[:2] in (["bench", "methods"], ["bench", "datasets"]):
        return ".".join(parts[:2])
    return parts[1] if len(parts) > 1 else "bench"


def rank(layer: str) -> int:
    if layer in PLUGIN_CEILING:  # a plugin sits just above the contract it implements
        return LAYERS.index(PLUGIN_CEILING[layer]) + 0.5
    return LAYERS.index(layer)


def package_modules() -> list[Module]:
    modules = []
    for package, folder in SOURCE_FOLDERS.items():
        for path in sorted(folder.rglob("*.py")):
            parts = list(path.relative_to(folder).with_suffix("").parts)
            if package == "bench" and parts[0] in ("methods", "datasets"):  # links some checkouts add
                continue
            dotted = ".".join([package, *[part for part in parts if part != "__init__"]])
            modules.append(Module(dotted, path))
    return modules


MODULES = package_modules()
KNOWN = {module.name for module in MODULES}


def _outside_type_checking(tree: ast.AST) -> Iterator[ast.AST]:
    """Every node except those under ``if TYPE_CHECKING:`` (annotations only: no import at run time)."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            yield from (child for orelse in node.orelse for child in [orelse, *_outside_type_checking(orelse)])
            continue
        yield node
        yield from _outside_type_checking(node)


def imported_modules(module: Module) -> Iterator[tuple[int, str]]:
    """(line, the ``bench`` module) of each import in ``module``, function-level imports included."""
    tree = ast.parse(module.path.read_text(encoding="utf-8"))
    is_package = module.path.name == "__init__.py"
    for node in _outside_type_checking(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.name.split(".")[: None if is_package else -1]
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join(anchor + ([node.module] if node.module else []))
            names = [f"{base}.{alias.name}" for alias in node.names] + [base]
        else:
            continue
        for name in names:
            while name and name not in KNOWN:  # ``from bench.x import Name``: the module is bench.x
                name = name.rpartition(".")[0]
            if name:
                yield node.lineno, name
                break


def test_the_package_is_sub_packages_and_a_few_core_modules() -> None:
    top_level = {path.stem for path in (REPO / "bench").glob("*.py")} - {"__init__"}
    assert {f"bench.{stem}" for stem in top_level} == CORE
    for module in MODULES:
        assert module.layer in (*LAYERS, *PLUGIN_CEILING, "bench"), f"{module.name} is on no layer"


@pytest.mark.parametrize("module", MODULES, ids=lambda module: module.name)
def test_imports_point_down(module: Module) -> None:
    if module.name == "bench":  # the package's front door re-exports the names users import
        return
    upward = []
    for line, target in imported_modules(module):
        target_layer = layer_of(target)
        if target_layer == module.layer:
            continue
        if target_layer == "bench" or rank(target_layer) >= rank(module.layer):
            upward.append(f"{module.path.relative_to(REPO)}:{line} imports {target} ({target_layer})")
    assert not upward, "imports that point up or sideways:\n" + "\n".join(upward)


def test_the_rule_sees_upward_imports(tmp_path: Path) -> None:
    """The checker itself: a function-level import up is caught, one under TYPE_CHECKING is not."""
    source = tmp_path / "grid.py"
    source.write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from bench.cli.run import run\n"
        "def plan():\n    from bench.apply.predict import predict_folder\n    from bench.errors import BenchError\n"
    )
    found = list(imported_modules(Module("bench.run.grid", source)))
    assert [target for _, target in found] == ["bench.apply.predict", "bench.errors"]
    assert rank(layer_of("bench.apply.predict")) > rank("run") > rank(layer_of("bench.errors"))


@pytest.mark.parametrize("module", [m for m in MODULES if m.layer in PLUGIN_CONTRACT], ids=lambda m: m.name)
def test_plugins_import_only_the_contract(module: Module) -> None:
    outside = [f"{module.path.relative_to(REPO)}:{line} imports {target}"
               for line, target in imported_modules(module)
               if target not in PLUGIN_CONTRACT[module.layer] and layer_of(target) != module.layer]  # fmt: skip
    assert not outside, "a plugin reaching past its contract:\n" + "\n".join(outside)


@pytest.mark.parametrize("module", MODULES, ids=lambda module: module.name)
def test_no_function_is_over_80_lines(module: Module) -> None:
    tree = ast.parse(module.path.read_text(encoding="utf-8"))
    long = [
        f"{node.name} ({node.end_lineno - node.lineno + 1} lines, line {node.lineno})"
        for node in ast.walk(tree)
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
        and node.end_lineno - node.lineno + 1 > LONGEST_FUNCTION
    ]
    assert not long, f"{module.path.relative_to(REPO)}: " + ", ".join(long)


def test_the_architecture_page_maps_every_module() -> None:
    """docs/architecture.md names every module of every layer under its package, and nothing that is gone."""
    page = (REPO / "docs" / "architecture.md").read_text(encoding="utf-8")
    sections = dict(re.findall(r"\*\*`?(bench/\w+/|core, `bench/)`?\*\*\n\n((?:- `[\w.]+`.*\n)+)", page))
    for folder in sorted({path.parent for path in (REPO / "bench").rglob("*.py")}):
        key = "core, `bench/" if folder == REPO / "bench" else f"bench/{folder.name}/"
        mapped = set(re.findall(r"^- `([\w.]+)`", sections.get(key, ""), flags=re.M))
        on_disk = {path.name for path in folder.glob("*.py")}
        assert mapped == on_disk, f"{key}: on disk, not mapped {on_disk - mapped}; mapped, gone {mapped - on_disk}"
