from __future__ import annotations

import subprocess
import sys
import textwrap
from importlib.metadata import EntryPoint

import pytest

from bench import registry
from bench.errors import BenchError, UnknownNameError
from bench.registry import DATASETS, METHODS, Registry, load_plugin_file


def test_lazy_entry_is_not_imported_until_used() -> None:
    reg: Registry = Registry("thing")
    reg.register("decoder", "json:JSONDecoder")
    assert reg.names() == ["decoder"]
    assert not reg.is_loaded("decoder")
    import json

    assert reg.get("decoder") is json.JSONDecoder
    assert reg.is_loaded("decoder")


def test_decorator_registration() -> None:
    reg: Registry = Registry("thing")

    @reg.register("widget")
    class Widget:
        pass

    assert reg.get("widget") is Widget
    assert "widget" in reg


def test_unregister_forgets_loaded_and_lazy_entries() -> None:
    reg: Registry = Registry("thing")
    reg.register("lazy", "json:JSONDecoder")
    reg.register("loaded", dict)
    reg.unregister("lazy")
    reg.unregister("loaded")
    reg.unregister("never-registered")
    assert reg.names() == []
    with pytest.raises(UnknownNameError):
        reg.get("loaded")


def test_unknown_name_lists_known_names_and_closest_match() -> None:
    reg: Registry = Registry("method")
    for name in ("unet", "prompt-module", "medsam-box"):
        reg.register(name, "json:JSONDecoder")
    with pytest.raises(UnknownNameError) as caught:
        reg.get("promt-module")
    message = str(caught.value)
    assert "unknown method 'promt-module'" in message
    assert "medsam-box, prompt-module, unet" in message
    assert "Did you mean 'prompt-module'?" in message
    with pytest.raises(UnknownNameError) as caught:
        reg.get("zzzzzz")
    assert "Did you mean" not in str(caught.value)


def test_broken_lazy_target_is_a_clear_error() -> None:
    reg: Registry = Registry("method")
    reg.register("ghost", "bench.no_such_module:Ghost")
    with pytest.raises(BenchError, match="could not be loaded from 'bench.no_such_module:Ghost'"):
        reg.get("ghost")


def test_entry_points_are_discovered(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = [EntryPoint(name="from-package", value="json:JSONEncoder", group="bench.methods")]
    monkeypatch.setattr(registry, "entry_points", lambda group: fake if group == "bench.methods" else [])
    reg: Registry = Registry("method", "bench.methods")
    reg.register("builtin", "json:JSONDecoder")
    assert reg.names() == ["builtin", "from-package"]
    import json

    assert reg.get("from-package") is json.JSONEncoder


def test_plugin_file_registers_a_method(tmp_path) -> None:
    plugin = tmp_path / "my_method.py"
    plugin.write_text(
        textwrap.dedent(
            """
            from bench.method import Method
            from bench.registry import METHODS

            @METHODS.register
            class FromFile(Method):
                name = "from-file-test"
            """
        )
    )
    load_plugin_file(plugin)
    try:
        assert METHODS.get("from-file-test").__name__ == "FromFile"
        load_plugin_file(plugin)  # the same file again (a second --plugin of it): the same class, no error
        assert METHODS.get("from-file-test").__name__ == "FromFile"
    finally:
        METHODS.unregister("from-file-test")


def test_broken_plugin_file_is_one_line(tmp_path) -> None:
    plugin = tmp_path / "broken.py"
    plugin.write_text("raise RuntimeError('boom')\n")
    with pytest.raises(BenchError, match="failed to import: RuntimeError: boom"):
        load_plugin_file(plugin)
    with pytest.raises(BenchError, match="does not exist"):
        load_plugin_file(tmp_path / "missing.py")


def test_bench_ls_imports_no_model_code() -> None:
    script = textwrap.dedent(
        """
        import sys
        from typer.testing import CliRunner
        from bench.cli import app
        result = CliRunner().invoke(app, ["ls", "methods"])
        assert result.exit_code == 0, result.output
        assert "unet" in result.output, result.output
        heavy = [m for m in ("torch", "segmentation_models_pytorch", "segment_anything") if m in sys.modules]
        assert not heavy, heavy
        """
    )
    completed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0, completed.stderr


def test_a_taken_name_refuses_another_plugin_and_takes_the_same_one_again() -> None:
    reg: Registry = Registry("thing")
    reg.register("decoder", "json:JSONDecoder")
    reg.register("decoder", "json:JSONDecoder")  # the same entry twice: a no-op
    with pytest.raises(BenchError, match="'decoder' is taken by json:JSONDecoder: json:JSONEncoder needs another"):
        reg.register("decoder", "json:JSONEncoder")
    import json

    reg.register("decoder", json.JSONDecoder)  # the lazy entry's own class, imported: the same plugin
    assert reg.get("decoder") is json.JSONDecoder
    with pytest.raises(BenchError, match="is taken by json.decoder:JSONDecoder: json.encoder:JSONEncoder"):
        reg.register("decoder", json.JSONEncoder)


def test_built_in_names_cannot_be_taken_by_a_user_class() -> None:
    from bench.method import Method

    class Impostor(Method):
        name = "unet"

    with pytest.raises(BenchError, match="method 'unet' is taken by bench.methods.unet:UNet"):
        METHODS.register(Impostor)
    assert METHODS.get("unet") is not Impostor and METHODS.get("unet").__module__ == "bench.methods.unet"


def test_entries_must_subclass_the_registry_base() -> None:
    class NotAMethod:
        name = "not-a-method"

    with pytest.raises(BenchError, match=r"'not-a-method' \(.*NotAMethod\) is not a subclass of bench.method:Method"):
        METHODS.register(NotAMethod)
    assert "not-a-method" not in METHODS
    with pytest.raises(BenchError, match="is not a subclass of bench.data.dataset:Dataset"):
        DATASETS.register("json-decoder", "json:JSONDecoder")
        DATASETS.get("json-decoder")
    DATASETS.unregister("json-decoder")


def test_a_name_is_written_once() -> None:
    reg: Registry = Registry("thing")

    @reg.register
    class Named:
        name = "named"

    @reg.register("given")
    class Unnamed:
        pass

    assert reg.get("named") is Named and Unnamed.name == "given"
    with pytest.raises(BenchError, match="registered as 'other' but its name says 'named-twice'"):

        @reg.register("other")
        class Twice:
            name = "named-twice"

    with pytest.raises(BenchError, match="has no name"):

        @reg.register
        class Nameless:
            pass


def test_built_ins_are_read_from_their_source_with_each_name_once() -> None:
    """Every class in methods/ and datasets/ registers under its own ``name``, found without importing it."""
    for registry_, package, count in ((METHODS, "bench.methods", 7), (DATASETS, "bench.datasets", 9)):
        built_in = dict(registry._declared_builtins(package))
        assert len(built_in) == count, built_in
        for name, target in built_in.items():
            assert name in registry_.names()
            assert registry_.get(name).name == name, target
            assert f"{registry_.get(name).__module__}:{registry_.get(name).__qualname__}" == target
