"""The documentation cannot drift from the code: every `bench …` line in a fenced code block of README.md and
docs/ parses against the real command line, and every relative link (and its #anchor) resolves."""

from __future__ import annotations

import functools
import re
import shlex
import sys
from pathlib import Path

import pytest
import typer

from bench.cli import app

# click's classes as typer uses them (typer may bring its own copy of click)
USAGE_ERROR: type[Exception] = typer.BadParameter.__base__
EXIT: type[BaseException] = getattr(sys.modules[USAGE_ERROR.__module__], "Exit", typer.Exit)
MISSING: type[Exception] = sys.modules[USAGE_ERROR.__module__].MissingParameter

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
SHELL_FENCES = {"", "bash", "sh", "shell", "console"}
FENCE = re.compile(r"^(\s*)```(\w*)\s*$")
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")
ENV_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")


def fenced_shell_lines(text: str) -> list[tuple[int, str]]:
    """(line number, logical line) of every shell fence: continuations (``\\``) joined, indentation kept out."""
    found, language, pending, start = [], None, "", 0
    for number, line in enumerate(text.splitlines(), 1):
        fence = FENCE.match(line)
        if fence:
            language = fence.group(2) if language is None else None
            continue
        if language is None or language not in SHELL_FENCES:
            continue
        if not pending:
            start = number
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        found.append((start, pending + line))
        pending = ""
    return found


def bench_commands(line: str) -> list[list[str]]:
    """The argument lists of the `bench` commands on one shell line: split at ``&&``, ``||``, ``;`` and ``|``,
    comments and leading ``VAR=value`` assignments dropped; other programs (pip, pytest, …) ignored."""
    lexer = shlex.shlex(line, posix=True, punctuation_chars=";&|")
    lexer.whitespace_split = True
    lexer.commenters = "#"
    commands, current = [], []
    for token in [*lexer, ";"]:
        if token and set(token) <= set(";&|"):
            while current and ENV_ASSIGNMENT.match(current[0]):
                current.pop(0)
            if current and current[0] == "bench":
                commands.append(current[1:])
            current = []
        else:
            current.append(token)
    return commands


def choices() -> dict[tuple[str, str], tuple[str, ...]]:
    """(command, parameter) → the values the command accepts, for the options the CLI takes as plain text and
    checks itself when it runs (which this test never lets it do). A comma list is checked item by item."""
    from bench.data.samples import LABEL_REGIMES
    from bench.records.spec import BUDGETS, EVAL_SPLITS
    from bench.registry import BACKBONES, METHODS
    from bench.report.figure import ROW_CHOICES
    from bench.report.table import FORMATS, METRICS
    from bench.run.executors import EXECUTORS

    split = (*EVAL_SPLITS, None)
    return {
        ("run", "methods"): ("all", *METHODS.names()), ("run", "labels"): (*LABEL_REGIMES, None),
        ("run", "budget"): ("auto", *BUDGETS), ("run", "eval_split"): EVAL_SPLITS,
        ("run", "executor"): EXECUTORS, ("run", "backbone"): tuple(BACKBONES.names()),
        ("table", "format"): FORMATS, ("table", "metric"): METRICS, ("table", "split"): split,
        ("report", "split"): split, ("figure", "split"): split, ("figure", "rows"): ROW_CHOICES,
    }  # fmt: skip


def parse_against_the_cli(arguments: list[str], mention: bool = False) -> None:
    """Parse ``bench ARGUMENTS`` as the real CLI would, running nothing: raises ``UsageError`` on an unknown
    command, option or choice, or a value of the wrong type. Every command's callback is swapped for one that
    checks the parsed values against ``choices()``, on a fresh copy of the click tree (the app is left alone).
    A ``mention`` (a command named in running text) may leave out required arguments."""
    root = typer.main.get_command(app)
    allowed = choices()
    reached = []

    def check(name: str, **values: object) -> None:
        reached.append(name)
        for (command, parameter), accepted in allowed.items():
            given = values.get(parameter)
            if command != name or (parameter == "methods" and values.get("plugin")):  # a plugin's own names
                continue
            for item in str(given).split(",") if isinstance(given, str) else [given]:
                if item not in accepted:
                    raise USAGE_ERROR(f"--{parameter.replace('_', '-')} does not take '{item}'")

    stack = [root]
    while stack:
        command = stack.pop()
        command.callback = functools.partial(check, command.name)
        stack.extend(getattr(command, "commands", {}).values())  # a group: its subcommands too
    try:
        root.main(arguments, prog_name="bench", standalone_mode=False)
    except (typer.Exit, EXIT):  # --help, or a group named without its command
        return
    except USAGE_ERROR as error:  # a mention may name a command without what it requires, or a bare group
        if mention and (isinstance(error, MISSING) or type(error).__name__ == "NoArgsIsHelpError"):
            return
        raise
    assert reached, f"bench {shlex.join(arguments)}: no command was reached"


def inline_commands(text: str) -> list[tuple[int, str]]:
    """(line number, command) of the `bench …` code spans in running text that are concrete command lines:
    a span with a placeholder syntax (``[--out DIR]``, ``md|latex``, ``…``) shows a form, not a line to run."""
    prose = re.sub(r"```.*?```", lambda block: "\n" * block.group(0).count("\n"), text, flags=re.S)
    return [(prose.count("\n", 0, span.start()) + 1, " ".join(span.group(1).split()))
            for span in re.finditer(r"`(bench [^`]+)`", prose)
            if not re.search(r"[\[\]|…<>]|\.\.\.", span.group(1))]  # fmt: skip


def documented_commands() -> list[tuple[str, list[str], bool]]:
    """Every `bench` command line of the pages: in fenced shell blocks, and concrete ones in code spans (which
    may name a command without its required arguments)."""
    found = []
    for page in PAGES:
        text = page.read_text()
        for lines, mention in ((fenced_shell_lines(text), False), (inline_commands(text), True)):
            for number, line in lines:
                found += [(f"{page.relative_to(ROOT)}:{number}", arguments, mention)
                          for arguments in bench_commands(line)]  # fmt: skip
    return found


COMMANDS = documented_commands()


@pytest.mark.parametrize(("where", "arguments", "mention"), COMMANDS, ids=[where for where, *_ in COMMANDS])
def test_every_documented_bench_command_parses(where: str, arguments: list[str], mention: bool) -> None:
    try:
        parse_against_the_cli(arguments, mention)
    except USAGE_ERROR as error:
        pytest.fail(f"{where}: `bench {shlex.join(arguments)}` does not parse: {error.format_message()}")


def test_the_pages_show_commands_and_the_parser_refuses_what_the_cli_refuses() -> None:
    assert len(COMMANDS) >= 20, "the docs lost their command examples"
    parse_against_the_cli(["data", "check"], mention=True)  # "`bench data check` prints …"
    parse_against_the_cli(["run", "--methods", "unet", "--shots", "1,10", "--dry-run"])
    for wrong in (["rnu"], ["run", "--method", "unet"], ["table", "--fromat", "md"], ["data", "chek", "hc18"],
                  ["run", "--executor", "cluster"], ["run", "--jobs", "two"], ["run", "--methods", "unet,unte"],
                  ["table", "--format", "xlsx"], ["figure", "--task", "head", "--rows", "some"],
                  ["data", "check"]):  # fmt: skip
        with pytest.raises(USAGE_ERROR):
            parse_against_the_cli(wrong)


def test_shell_lines_are_split_as_a_shell_would() -> None:
    text = ("```bash\nBENCH_CACHE=/x bench run --shots 10 \\\n  --seeds 0 && bench table  # later\npip install -e .\n"
            "```\n")
    [(number, line)] = fenced_shell_lines(text)[:1]
    assert number == 2
    assert bench_commands(line) == [["run", "--shots", "10", "--seeds", "0"], ["table"]]
    assert bench_commands("pip install -e . && pytest") == []
    assert fenced_shell_lines("```python\nbench = 1\n```\n") == []
    prose = "Run `bench run --shots\n 10`, not `bench table [--out FILE]` or `bench ls methods|datasets`."
    assert inline_commands(prose) == [(1, "bench run --shots 10")]


def github_anchor(heading: str) -> str:
    """The #anchor GitHub gives a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"`|\*\*|\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip()).lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    found, counts, in_fence = set(), {}, False
    for line in page.read_text().splitlines():
        if FENCE.match(line):
            in_fence = not in_fence
        elif not in_fence and (heading := re.match(r"^#{1,6} (.+)$", line)):
            anchor = github_anchor(heading.group(1))
            found.add(f"{anchor}-{counts[anchor]}" if anchor in counts else anchor)
            counts[anchor] = counts.get(anchor, 0) + 1
    return found


def relative_links(page: Path) -> list[str]:
    """Link targets outside code blocks and code spans that are not web addresses or e-mail."""
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    text = re.sub(r"`[^`\n]*`", "", text)
    return [target for target in LINK.findall(text) if not re.match(r"^[a-z][a-z0-9+.-]*:", target)]


@pytest.mark.parametrize("page", PAGES, ids=[str(page.relative_to(ROOT)) for page in PAGES])
def test_every_relative_link_resolves(page: Path) -> None:
    broken = []
    for target in relative_links(page):
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists():
            broken.append(f"{target}: no such file")
        elif anchor and file.suffix == ".md" and anchor not in anchors(file):
            broken.append(f"{target}: no heading with that anchor")
    assert not broken, f"{page.relative_to(ROOT)}: " + "; ".join(broken)


def test_every_page_opens_with_what_it_is_for_and_the_index_lists_it() -> None:
    index = (ROOT / "docs" / "README.md").read_text()
    front = (ROOT / "README.md").read_text()
    for page in PAGES[1:]:
        lines = [line for line in page.read_text().splitlines() if line.strip()]
        assert lines[0].startswith("# ") and len(lines) > 1 and not lines[1].startswith("#"), page.name
        if page.name != "README.md":
            assert f"]({page.name})" in index, f"docs/README.md does not link {page.name}"
            assert f"](docs/{page.name})" in front, f"README.md's 'Where to go next' does not link {page.name}"
    assert len(front.splitlines()) <= 250
