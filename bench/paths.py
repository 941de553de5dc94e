"""Where the tool keeps data and caches: environment variables first, then a per-user folder."""

from __future__ import annotations

import os
import secrets
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO


def _user_cache_home() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")


def cache_dir() -> Path:
    """Root of every cache the harness owns (embeddings, support sets): `$BENCH_CACHE` or ~/.cache/medsam-bench."""
    return Path(os.environ.get("BENCH_CACHE") or _user_cache_home() / "medsam-bench")


@contextmanager
def environment_variable(name: str, value: str) -> Iterator[None]:
    """Set environment variable ``name`` to ``value`` inside the block; restore (or remove) it afterwards."""
    previous = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if previous is None:
            del os.environ[name]
        else:
            os.environ[name] = previous


def default_data_root() -> Path:
    """Where dataset releases are looked for: `$BENCH_DATA` or ~/.cache/medsam-bench/data."""
    return Path(os.environ.get("BENCH_DATA") or cache_dir() / "data")


@contextmanager
def atomic_write(path: Path, mode: str = "wb", fsync: bool = False) -> Iterator[IO]:
    """A stream to a temporary file beside ``path``, renamed onto ``path`` when the block succeeds.

    No reader ever sees half a file; on any failure (an interrupt too) the old file, if any, stays and the
    temporary is removed. ``fsync`` makes the data durable before the rename (records), at a cost per file.
    The file gets the permissions ``open()`` would give it (the umask, or the folder's default ACL), so a
    results folder or cache shared by a group stays readable by the group.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = _create_temporary(path)
    try:
        with os.fdopen(handle, mode) as stream:
            yield stream
            if fsync:
                stream.flush()
                os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _create_temporary(path: Path) -> tuple[int, str]:
    """An exclusively created ``.<name>.<host>-<pid>.<random>.tmp`` beside ``path``: its descriptor and name.

    Not ``tempfile.mkstemp``, which creates 0600 files whatever the umask. The name says which process writes
    it: one killed with SIGKILL cannot remove its own temporary, and ``remove_stale_temporaries`` then knows
    which are orphans (host and process id, so a shared file system used by jobs on other machines is left
    alone).
    """
    while True:
        temporary = str(path.parent / f".{path.name}.{_host()}-{os.getpid()}.{secrets.token_hex(4)}.tmp")
        try:
            return os.open(temporary, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o666), temporary
        except FileExistsError:
            continue


def _host() -> str:
    return socket.gethostname().replace(".", "_")  # the dots of the file name separate its parts


def remove_stale_temporaries(folder: Path) -> int:
    """Delete the temporary files in ``folder`` left by killed processes of this machine; returns how many."""
    removed = 0
    host = _host()
    for temporary in Path(folder).glob(".*.tmp"):
        writer = temporary.name.rsplit(".", 3)
        if len(writer) != 4:
            continue
        writer_host, _, pid = writer[1].rpartition("-")
        if writer_host == host and pid.isdigit() and not process_alive(int(pid)):
            temporary.unlink(missing_ok=True)
            removed += 1
    return removed


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` of this machine still runs; a zombie (exited, not yet reaped) has ended."""
    if Path("/proc/self/stat").exists():
        try:
            return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
        except (OSError, IndexError):
            return False
    try:  # no /proc: ask the process table
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, under another user
        return True
    return True
