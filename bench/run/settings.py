"""What every run of a grid shares, in one object the command builds once and hands down to the runs.

The settings travel, pickled, to pool workers and submitit jobs as the arguments of their run: no option goes
from one of our processes to another through the environment.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from bench.compute.device import DEFAULT_NUMERICS, Numerics, expected_precision, resolve_device, resolve_precision
from bench.data.resolved import DatasetPlugins
from bench.errors import BenchError


@dataclass(frozen=True)
class GridSettings:
    """Where a grid's records go (``results``/``experiment``), its datasets (resolved once, under one data root),
    the device and numerics its runs compute with, whether they keep their models (``--save-models``), and the
    ``--plugin`` files a fresh worker process loads again."""

    results: Path
    experiment: str
    datasets: DatasetPlugins = field(default_factory=DatasetPlugins, compare=False)
    device: str = "auto"
    numerics: Numerics = DEFAULT_NUMERICS
    save_models: bool = False
    plugins: tuple[Path, ...] = ()
    # SLURM: the kind of device ("cuda" or "cpu") the jobs compute on, which the node submitting them may lack;
    # None: the runs compute on this machine
    slurm_device_type: str | None = None

    @property
    def data_root(self) -> Path | None:
        return self.datasets.data_root

    def expected_precision(self) -> str | None:
        """The precision this grid's runs record, as far as this process can know it: None when a GPU it cannot
        see decides (a SLURM job's, asked for auto or tf32), or when the device is not here (the run then fails,
        and says why)."""
        if self.slurm_device_type is not None:
            return expected_precision(self.numerics.precision, self.slurm_device_type, "slurm")
        try:
            return resolve_precision(self.numerics.precision, resolve_device(self.device))
        except BenchError:
            return None

    def for_jobs(self) -> GridSettings:
        """These settings as a submitit job receives them: absolute paths (a SLURM job starts in whatever folder
        the cluster chooses), and the runs computing on the job's own machine."""
        root = self.data_root.resolve() if self.data_root is not None else None
        return dataclasses.replace(self, results=Path(self.results).resolve(), datasets=DatasetPlugins(root),
                                   slurm_device_type=None)  # fmt: skip
