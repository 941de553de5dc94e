"""The seed paper's Table 1, the numbers our front page and docs set beside ours.

"Automating MedSAM by Learning Prompts with Weak Few-Shot Supervision", MICCAI Workshop on
Foundation Models for General Medical AI, 2024, Table 1: Dice × 100 on the test split, mean ± std over their
runs where the paper gives a std. They use MedSAM ViT-B (SAM ViT-H for PerSAM) on a GPU; the prompt module
learns from boxes, every other trained method from masks, PerSAM from one mask, MedSAM is prompted with the
true box. These are the only hand-typed results of the project: they come from a PDF, not from a record.
"""

from __future__ import annotations

from dataclasses import dataclass

from bench.errors import BenchError

TRAINING_FREE = "–"  # the shots key of a row that trains on nothing (MedSAM with the box)


@dataclass(frozen=True)
class PaperResult:
    mean: float
    std: float | None = None

    def text(self) -> str:
        return f"{self.mean:.2f}" if self.std is None else f"{self.mean:.2f} ± {self.std:.2f}"


# The paper's Table 1 as it prints it: a row per method and k, a column per dataset and structure (our task
# names), "mean" or "mean ± std", "–" where the paper has no number
_PRINTED = """
method        | shots | hc18 head    | acdc rv      | acdc lv      | camus LV | camus LA
medsam-box    | –     | 95.19        | 93.78        | 95.45        | 94.50    | 89.23
unet          | 10    | 61.79        | 40.85 ± 1.66 | 59.96 ± 0.91 | 75.09    | 46.29
transunet     | 10    | 92.15        | 68.69 ± 0.58 | 78.98 ± 1.36 | 87.32    | 66.51
autosam       | 10    | 90.64        | 68.33 ± 3.21 | 84.17 ± 2.05 | 86.98    | 67.09
persam        | 1     | 58.98        | 27.64 ± 9.48 | 45.43 ± 5.47 | 36.13    | 14.19
prompt-module | 10    | 85.23 ± 0.55 | 58.96 ± 2.28 | 80.37 ± 1.59 | 88.38    | 73.56
unet          | all   | 86.53        | –            | –            | 89.93    | 74.77
transunet     | all   | 96.32        | –            | –            | 92.92    | 85.04
autosam       | all   | 97.42        | –            | –            | –        | –
prompt-module | all   | 92.88        | –            | –            | 88.86    | 79.82
"""


def _parsed(printed: str) -> dict[tuple[str, str, str, str], PaperResult]:
    lines = [[cell.strip() for cell in line.split("|")] for line in printed.strip().splitlines()]
    columns = [column.split(" ") for column in lines[0][2:]]
    table = {}
    for method, shots, *cells in lines[1:]:
        for (dataset, task), cell in zip(columns, cells, strict=True):
            if cell != TRAINING_FREE:
                mean, _, std = cell.partition(" ± ")
                table[(method, shots, dataset, task)] = PaperResult(float(mean), float(std) if std else None)
    return table


# (method, shots, dataset, task) → the paper's number
TABLE1: dict[tuple[str, str, str, str], PaperResult] = _parsed(_PRINTED)
DATASETS = ("hc18", "acdc", "camus")
# the labels each of the paper's methods learns from (MedSAM: is prompted with): a row of ours with other labels
# (UNet on boxes, the prompt module on masks, noisy boxes) has no number of the paper beside it
PAPER_LABELS = {"medsam-box": "box", "unet": "mask", "transunet": "mask", "autosam": "mask", "persam": "mask",
                "prompt-module": "box"}  # fmt: skip


def paper_result(method: str, dataset: str, task: str, shots: str = TRAINING_FREE) -> PaperResult | None:
    """The paper's number for a row, or None where its Table 1 has none (a method or k it did not run)."""
    return TABLE1.get((method, shots, dataset, task)) or TABLE1.get((method, TRAINING_FREE, dataset, task))


def require_paper_result(method: str, dataset: str, task: str, shots: str = TRAINING_FREE) -> PaperResult:
    found = paper_result(method, dataset, task, shots)
    if found is None:
        raise BenchError(f"the paper's Table 1 has no {method} at k = {shots} on {dataset} {task}")
    return found


def paper_for_row(method: str, labels: str, shots: str, dataset: str, task: str) -> PaperResult | None:
    """The paper's number beside a Table 1 row of ours (``shots``: ``TRAINING_FREE`` for a training-free row) on
    the paper's ``dataset``, or None where the paper ran no such row (another k, other labels)."""
    if PAPER_LABELS.get(method) != labels:
        return None
    return paper_result(method, dataset, task, shots)


def parse_stand_ins(text: str, where: str) -> dict[str, str]:
    """``our-dataset=paper-dataset,…`` (our datasets that stand in for one of the paper's: a resized copy of
    CAMUS for ``camus``) as a mapping; ``where`` names the option or block in the error."""
    pairs = [pair.rpartition("=") for pair in text.split(",") if pair]
    mapping = {ours: paper for ours, _, paper in pairs}
    unknown = sorted(set(mapping.values()) - set(DATASETS))
    if unknown or any(not ours for ours in mapping):
        raise BenchError(f"{where} maps our datasets to {', '.join(DATASETS)}: OURS=PAPER,…")
    return mapping
