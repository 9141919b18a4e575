"""Evaluation of anomaly maps: post-processing, thresholds, metrics, figures and the stage itself.

``from mriad.evaluate import evaluate`` runs the stage (see :mod:`mriad.evaluate.run`);
``score_shard`` and ``merge_shards`` run it as shards and their merge (:mod:`mriad.evaluate.sharded`,
:mod:`mriad.evaluate.merge`). The submodules are usable on their own with tensors on any device.
"""

from __future__ import annotations

from mriad.evaluate.merge import merge_shards
from mriad.evaluate.run import evaluate
from mriad.evaluate.sharded import score_shard
from mriad.evaluate.spec import EvalSpec
from mriad.evaluate.summary import EvalSummary

__all__ = ["EvalSpec", "EvalSummary", "evaluate", "merge_shards", "score_shard"]
