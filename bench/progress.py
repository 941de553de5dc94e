"""The progress callback the harness hands long work: a plain pass-through when nobody draws a bar.

It lives apart from the method contract so that the embedding cache, the executors and the methods can all
take one without importing each other.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TypeVar

ItemT = TypeVar("ItemT")


def no_progress(iterable: Iterable[ItemT], total: int | None = None, description: str = "") -> Iterator[ItemT]:
    """Yield ``iterable`` unchanged: the progress callback of work nobody watches."""
    yield from iterable
