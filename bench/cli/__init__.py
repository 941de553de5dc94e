"""The `bench` command line: ls, run, table (and the data, cache, perf and report commands)."""

from __future__ import annotations

import importlib
import sys
import warnings

import typer

from bench.cli.common import app, errors

# click's UsageError, whether typer uses click or its own vendored copy (which exports only the subclass)
_USAGE_ERROR: type[Exception] = typer.BadParameter.__base__

__all__ = ["app", "main"]

# each module registers its commands on import; this order is the order `bench --help` lists them in
for _module in ("run", "train", "predict", "reports", "recheck", "data", "perf", "docs"):
    importlib.import_module(f"bench.cli.{_module}")


def _one_line_warning(message, category, filename, lineno, line=None) -> str:
    """Warnings the user should see (a skipped record, an excluded file) as one line, without our source."""
    return f"warning: {message}\n"


def main() -> None:
    warnings.formatwarning = _one_line_warning
    try:
        exit_code = app(standalone_mode=False)
    except _USAGE_ERROR as error:  # a malformed option value: one line, like every other user error
        if not sys.argv[1:] or type(error).__name__ == "NoArgsIsHelpError":
            error.show()  # a bare command shows its help
        else:
            command = f"{error.ctx.command_path}: " if error.ctx else ""
            errors.print(f"[red]error:[/red] {command}{error.format_message()}", highlight=False, soft_wrap=True)
        exit_code = 2
    except typer.Abort:
        errors.print("[red]interrupted[/red]; finished runs are recorded, re-run the command to resume")
        exit_code = 130
    sys.exit(exit_code or 0)
