"""`bench data check`: validate a dataset, preprocess it (filling the cache) and say what was found, left out and
split, and how much of each structure the preprocessing kept."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from rich.console import Console

from bench.data.dataset import dataset_class
from bench.data.inventory import LOSS_NAMED, Inventory, kept_summary
from bench.data.release import SPLITS, ReleaseDataset
from bench.errors import BenchError

SHOWN_IDS = 20  # ids named per structure by `bench data check`; records carry them all


def _say(console: Console, text: str) -> None:
    """One message, never re-wrapped (paths stay copyable) and not syntax-highlighted."""
    console.print(text, highlight=False, soft_wrap=True)


def _span(values, unit: str = "", digits: int = 0) -> str:
    low, high = min(values), max(values)
    return f"{low:.{digits}f}{unit}" if low == high else f"{low:.{digits}f}–{high:.{digits}f}{unit}"


def _percent(fraction: float) -> str:
    """A share as a percentage rounded down, so that only a structure kept whole reads 100.0 %."""
    return f"{math.floor(fraction * 1000 + 1e-9) / 10:.1f} %"


def _kept_lines(plugin: ReleaseDataset, inventory: Inventory) -> list[str]:
    """Per task: how many images the preprocessing cut the structure in, how much of it they kept, and which
    lost more than ``LOSS_NAMED`` of its pixels."""
    height, width = plugin.frame_size if any(plugin.frame_size) else inventory.shapes[0]
    lines = [f"  kept:      share of each structure's pixels inside the {height}×{width} frame, over the usable images"]
    for column, task in enumerate(plugin.tasks):
        summary = kept_summary(inventory.ids, inventory.kept[:, column])
        if not summary["cut"]:
            lines.append(f"             {task}: none of {summary['images']} images cut (100 % kept)")
            continue
        lines.append(
            f"             {task}: {summary['cut']} of {summary['images']} images cut; "
            f"kept min {_percent(summary['min'])}, median {_percent(summary['median'])} "
            f"({_percent(summary['median_of_cut'])} over the cut ones)"
        )
        lost = summary["lost_over_10pct"]
        if lost:
            more = len(lost) - SHOWN_IDS
            shown = ", ".join(lost[:SHOWN_IDS]) + (f", … ({more} more)" if more > 0 else "")
            lines.append(f"             {task}: {len(lost)} lost more than {LOSS_NAMED:.0%}: {shown}")
    return lines


def _geometry_lines(plugin: ReleaseDataset, inventory: Inventory) -> list[str]:
    shapes = np.array(inventory.shapes).reshape(-1, 2)
    rows, cols = inventory.source_shapes[:, 0], inventory.source_shapes[:, 1]
    spaced = ~np.isnan(inventory.spacings).any(axis=1)
    if spaced.all():
        spacing = _span(inventory.spacings.ravel(), " mm", 3)
        source = _span(inventory.source_spacings.ravel(), " mm", 3)
        spacing_line = f"  spacing:   {spacing} per pixel" + (f" (source {source})" if source != spacing else "")
    elif spaced.any():
        spacing_line = (
            f"  spacing:   {_span(inventory.spacings[spaced].ravel(), ' mm', 3)} per pixel on {spaced.sum()} "
            f"images; none recorded on {(~spaced).sum()} (their HD95 is in pixels)"
        )
    else:
        spacing_line = "  spacing:   none recorded: HD95 is in pixels"
    lines = [
        f"  size:      {_span(shapes[:, 0])}×{_span(shapes[:, 1])} after preprocessing "
        f"(source {_span(rows)} × {_span(cols)} px)",
        spacing_line,
        f"  preproc.:  {plugin.preprocessing}",
    ]
    if plugin.fixed_release:
        resampled = int((~np.isclose(inventory.spacings, inventory.source_spacings).all(axis=1)).sum())
        lines += [f"  resampled: {resampled} of {len(inventory.ids)} images", *_kept_lines(plugin, inventory)]
    return lines


def _task_lines(
    plugin: ReleaseDataset, inventory: Inventory, parts: dict[str, list[str]]
) -> tuple[list[str], list[str]]:
    """Per task of a user's dataset: its images per split and those left out for too few pixels (counted from
    the label maps at once, as ``load`` would keep them); and the tasks no image shows."""
    pixels = np.stack([np.bincount(labels.ravel(), minlength=256) for labels in inventory.labels])
    part_of = {sample_id: part for part in SPLITS for sample_id in parts[part]}
    in_split = np.array([part_of.get(sample_id, "") for sample_id in inventory.ids])
    lines, absent = [], []
    for task in plugin.tasks:
        value = plugin.task_labels[task]
        counts = pixels[:, list(value) if isinstance(value, (tuple, list)) else [value]].sum(axis=1)
        boxed = plugin.box_only_ids() & set(plugin.drawn_boxes(task)) if hasattr(plugin, "drawn_boxes") else set()
        boxes_only = np.isin(inventory.ids, sorted(boxed))  # images the box file alone labels
        member = (counts >= plugin.min_pixels) | boxes_only
        sizes = [int((member & (in_split == part)).sum()) for part in SPLITS]
        left_out = int((~member & (in_split != "")).sum())
        if not sum(sizes) or not member.any():
            absent.append(task)
            continue
        lines.append(
            f"             {task} (label {value}): "
            + ", ".join(f"{part} {size}" for part, size in zip(SPLITS, sizes, strict=True))
            + (f" ({int(boxes_only.sum())} of them with boxes only)" if boxes_only.any() else "")
            + (f"; {left_out} left out with fewer than {plugin.min_pixels} px of it" if left_out else "")
        )
    return lines, absent


def check(dataset: str, data_root: Path | None, console: Console) -> None:
    """Validate a dataset's layout, preprocess it (filling the cache) and print a summary.

    Raises BenchError (exit code 2) when it is missing, a split is empty or a task has no image.
    """
    found = dataset_class(dataset, data_root)
    if not issubclass(found, ReleaseDataset):
        _say(console, f"'{dataset}' is generated on the fly and needs no data; it is usable.")
        return
    plugin = found(data_root)  # a fresh read, which names every skipped file again
    name = plugin.name
    inventory = plugin.inventory()
    parts = plugin.split()
    usable = set(inventory.ids)
    sizes = {part: sum(1 for sample_id in parts[part] if sample_id in usable) for part in SPLITS}
    unit = "slices" if len(set(inventory.subjects)) < len(inventory.ids) else "images"
    lines = [
        f"[bold]{plugin.display_name}[/bold] ({name}) in {plugin.folder}",
        f"  found:     {inventory.found} {plugin.case_kind}",
        *(f"             {note}" for note in inventory.notes),
        f"  usable:    {len(inventory.ids)} {unit} of {len(set(inventory.subjects))} subjects",
    ]
    excluded = inventory.excluded_by_reason()
    lines.append(f"  excluded:  {sum(len(names) for names in excluded.values())}")
    for reason, names in sorted(excluded.items(), key=lambda item: -len(item[1])):
        shown = ", ".join(names[:4]) + (", …" if len(names) > 4 else "")
        lines.append(f"             {len(names)} {reason}: {shown}")
    if inventory.ids:
        lines += _geometry_lines(plugin, inventory)
    subjects = dict(zip(inventory.ids, inventory.subjects, strict=True))
    cases = {part: len({subjects[i] for i in parts[part] if i in usable}) for part in SPLITS}
    lines.append(
        "  split:     " + ", ".join(f"{part} {sizes[part]}" for part in SPLITS)
        + (f" {unit} of " + ", ".join(str(cases[part]) for part in SPLITS) + " cases" if unit == "slices" else "")
        + f"  ({plugin.split_file() if plugin.given_split() is None else plugin.folder / 'splits.json'})"
    )
    absent: list[str] = []
    if plugin.fixed_release:
        lines.append("  tasks:     " + ", ".join(f"{task} = label {plugin.task_labels[task]}" for task in plugin.tasks))
    else:
        task_lines, absent = _task_lines(plugin, inventory, parts)
        lines += ["  tasks:     images per split", *task_lines, f"  identity:  {plugin.identity()}"]
    lines.append(f"  cache:     {inventory.cache_file}" + (" (reused)" if inventory.from_cache else " (written)"))
    _say(console, "\n".join(lines))
    empty = [part for part in SPLITS if sizes[part] == 0]
    # images with boxes only and nothing to score: a dataset to train on (`bench train`), not to benchmark
    train_only = bool(empty) and "train" not in empty and bool(getattr(plugin, "description", {}).get("box_only"))
    if empty and not train_only:
        raise BenchError(f"{name} is not usable: no images in its {' and '.join(empty)} split")
    if absent:
        shown = ", ".join(absent)
        raise BenchError(f"{name}: no image shows {shown} (≥{plugin.min_pixels} px); leave it out of the labels")
    if train_only:
        _say(console, f"[green]{name} is usable to train (bench train)[/green]; with no images in its "
                      f"{' and '.join(empty)} split, a run scores nothing")  # fmt: skip
        return
    _say(console, f"[green]{name} is usable.[/green]")
