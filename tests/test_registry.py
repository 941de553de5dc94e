from __future__ import annotations

import subprocess
import sys
import textwrap
from importlib.metadata import EntryPoint

import pytest

from bench import registry
from bench.errors import BenchError, UnknownNameError
from bench.registry import METHODS, Registry, load_plugin_file


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
            from bench.registry import METHODS

            @METHODS.register("from-file-test")
            class FromFile:
                pass
            """
        )
    )
    load_plugin_file(plugin)
    try:
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
