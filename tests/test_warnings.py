"""What the user's screen shows: no third-party deprecation notice, every warning of our own.

Each check runs in a fresh Python process with Python's default warning filters (pytest's own would hide or
collect what a user sees), through the real entry points.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCH = [sys.executable, "-c", "import sys; from bench.cli import main; sys.argv[0] = 'bench'; main()"]


def run_python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-W", "default", "-c", code], capture_output=True, text=True, timeout=300)


def test_loading_litemedsam_shows_no_timm_notice_and_keeps_every_other_warning() -> None:
    done = run_python(
        "import warnings\n"
        "from bench.sam.backbones import load_backbone\n"
        "load_backbone('litemedsam')\n"
        "ours = [f for f in warnings.filters if f[3] is not None and 'timm' in str(getattr(f[3], 'pattern', f[3]))]\n"
        "assert not ours, f'the filter must not outlive the import: {ours}'\n"
        "warnings.warn('Importing from timm.models.layers is deprecated (raised by our code)', FutureWarning)\n"
        "warnings.warn('a warning of ours')\n"
    )
    assert done.returncode == 0, done.stderr
    assert "FutureWarning: Importing from timm.models.layers is deprecated (raised by our code)" in done.stderr
    assert "UserWarning: a warning of ours" in done.stderr
    assert done.stderr.count("Warning") == 2, done.stderr


def test_bench_run_prints_no_warning_and_a_warning_of_ours_still_shows(tmp_path: Path) -> None:
    results = tmp_path / "results"
    command = [*BENCH, "run", "--methods", "medsam-box", "--shots", "10", "--tasks", "ellipse",
               "--backbone", "tiny-sam-test", "--results", str(results)]  # fmt: skip
    ran = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert ran.returncode == 0, ran.stderr
    assert "1 ok, 0 failed" in ran.stdout
    assert "warning" not in (ran.stdout + ran.stderr).lower(), ran.stderr

    (results / "default" / "runs" / "broken.json").write_text("{")
    table = subprocess.run([*BENCH, "table", "--results", str(results)], capture_output=True, text=True, timeout=300)
    assert table.returncode == 0, table.stderr
    assert "warning: skipping unreadable record" in table.stderr


@pytest.mark.parametrize("module", ["timm.models.layers", "timm.models.registry"])
def test_the_silenced_notice_is_real(module: str) -> None:
    """The filter is only needed while timm warns: if timm stops, this fails and the filter can go."""
    done = run_python(f"import {module}")
    assert f"FutureWarning: Importing from {module} is deprecated" in done.stderr
