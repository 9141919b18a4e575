"""Pools of voxels kept as counts per distinct score: what a shard of an evaluation keeps of its voxels.

The pooled numbers of a split (AUPRC and oracle Dice over every lesion volume's voxels, the FPR
thresholds over every healthy brain voxel) depend on the voxels only through how many of them, and
how many lesion voxels, carry each distinct score: the PR curve and the Dice curve are read at the
ends of runs of equal scores, and a quantile is an order statistic. A shard of `evaluate` keeps these
counts for its subjects (12-20 bytes per distinct score instead of the maps), the merge adds the
shards' counts, and the numbers computed from the sum are the numbers computed from the voxels of the
whole split, to the last bit (:func:`~mriad.evaluate.metrics.precision_recall_from_counts`,
:meth:`~mriad.evaluate.threshold.SortedPool.from_counts`,
:func:`~mriad.evaluate.threshold.fpr_thresholds_from_counts`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from mriad.evaluate import metrics as M
from mriad.evaluate.threshold import SortedPool, exact_threshold, fpr_thresholds_from_counts


@dataclass
class CountedPool:
    """Distinct scores (float32, ascending) with the number of voxels and of lesion voxels at each."""

    values: torch.Tensor
    totals: torch.Tensor
    hits: torch.Tensor

    @classmethod
    def of(cls, scores: torch.Tensor, labels: torch.Tensor | None = None) -> CountedPool:
        """The pool of ``scores`` (any shape); ``labels`` marks lesion voxels (None: none is)."""
        flat = scores.reshape(-1).to(torch.float32)
        values, inverse = torch.unique(flat, sorted=True, return_inverse=True)
        totals = torch.bincount(inverse, minlength=values.numel())
        if labels is None:
            hits = torch.zeros_like(totals)
        else:
            hits = torch.bincount(inverse[labels.reshape(-1).to(torch.bool)], minlength=values.numel())
        return cls(values, totals.to(torch.int64), hits.to(torch.int64))

    @classmethod
    def merge(cls, pools: Sequence[CountedPool], device: torch.device | str = "cpu") -> CountedPool:
        """One pool holding the voxels of all ``pools``."""
        values = torch.cat([pool.values.to(device) for pool in pools])
        distinct, inverse = torch.unique(values, sorted=True, return_inverse=True)

        def add(counts: list[torch.Tensor]) -> torch.Tensor:
            total = torch.zeros(distinct.numel(), dtype=torch.int64, device=distinct.device)
            return total.index_add_(0, inverse, torch.cat([c.to(device) for c in counts]))

        return cls(distinct, add([p.totals for p in pools]), add([p.hits for p in pools]))

    def __len__(self) -> int:
        return int(self.values.numel())

    @property
    def positives(self) -> int:
        return int(self.hits.sum())

    def curve(self, max_points: int | None = None) -> M.PRCurve:
        """The pool's PR curve and AUPRC (:func:`mriad.evaluate.metrics.precision_recall_curve`)."""
        return M.precision_recall_from_counts(self.hits.flip(0), self.totals.flip(0), max_points)

    def oracle_dice(self) -> float | None:
        """The best pooled Dice of any one threshold (:func:`mriad.evaluate.measures.pooled_oracle_dice`)."""
        if not self.positives:
            return None
        pool = SortedPool.from_counts(self.values.flip(0), self.hits.flip(0), self.totals.flip(0))
        return exact_threshold(torch.empty(0), torch.empty(0), pool=pool).dice

    def fpr_thresholds(self, rates: tuple[float, ...]) -> dict[str, float]:
        """The thresholds flagging each rate of the pool's voxels (:func:`~mriad.evaluate.threshold.fpr_thresholds`)."""
        return fpr_thresholds_from_counts(self.values, self.totals, rates)

    def arrays(self, prefix: str) -> dict[str, np.ndarray]:
        """The pool as arrays for an ``.npz`` file (counts as int32 when they fit)."""
        fits = not len(self) or int(self.totals.max()) < np.iinfo(np.int32).max
        kind = np.int32 if fits else np.int64
        return {
            f"{prefix}.values": self.values.cpu().numpy(),
            f"{prefix}.totals": self.totals.cpu().numpy().astype(kind),
            f"{prefix}.hits": self.hits.cpu().numpy().astype(kind),
        }

    @classmethod
    def from_arrays(cls, data: Mapping[str, np.ndarray], prefix: str) -> CountedPool | None:
        """The pool stored by :meth:`arrays` under ``prefix``; None when there is none."""
        if f"{prefix}.values" not in data:
            return None
        return cls(
            torch.from_numpy(np.asarray(data[f"{prefix}.values"], dtype=np.float32)),
            torch.from_numpy(np.asarray(data[f"{prefix}.totals"], dtype=np.int64)),
            torch.from_numpy(np.asarray(data[f"{prefix}.hits"], dtype=np.int64)),
        )
