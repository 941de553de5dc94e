"""medsam-bench: can MedSAM be made automatic with few, weak labels? A harness that runs every method
under the same loaders, label regimes, support sets, seeds and timers."""

from bench.data.dataset import load_task
from bench.data.samples import Sample, Task
from bench.registry import BACKBONES, DATASETS, METHODS

__all__ = ["BACKBONES", "DATASETS", "METHODS", "Sample", "Task", "load_task"]
__version__ = "0.1.0"
