"""What every `bench` command shares: the apps, consoles, one-line user errors, plugins and progress bars."""

from __future__ import annotations

import functools
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Annotated, TypeVar

import typer
from rich.console import Console
from rich.progress import Progress

from bench.errors import BenchError
from bench.registry import load_plugin_file

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="The `bench` command line: ls, run, table (and the data, cache, perf and report commands).",
)
data_app = typer.Typer(no_args_is_help=True, help="Download and check dataset releases.")
cache_app = typer.Typer(no_args_is_help=True, help="Inspect and clear the embedding cache.")
perf_app = typer.Typer()  # its help is the suite's docstring (perf_suite)
app.add_typer(data_app, name="data")
app.add_typer(cache_app, name="cache")
app.add_typer(perf_app, name="perf")
console = Console()
errors = Console(stderr=True)
F = TypeVar("F", bound=Callable)
ItemT = TypeVar("ItemT")

PluginOption = Annotated[
    list[Path] | None, typer.Option("--plugin", help="A Python file that registers extra plugins.")
]
DataRootOption = Annotated[
    Path | None, typer.Option(help="Folder holding the dataset releases (default: $BENCH_DATA or the cache).")
]


def user_errors(command: F) -> F:
    """Turn a BenchError into one red line and exit code 2, never a traceback."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except BenchError as error:
            errors.print(f"[red]error:[/red] {error}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None

    return wrapper  # type: ignore[return-value]


def load_plugins(plugins: list[Path] | None) -> None:
    for path in plugins or []:
        load_plugin_file(path)

def check_writable(folder: Path, shown_as: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-test-"):
            pass
    except OSError as error:
        raise BenchError(
            f"results folder '{shown_as}' is not writable ({error.strerror}); choose another with --results"
        ) from error


class ProgressBars:
    """A rich progress display: one bar for the grid and, per run, a transient bar for its epochs/batches.

    A console that is not a terminal (a log file, a batch job's output, TERM=dumb) draws no bars, so a two-hour fit
    would leave its log empty until it ends: there each bar prints a plain line instead, at most once per
    ``line_every`` seconds and at its last step.
    """

    def __init__(self, progress: Progress, line_every: float = 60.0) -> None:
        self.progress = progress
        self.line_every = line_every

    def for_run(self, _spec) -> Callable[..., Iterator]:
        """The progress callback of one run (the same bars for every run)."""
        return self.track

    def track(self, iterable: Iterable[ItemT], total: int | None = None, description: str = "") -> Iterator[ItemT]:
        """Yield ``iterable``, advancing a bar named ``description`` (a plain line now and then off a terminal)."""
        if total is None and hasattr(iterable, "__len__"):
            total = len(iterable)  # type: ignore[arg-type]
        task = self.progress.add_task(f"  {description}", total=total)
        console = self.progress.console
        # rich's own rule for drawing a live display: a notebook, or a terminal that is not TERM=dumb
        plain = not (console.is_jupyter or (console.is_terminal and not console.is_dumb_terminal))
        started = last_line = time.monotonic()
        try:
            for done, item in enumerate(iterable, start=1):
                yield item
                self.progress.advance(task)
                now = time.monotonic()
                if plain and (now - last_line >= self.line_every or done == total):
                    last_line = now
                    console.print(
                        f"  {description} {done}/{total if total is not None else '?'}, "
                        f"{_clock(now - started)} elapsed", highlight=False)  # fmt: skip
        finally:
            self.progress.remove_task(task)


def _clock(seconds: float) -> str:
    minutes, seconds = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{seconds:02d}" if hours else f"{minutes}:{seconds:02d}"


def key_values(pairs: list[str], option: str) -> dict[str, str]:
    values = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise BenchError(f"{option} takes key=value, not '{pair}'")
        values[key.strip()] = value.strip()
    return values
