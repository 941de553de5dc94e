"""Claims: which process is doing a piece of work (a run, an image encoding) in a folder others share.

A claim is a small JSON file made by an exclusive create (``O_CREAT | O_EXCL``), the one primitive that holds
on network file systems where ``fcntl`` locks often do not. It names its owner (host, process id, start time)
and carries a heartbeat: its modification time, refreshed by one thread of the owning process while the
work runs. A claim is free again when its owner releases it (deletes it), or stale when its owner is gone:
a dead process on this host, or a heartbeat older than ``STALE_SECONDS`` (the owner's machine died or lost
the file system). Taking over a stale claim is serialised by a second exclusive file, ``<claim>.takeover``,
so two processes that judge the same claim stale never both take it.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path

from bench.paths import process_alive

SUFFIX = ".claim"
# the owner refreshes the heartbeat this often, in seconds
HEARTBEAT_SECONDS = 30.0
# a claim whose heartbeat is older than this, in seconds, is stale whoever holds it: ten missed beats, and
# room for the clocks of machines sharing a file system to disagree by a few minutes
STALE_SECONDS = 300.0
# a takeover lock lives for milliseconds; one older than this belongs to a process that died in between
_TAKEOVER_STALE_SECONDS = 60.0


@dataclass(frozen=True)
class Holder:
    """The owner of a claim as read from its file; ``host``/``pid`` are None while it is still being written."""

    host: str | None
    pid: int | None
    started: str | None
    token: str | None
    heartbeat_age: float = field(compare=False)
    details: dict = field(default_factory=dict, compare=False)

    @property
    def stale(self) -> bool:
        if self.heartbeat_age > STALE_SECONDS:
            return True
        return self.host == socket.gethostname() and self.pid is not None and not process_alive(self.pid)

    def describe(self) -> str:
        if self.host is None:
            return "a process not named in its claim yet"
        since = self.started.replace("T", " ").removesuffix("+00:00") + " UTC" if self.started else "?"
        return f"{self.host} pid {self.pid} since {since}"


@dataclass(frozen=True)
class Claim:
    """A claim this process holds; ``taken_from`` is the stale owner it replaced, if any."""

    path: Path
    token: str
    taken_from: Holder | None = None


class _Heartbeat:
    """One daemon thread per process refreshing the modification time of every claim the process holds."""

    def __init__(self) -> None:
        self.paths: set[Path] = set()
        self.lock = threading.Lock()
        self.thread: threading.Thread | None = None

    def add(self, path: Path) -> None:
        with self.lock:
            self.paths.add(path)
            if self.thread is None or not self.thread.is_alive():
                self.thread = threading.Thread(target=self._beat, name="claim-heartbeat", daemon=True)
                self.thread.start()

    def discard(self, path: Path) -> None:
        with self.lock:
            self.paths.discard(path)

    def _beat(self) -> None:
        while True:
            time.sleep(HEARTBEAT_SECONDS)
            with self.lock:
                held = list(self.paths)
            for path in held:
                try:
                    os.utime(path)
                except OSError:  # released meanwhile, or the file system is away: the next beat tries again
                    continue


_heartbeat = _Heartbeat()


def _create(path: Path, details: dict) -> str:
    """Create ``path`` exclusively with this process as owner; returns its token. FileExistsError if it exists."""
    token = uuid.uuid4().hex
    owner = {"host": socket.gethostname(), "pid": os.getpid(), "token": token,
             "started": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), **details}  # fmt: skip
    path.parent.mkdir(parents=True, exist_ok=True)
    # mode 0o666 as open() uses: the umask (or the folder's default ACL) decides who else may read it
    handle = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    with os.fdopen(handle, "w") as stream:
        json.dump(owner, stream)
    return token


def read_holder(path: Path) -> Holder | None:
    """The owner of the claim at ``path``, or None when there is no claim."""
    try:
        age = time.time() - path.stat().st_mtime
        text = path.read_text()
    except (FileNotFoundError, NotADirectoryError):
        return None
    except (OSError, UnicodeDecodeError):  # e.g. another user's claim this user may not read
        text = ""
    try:
        owner = json.loads(text)
    except json.JSONDecodeError:  # created, its owner not written yet (or unreadable): known by its age alone
        owner = {}
    if not isinstance(owner, dict):
        owner = {}
    pid = owner.get("pid")
    return Holder(owner.get("host"), pid if isinstance(pid, int) else None, owner.get("started"),
                  owner.get("token"), max(age, 0.0), owner)  # fmt: skip


def acquire(path: Path, details: dict | None = None) -> Claim | Holder:
    """Claim ``path`` for this process (a Claim, heartbeat running), or the live Holder that has it.

    ``details`` (JSON values) are stored in the claim for whoever reads it, e.g. the spec of a run.
    """
    path = Path(path)
    details = details or {}
    while True:
        try:
            token = _create(path, details)
        except FileExistsError:
            holder = read_holder(path)
            if holder is None:  # released between our create and our read: try again
                continue
            if not holder.stale:
                return holder
            outcome = _take_over(path, holder, details)
            if outcome is None:  # the stale claim went away meanwhile: try again
                continue
            return outcome
        _heartbeat.add(path)
        return Claim(path, token)


def _take_over(path: Path, stale: Holder, details: dict) -> Claim | Holder | None:
    """Replace the stale claim ``stale`` at ``path``, under the takeover lock. None: try the claim again."""
    lock = path.with_name(path.name + ".takeover")
    try:
        _create(lock, {})
    except FileExistsError:
        locker = read_holder(lock)
        if locker is None:  # unlocked meanwhile
            return None
        if locker.stale or locker.heartbeat_age > _TAKEOVER_STALE_SECONDS:
            lock.unlink(missing_ok=True)  # its owner died between lock and unlock
            return None
        return locker  # another process is taking the claim over right now
    try:
        current = read_holder(path)
        if current is not None and current.token != stale.token:
            return current if not current.stale else None  # replaced since we read it
        path.unlink(missing_ok=True)
        try:
            token = _create(path, details)
        except FileExistsError:  # a plain acquire got in after the unlink: it holds the claim
            return read_holder(path) or None
    finally:
        lock.unlink(missing_ok=True)
    _heartbeat.add(path)
    return Claim(path, token, taken_from=stale)


def release(claim: Claim) -> None:
    """Give ``claim`` up: stop its heartbeat and delete it, unless another process took it over meanwhile."""
    _heartbeat.discard(claim.path)
    holder = read_holder(claim.path)
    if holder is not None and holder.token == claim.token:
        claim.path.unlink(missing_ok=True)


def live_holder(path: Path) -> Holder | None:
    """Who holds the claim at ``path``, or None when it is free or stale (anyone may take it)."""
    holder = read_holder(path)
    return None if holder is None or holder.stale else holder


def clear_stale(path: Path) -> bool:
    """Remove the claim at ``path`` if its owner is gone (a claim someone holds stays); whether it did."""
    holder = read_holder(path)
    if holder is None or not holder.stale:
        return False
    outcome = acquire(path)  # takes the stale claim over safely, even if others try at the same time
    if isinstance(outcome, Claim):
        release(outcome)
    return isinstance(outcome, Claim)


def remove_stale(folder: Path, spared: Collection[str] = ()) -> int:
    """Remove the claims and takeover locks in ``folder`` whose owners are gone, except the claims named in
    ``spared`` (to be taken over by name); returns how many claims."""
    stale = [path for path in Path(folder).glob(f"*{SUFFIX}") if path.name.removesuffix(SUFFIX) not in spared]
    removed = sum(clear_stale(path) for path in stale)
    for lock in Path(folder).glob(f"*{SUFFIX}.takeover"):
        locker = read_holder(lock)
        if locker is not None and (locker.stale or locker.heartbeat_age > _TAKEOVER_STALE_SECONDS):
            lock.unlink(missing_ok=True)
    return removed


def live_holders(folder: Path) -> dict[str, Holder]:
    """Claim name (file name without ``.claim``) → holder, for every live claim in ``folder``."""
    holders = {}
    for path in sorted(Path(folder).glob(f"*{SUFFIX}")):
        holder = live_holder(path)
        if holder is not None:
            holders[path.name.removesuffix(SUFFIX)] = holder
    return holders
