"""Thresholding baseline: the normalised intensity itself is the anomaly score.

Meissen et al. showed that on T2/FLAIR, where most lesions are hyperintense, simply thresholding the
(preprocessed, [0, 1]-normalised) intensity is a strong baseline for anomaly segmentation. Here it
needs no training: the threshold is chosen on the validation split exactly as for every other
model, so the comparison in Table 1 is like for like.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from mriad.models.base import AnomalyModel


class Thresh(AnomalyModel):
    """No parameters. ``reconstruct`` returns zeros, so the residual |x - 0| is the intensity x."""

    name: ClassVar[str] = "thresh"
    paper: ClassVar[str] = (
        "Meissen, Kaissis, Rueckert. Challenging current semi-supervised anomaly segmentation methods "
        "for brain MRI. BrainLes (MICCAI workshop), LNCS 12962, 2022."
    )
    summary: ClassVar[str] = (
        "Intensity thresholding: score = normalised intensity (hyperintense lesions on T2/FLAIR); the "
        "threshold comes from the validation split like every model. No training."
    )
    defaults: ClassVar[dict[str, Any]] = {}
    trainable: ClassVar[bool] = False

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return torch.zeros_like(x)

    def anomaly_score(self, x: torch.Tensor, x_hat: torch.Tensor) -> torch.Tensor:
        return x.clone()

    def training_loss(self, batch: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Nothing to learn; a constant zero keeps generic code paths (validation) working."""
        return batch.new_zeros(())

    def max_batch(self, height: int, width: int, memory_bytes: int | None = None) -> int:
        return 4096
