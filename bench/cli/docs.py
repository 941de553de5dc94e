"""`bench docs render`: the numbers of README.md, docs/ and the results READMEs rendered from the records."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from bench.cli.common import app, console, errors, user_errors
from bench.paths import atomic_write

docs_app = typer.Typer(no_args_is_help=True, help="Render the documentation's generated blocks from the records.")
app.add_typer(docs_app, name="docs")


@docs_app.command("render")
@user_errors
def render(
    pages: Annotated[
        list[Path] | None,
        typer.Argument(help="Markdown pages; default: README.md, docs/**/*.md and results/*/README.md."),
    ] = None,
    results: Annotated[Path, typer.Option(help="Folder of experiments the blocks read.")] = Path("results"),
    check: Annotated[
        bool, typer.Option("--check", help="Write nothing; exit 1 when a page differs from its records.")
    ] = False,
) -> None:
    """Fill every <!-- bench:KIND … --> … <!-- /bench --> block from the run records (docs/commands.md)."""
    from bench.report.doc_blocks import default_pages, render_pages

    rendered = render_pages(pages or default_pages(Path.cwd()), results)
    changed = [page for page in rendered if page.changed]
    blocks = sum(page.blocks for page in rendered)
    if check:
        for page in changed:
            errors.print(f"[red]differs from its records:[/red] {page.path}", highlight=False)
        console.print(f"{blocks} blocks in {len(rendered)} pages; {len(changed)} differ", highlight=False)
        raise typer.Exit(1 if changed else 0)
    for page in changed:  # every block rendered before any page is written: a failing block writes nothing
        with atomic_write(page.path, "w") as stream:
            stream.write(page.after)
    console.print(f"{blocks} blocks in {len(rendered)} pages; rewrote {len(changed)}", highlight=False)
