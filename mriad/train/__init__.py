"""Training: :func:`train` (the engine behind `mriad train`), data-parallel under torchrun."""

from mriad.train.engine import FitResult, fit, train
from mriad.train.spec import TrainSpec

__all__ = ["FitResult", "TrainSpec", "fit", "train"]
