"""Numbers in Markdown pages rendered from the run records: the blocks ``bench docs render`` fills.

A block is an HTML comment naming what to render, the rendered text, and a closing comment::

    <!-- bench:value experiment=hc18-litemedsam method=unet labels=mask shots=10 -->(rendered)<!-- /bench -->

Markdown viewers hide the comments and show the text between them, which ``render_text`` replaces with what the
records give today, so a page's numbers cannot drift from its records: the test of the committed pages re-renders
them and fails on any difference. Arguments are ``key=value`` words (quote a value with spaces). Every block that
reads records names its experiment: records of two experiments are never pooled. The kinds:

* ``table``: Table 1 of one experiment as ``bench table --experiment NAME`` prints it (``metric``, ``split``);
* ``value`` (inline): one number of one Table 1 row (``show``: the table's ``cell``, ``mean``, ``std``, ``runs``,
  ``range`` of the runs' values, ``fit`` seconds (a range over runs), fit seconds per ``epoch``, trainable
  ``params``, the ``device`` the runs computed on), the row named by its spec columns (``method``,
  ``labels``, ``shots``, ``budget``, ``variant``, ``task``…; ``seed`` and ``draw``, one or a comma-separated
  list, narrow it to runs);
* ``runs`` (inline): the finished runs of a grid, each spec column a comma-separated list (``method=unet,autosam``
  …): how many (``show=count``), the sum of each run's start-to-record time (``wall``), the days they finished
  (``when``);
* ``paper`` (inline): the seed paper's number for a row (``bench.report.paper``);
* ``per-draw``: the report's per-draw table of one experiment, optionally of one method;
* ``recheck``: the table of the experiment's ``recheck.md`` (or of ``file=NAME.md`` in its folder), written by
  ``bench recheck --out`` (the committed records against a re-run with the current code);
* ``perf``: a section of ``results/perf.md``, the report ``bench perf --out results/perf.md`` writes: its tables
  (``section=N``, the section's number, or ``section=time``: the wall time per section), or the line saying when,
  by which command and in how long it was measured (``section=measured``);
* ``command`` (inline): the ``bench run`` commands an experiment logged (``bench.records.commands``) whose command
  line holds every ``contains`` text (``;`` between them): their summed wall time (``show=wall``), largest peak
  memory (``memory``), count (``commands``), dates (``when``) or the machine's load average around them (``load``);
* ``headline`` and ``claims``: the front page's table and claims matrix; ``claim`` (inline): one verdict;
  ``beside-paper``: an experiment's Table 1 rows beside the paper's numbers (``bench.report.front_page``).
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from bench.errors import BenchError
from bench.records import store
from bench.records.commands import duration_text, logged_commands
from bench.report import front_page
from bench.report.diagnosis import per_draw_table
from bench.report.paper import TRAINING_FREE, require_paper_result
from bench.report.table import render_table

RECHECK_FILE = "recheck.md"  # the file `bench recheck --out` writes in an experiment's folder, read by bench:recheck
PERF_FILE = "perf.md"  # the report `bench perf --out results/perf.md` writes, read by bench:perf

# a comment written as inline code (`<!-- bench:… -->`, in a page that explains blocks) is not a block
BLOCK = re.compile(
    r"(?<!`)<!-- bench:(?P<kind>[a-z-]+)(?P<args>[^>]*?)-->(?P<body>.*?)(?<!`)<!-- /bench -->", re.DOTALL
)
ROW_COLUMNS = ("method", "variant", "labels", "shots", "budget", "backbone", "dataset", "task")
RUN_COLUMNS = ("seed", "draw")
SHOWN = ("cell", "mean", "std", "runs", "range", "fit", "epoch", "params", "device")


class Records:
    """The runs frames of the experiments the blocks of a render name, each read once, per split."""

    def __init__(self, results: Path) -> None:
        self.results = Path(results)
        self._frames: dict[tuple[str, str | None], pd.DataFrame] = {}

    def runs(self, experiment: str, split: str | None = None) -> pd.DataFrame:
        key = (experiment, split)
        if key not in self._frames:
            records = store.load_records(self.results, experiment)
            if not records:
                raise BenchError(f"no run records in experiment '{experiment}' under '{self.results}'")
            self._frames[key] = store.runs_frame(store.of_split(records, split))
        return self._frames[key]

    def recheck(self, experiment: str, name: str = RECHECK_FILE) -> str:
        if Path(name).name != name or not name.endswith(".md"):
            raise BenchError(f"bench:recheck file= names a Markdown file in the experiment's folder, not '{name}'")
        path = store.experiment_folder(self.results, experiment) / name
        if not path.is_file():
            raise BenchError(f"no {path}: run `bench recheck --experiment {experiment} --out {path}` first")
        return path.read_text(encoding="utf-8")

    def perf(self) -> str:
        path = self.results / PERF_FILE
        if not path.is_file():
            raise BenchError(f"no {path}: run `bench perf --out {path}` first")
        return path.read_text(encoding="utf-8")

    def claims(self, experiment: str) -> pd.DataFrame:
        path = store.experiment_folder(self.results, experiment) / "report" / "claims.csv"
        if not path.is_file():
            raise BenchError(f"no {path}: run `bench report --experiment {experiment}` first")
        return pd.read_csv(path, keep_default_na=False)


@dataclass(frozen=True)
class Block:
    kind: str
    arguments: dict[str, str]

    def take(self, key: str, default: str | None = None) -> str:
        value = self.arguments.get(key, default)
        if value is None:
            raise BenchError(f"bench:{self.kind} needs {key}=…")
        return value

    def unknown(self, known: tuple[str, ...]) -> None:
        extra = sorted(set(self.arguments) - set(known))
        if extra:
            raise BenchError(f"bench:{self.kind} takes {', '.join(known)}, not {', '.join(extra)}")


def _parse(kind: str, arguments: str) -> Block:
    parsed = {}
    for word in shlex.split(arguments):
        key, equals, value = word.partition("=")
        if not equals:
            raise BenchError(f"bench:{kind}: '{word}' is not key=value")
        parsed[key] = value
    return Block(kind, parsed)


def _table(block: Block, records: Records) -> str:
    block.unknown(("experiment", "metric", "split"))
    runs = records.runs(block.take("experiment"), block.arguments.get("split"))
    return "\n" + render_table(runs, metric=block.take("metric", "dice")).strip() + "\n"


def _selected(block: Block, records: Records) -> pd.DataFrame:
    """The finished runs of one Table 1 row (and ``seed``/``draw``) that the block's arguments name."""
    runs = records.runs(block.take("experiment"), block.arguments.get("split"))
    chosen = runs[runs["status"] == "ok"]
    for column in (*ROW_COLUMNS, *RUN_COLUMNS):
        wanted = block.arguments.get(column, "" if column == "variant" else None)
        if wanted is not None:  # seed and draw take a comma-separated list
            allowed = wanted.split(",") if column in RUN_COLUMNS else [wanted]
            chosen = chosen[chosen[column].astype(str).isin(allowed)]
    if chosen.empty:
        raise BenchError(f"bench:{block.kind}: no finished run matches {_named(block)}")
    rows = chosen.drop_duplicates(list(ROW_COLUMNS))
    if len(rows) > 1:
        found = "; ".join(" ".join(f"{c}={r[c]}" for c in ROW_COLUMNS if r[c] != "") for _, r in rows.iterrows())
        raise BenchError(f"bench:{block.kind}: {_named(block)} matches {len(rows)} Table 1 rows ({found})")
    return chosen


def _named(block: Block) -> str:
    return " ".join(f"{key}={value}" for key, value in block.arguments.items())


def _value(block: Block, records: Records) -> str:
    block.unknown(("experiment", "split", "metric", "show", *ROW_COLUMNS, *RUN_COLUMNS))
    show, metric = block.take("show", "cell"), block.take("metric", "dice")
    if show not in SHOWN:
        raise BenchError(f"bench:value show= takes {', '.join(SHOWN)}, not '{show}'")
    chosen = _selected(block, records)
    values = chosen[metric] * (100.0 if metric == "dice" else 1.0)
    if show == "runs":
        return str(len(chosen))
    if show == "fit":
        low, high = (f"{chosen['fit_seconds'].agg(end):.0f}" for end in ("min", "max"))
        return low if low == high else f"{low}–{high}"
    if show == "epoch":  # mean fit seconds per epoch
        return f"{(chosen['fit_seconds'] / pd.to_numeric(chosen['epochs'])).mean():.2f}"
    if show == "device":
        return "; ".join(sorted(set(chosen["device"].dropna())))
    if show == "params":
        return f"{int(chosen['params_trainable'].max()):,}"
    if show == "range":
        return f"{values.min():.2f}–{values.max():.2f}"
    mean, std = values.mean(), values.std(ddof=0)
    if show == "mean" or (show == "cell" and len(values) == 1):
        return f"{mean:.2f}"
    return f"{std:.2f}" if show == "std" else f"{mean:.2f} ± {std:.2f}"


def _paper(block: Block, records: Records) -> str:
    block.unknown(("method", "dataset", "task", "shots", "show"))
    result = require_paper_result(block.take("method"), block.take("dataset"), block.take("task"),
                                  block.take("shots", TRAINING_FREE))  # fmt: skip
    show = block.take("show", "cell")
    if show == "std" and result.std is None:
        raise BenchError(f"bench:paper: the paper gives no std for {_named(block)}")
    return {"mean": f"{result.mean:.2f}", "std": f"{result.std or 0:.2f}"}.get(show, result.text())


def _per_draw(block: Block, records: Records) -> str:
    block.unknown(("experiment", "split", "method"))
    runs = records.runs(block.take("experiment"), block.arguments.get("split"))
    if "method" in block.arguments:
        runs = runs[runs["method"] == block.arguments["method"]]
    table = per_draw_table(runs)
    if table.empty:
        raise BenchError(f"bench:per-draw: {_named(block)} has no k-shot row with several draws")
    said_elsewhere = [column for column in ("backbone", "dataset") if column in table and table[column].nunique() == 1]
    table = table.drop(columns=said_elsewhere)
    return "\n" + table.to_markdown(index=False, disable_numparse=True) + "\n"


def _recheck(block: Block, records: Records) -> str:
    """The experiment's ``recheck.md`` (or ``file=``, another file ``bench recheck --out`` wrote in its folder) from
    its table on: the table, the summary line and the notes; its title and preamble are the page's to write."""
    block.unknown(("experiment", "file"))
    lines = records.recheck(block.take("experiment"), block.arguments.get("file", RECHECK_FILE)).splitlines()
    first = next((i for i, line in enumerate(lines) if line.startswith("|")), None)
    if first is None:
        raise BenchError(f"bench:recheck: {_named(block)}'s recheck.md holds no table")
    return "\n" + "\n".join(lines[first:]).strip() + "\n"


def _perf(block: Block, records: Records) -> str:
    """Part of ``results/perf.md``: a section's tables (its prose is the page's to write), or its measured line."""
    block.unknown(("section",))
    wanted = block.take("section")
    report = records.perf()
    if wanted == "measured":
        line = next((line for line in report.splitlines() if line.startswith("Measured ")), None)
        if line is None:
            raise BenchError("bench:perf: results/perf.md has no 'Measured …' line")
        return line.removeprefix("Measured ").removesuffix(".")
    title = "Wall time per section" if wanted == "time" else f"{wanted}. "
    sections = {part.partition("\n")[0]: part for part in report.split("\n## ")[1:]}
    found = [body for heading, body in sections.items() if heading.startswith(title)]
    if not found:
        raise BenchError(f"bench:perf: results/perf.md has no section {wanted} (its sections: "
                         f"{'; '.join(sections)})")  # fmt: skip
    tables = [line for line in found[0].splitlines() if line.startswith("|")]
    return "\n" + "\n".join(tables) + "\n"


RUNS_SHOWN = ("count", "wall", "when")


def _runs(block: Block, records: Records) -> str:
    """What the finished runs of a grid (``method=a,b`` and the other columns, each a comma-separated list, the
    variant one text; no variant: the runs without ``--set``; ``variant=*``: every variant) add up to: how many
    (``count``), the time from each run's start to its record (``wall``: loading, encoding, fitting and scoring,
    the pauses between runs left out), the days they finished (``when``)."""
    block.unknown(("experiment", "split", "show", *ROW_COLUMNS, *RUN_COLUMNS))
    show = block.take("show", "count")
    if show not in RUNS_SHOWN:
        raise BenchError(f"bench:runs show= takes {', '.join(RUNS_SHOWN)}, not '{show}'")
    runs = records.runs(block.take("experiment"), block.arguments.get("split"))
    chosen = runs[runs["status"] == "ok"]
    for column in (*ROW_COLUMNS, *RUN_COLUMNS):
        wanted = block.arguments.get(column, "" if column == "variant" else None)
        if wanted not in (None, "*"):  # variant=* takes the runs of every variant
            allowed = [wanted] if column == "variant" else wanted.split(",")
            chosen = chosen[chosen[column].astype(str).isin(allowed)]
    if chosen.empty:
        raise BenchError(f"bench:runs: no finished run matches {_named(block)}")
    if show == "count":
        return str(len(chosen))
    if show == "when":
        days = sorted({stamp[:10] for stamp in chosen["finished"].dropna()})
        return days[0] if len(days) == 1 else f"{days[0]} to {days[-1]}"
    spans = pd.to_datetime(chosen["finished"], utc=True) - pd.to_datetime(chosen["started"], utc=True)
    if spans.isna().any() or not spans.dt.total_seconds().gt(0).all():  # `bench evaluate` keeps no run time
        raise BenchError(f"bench:runs: a run matching {_named(block)} does not say how long it took")
    return duration_text(spans.dt.total_seconds().sum())


COMMAND_SHOWN = ("wall", "memory", "commands", "when", "load")


def _command(block: Block, records: Records) -> str:
    block.unknown(("experiment", "contains", "show"))
    experiment, show = block.take("experiment"), block.take("show", "wall")
    if show not in COMMAND_SHOWN:
        raise BenchError(f"bench:command show= takes {', '.join(COMMAND_SHOWN)}, not '{show}'")
    wanted = [part.strip() for part in block.take("contains", "").split(";") if part.strip()]
    entries = [entry for entry in logged_commands(records.results, experiment)
               if all(part in entry["command"] for part in wanted)]  # fmt: skip
    if not entries:
        raise BenchError(f"bench:command: no command logged in {store.experiment_folder(records.results, experiment)}"
                         f"/commands.jsonl matches {_named(block)}")  # fmt: skip
    if show == "wall":
        return duration_text(sum(entry["wall_seconds"] for entry in entries))
    if show == "memory":
        return f"{max(entry['peak_rss_mb'] for entry in entries) / 1024:.1f} GB"
    if show == "commands":
        return str(len(entries))
    if show == "when":
        days = sorted({entry["started"][:10] for entry in entries})
        return days[0] if len(days) == 1 else f"{days[0]} to {days[-1]}"
    loads = [value for entry in entries for value in entry["load_average"]]
    return f"{min(loads):.1f}–{max(loads):.1f}"


KINDS: dict[str, Callable[[Block, Records], str]] = {
    "table": _table,
    "runs": _runs,
    "value": _value,
    "paper": _paper,
    "per-draw": _per_draw,
    "recheck": _recheck,
    "perf": _perf,
    "command": _command,
    "headline": front_page.headline_block,
    "claims": front_page.claims_block,
    "claim": front_page.claim_block,
    "beside-paper": front_page.beside_paper_block,
}


def render_text(text: str, records: Records, source: str = "<text>") -> tuple[str, int]:
    """``text`` with every block's body rendered anew, and how many blocks it holds; a block that cannot be
    rendered raises one BenchError naming the page and line."""

    def rendered(match: re.Match) -> str:
        kind = match["kind"]
        line = text.count("\n", 0, match.start()) + 1
        try:
            if kind not in KINDS:
                raise BenchError(f"unknown block kind bench:{kind} (known: {', '.join(KINDS)})")
            body = KINDS[kind](_parse(kind, match["args"]), records)
        except BenchError as error:
            raise BenchError(f"{source}:{line}: {error}") from None
        return f"<!-- bench:{kind}{match['args']}-->{body}<!-- /bench -->"

    return BLOCK.sub(rendered, text), len(BLOCK.findall(text))


def default_pages(root: Path) -> list[Path]:
    """The pages a reader sees: README.md, docs/**/*.md and every results README."""
    root = Path(root)
    pages = [root / "README.md", *sorted((root / "docs").rglob("*.md")), *sorted(root.glob("results/*/README.md"))]
    return [page for page in pages if page.is_file()]


@dataclass(frozen=True)
class RenderedPage:
    path: Path
    before: str
    after: str
    blocks: int

    @property
    def changed(self) -> bool:
        return self.before != self.after


def render_pages(pages: list[Path], results: Path) -> list[RenderedPage]:
    """Every page rendered in memory (nothing written): one failing block fails the whole render."""
    records = Records(results)
    rendered = []
    for page in pages:
        try:
            before = Path(page).read_text(encoding="utf-8")
        except OSError as error:
            raise BenchError(f"cannot read {page}: {error.strerror}") from None
        after, blocks = render_text(before, records, str(page))
        rendered.append(RenderedPage(Path(page), before, after, blocks))
    return rendered
