"""The ``bench run`` commands that made an experiment's records: what was typed, when, its wall time and peak
memory, and how busy the machine was, one JSON line per command in ``results/<experiment>/commands.jsonl``.

A run record holds its own fit and inference seconds; what a reader planning compute asks is how long the
command took, loading and encoding included. That is measured here, so that a results page quotes it from this
log (``bench:command`` blocks) instead of a number copied from ``/usr/bin/time``.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import resource
import shlex
import sys
import time
from pathlib import Path

from bench.records.store import experiment_folder

COMMANDS_FILE = "commands.jsonl"


def commands_path(results: Path, experiment: str) -> Path:
    return experiment_folder(results, experiment) / COMMANDS_FILE


class CommandLog:
    """Started when a command starts; ``write`` appends its line once the command has done its work."""

    def __init__(self, results: Path, experiment: str) -> None:
        self.path = commands_path(results, experiment)
        self.started = dt.datetime.now(dt.timezone.utc)
        self._clock = time.perf_counter()
        self._load_before = os.getloadavg()[0]

    def write(self, outcome: dict[str, int]) -> dict:
        """Append this command's line (``outcome``: how many runs ended how) and return it."""
        own, children = (resource.getrusage(who).ru_maxrss / 1024 for who in
                         (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))  # fmt: skip
        entry = {
            "command": "bench " + shlex.join(sys.argv[1:]),
            "started": self.started.isoformat(timespec="seconds"),
            "wall_seconds": round(time.perf_counter() - self._clock, 1),
            # the largest resident set of this process and of any one process it started (pool workers)
            "peak_rss_mb": round(max(own, children), 1),
            "outcome": outcome,
            "cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
            "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
            # the 1-minute load average as the command started and ended: how busy the machine was beside it
            "load_average": [round(self._load_before, 2), round(os.getloadavg()[0], 2)],
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as stream:  # one short write per line: appends do not interleave
            stream.write(json.dumps(entry) + "\n")
        return entry


def logged_commands(results: Path, experiment: str) -> list[dict]:
    """Every logged command of the experiment, oldest first; none when nothing was logged."""
    path = commands_path(results, experiment)
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def duration_text(seconds: float) -> str:
    """``1 h 26 min 24 s``, ``45 min 41 s``, ``38 s``: a wall time as a reader says it."""
    whole = round(seconds)
    hours, minutes, rest = whole // 3600, whole % 3600 // 60, whole % 60
    parts = [f"{hours} h"] if hours else []
    if hours or minutes:
        parts.append(f"{minutes} min")
    return " ".join([*parts, f"{rest} s"])
