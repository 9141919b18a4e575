"""Training: :func:`train` (the engine behind `mriad train`), data-parallel under torchrun."""

from mriad.train.engine import FitResult, fit, train

__all__ = ["FitResult", "fit", "train"]
