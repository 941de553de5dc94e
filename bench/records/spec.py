"""RunSpec: the frozen description of one run and its id; the budgets and splits a spec names."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field

from bench.data.samples import safe_name

BUDGETS = ("paper", "quick")
# where a run is scored: the test split (reported results) or the val split (model development, tuning)
EVAL_SPLITS = ("test", "val")
# The paper's protocol: 3 init seeds × 3 support draws for k-shot, 3 seeds for all data.
PAPER_SEEDS = (0, 1, 2)
PAPER_DRAWS = 3


def shots_label(shots: int | None) -> str:
    """How tables and frames write a number of training samples: the number, or "all"."""
    return "all" if shots is None else str(shots)


@dataclass(frozen=True)
class RunSpec:
    method: str
    dataset: str
    task: str
    labels: str
    shots: int | None  # None = all training images
    draw: int
    seed: int
    budget: str
    backbone: str | None = None  # None for methods that do not use the SAM backbone
    checkpoint: str | None = None
    overrides: tuple[tuple[str, object], ...] = field(default=())
    eval_split: str = "test"  # the split the run is scored on (EVAL_SPLITS)
    # a user dataset's content identity (``Dataset.identity``): other data, another run; None for fixed releases
    dataset_identity: str | None = None

    def canonical(self) -> dict:
        payload = asdict(self)
        payload["overrides"] = {key: value for key, value in sorted(self.overrides)}
        # the defaults stay out of the hash, so records written before these were choices keep their ids
        if self.eval_split == "test":
            del payload["eval_split"]
        if self.dataset_identity is None:
            del payload["dataset_identity"]
        return payload

    def canonical_json(self) -> str:
        return json.dumps(self.canonical(), sort_keys=True, separators=(",", ":"))

    @property
    def run_id(self) -> str:
        """Content hash of the canonical spec: the same run has the same id whatever the flag order."""
        digest = hashlib.sha256(self.canonical_json().encode()).hexdigest()[:12]
        shots = "all" if self.shots is None else f"k{self.shots}"
        split = "" if self.eval_split == "test" else f"_{self.eval_split}"
        dataset = safe_name(self.dataset)
        return f"{self.method}_{dataset}-{self.task}_{self.labels}_{shots}_d{self.draw}_s{self.seed}{split}_{digest}"

    @property
    def shots_label(self) -> str:
        return shots_label(self.shots)

    @classmethod
    def from_dict(cls, payload: dict) -> RunSpec:
        values = dict(payload)
        values["overrides"] = tuple(sorted((values.get("overrides") or {}).items()))
        return cls(**values)


@dataclass(frozen=True)
class PlannedRun:
    spec: RunSpec
    skip_reason: str | None = None
