"""`bench data` (download, check a release) and `bench cache` (inspect, clear the embedding cache)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from bench.cli.common import DataRootOption, PluginOption, cache_app, console, data_app, load_plugins, user_errors


@data_app.command("download")
@user_errors
def data_download(
    dataset: Annotated[str, typer.Argument(help="hc18 (downloaded), camus or acdc (registration needed).")],
    data_root: DataRootOption = None,
) -> None:
    """Download HC18 (resumable, checksum-verified), or say how to get CAMUS and ACDC."""
    from bench.data import download

    download.download(dataset, data_root, console)


@data_app.command("check")
@user_errors
def data_check(
    dataset: Annotated[
        str, typer.Argument(help="A dataset name (hc18), nnunet:<folder>, folder:<folder>, or a dataset folder's path.")
    ],
    data_root: DataRootOption = None,
    plugin: PluginOption = None,
) -> None:
    """Validate a dataset and print what was found, excluded and split; exit 2 when it is not usable."""
    from bench.data.check import check

    load_plugins(plugin)
    check(dataset, data_root, console)


@data_app.command("make-demo")
@user_errors
def data_make_demo(
    data_root: DataRootOption = None,
    out: Annotated[
        Path | None, typer.Option(help="Folder to write (default: the package's own, which `hc18-demo` reads).")
    ] = None,
) -> None:
    """Re-make the HC18 subset shipped as `hc18-demo` (the main command's default) from the HC18 release."""
    from bench.datasets.hc18_demo import make_demo, shipped_folder

    folder = out or shipped_folder()
    with console.status("preprocessing HC18 and writing the subset"):
        counts = make_demo(data_root, folder)
    written = ", ".join(f"{count} {split}" for split, count in counts.items())
    console.print(f"wrote {written} images to {folder}", highlight=False)


@cache_app.command("info")
@user_errors
def cache_info() -> None:
    """Per backbone: how many image embeddings are cached and their size on disk."""
    from bench.sam.embedding_cache import cache_usage, embeddings_root

    usage = cache_usage()
    if not usage:
        console.print(f"no embeddings cached under {embeddings_root()}", highlight=False)
        return
    table = Table(title=f"Embedding cache: {embeddings_root()}")
    for column in ("backbone", "embeddings", "size on disk", "checkpoint × preprocessing versions"):
        table.add_column(column)
    for entry in usage:
        size = f"{entry.bytes / 2**20:.1f} MiB"
        table.add_row(entry.backbone, str(entry.embeddings), size, str(entry.variants))
    console.print(table)


@cache_app.command("clear")
@user_errors
def cache_clear(
    backbone: Annotated[str | None, typer.Option(help="Only this backbone (default: all).")] = None,
) -> None:
    """Delete cached image embeddings to free the disk; they are re-encoded when next needed."""
    from bench.sam.embedding_cache import clear_cache

    freed = clear_cache(backbone)
    count, size = sum(entry.embeddings for entry in freed), sum(entry.bytes for entry in freed)
    scope = f"backbone {backbone}" if backbone else "all backbones"
    console.print(f"removed {count} embeddings ({size / 2**20:.1f} MiB) of {scope}", highlight=False)

