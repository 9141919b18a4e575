"""Evaluation of anomaly maps: post-processing, thresholds, metrics, figures and the stage itself.

``from mriad.evaluate import evaluate`` runs the stage (see :mod:`mriad.evaluate.run`); the
submodules are usable on their own with tensors on any device.
"""

from __future__ import annotations

from mriad.evaluate.run import evaluate
from mriad.evaluate.spec import EvalSpec
from mriad.evaluate.summary import EvalSummary

__all__ = ["EvalSpec", "EvalSummary", "evaluate"]
