"""Evaluation of multi-channel runs: 4D images and reconstructions, 3D maps (the channel mean)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from mriad.evaluate import metrics as M
from mriad.evaluate.measures import residual_scores
from mriad.evaluate.volumes import SplitVolumes, reference_channel

SHAPE = (6, 5, 4)


def _volumes(overshoot: bool) -> SplitVolumes:
    generator = torch.Generator().manual_seed(0)
    image = torch.rand(2, *SHAPE, 2, generator=generator)
    rec = torch.rand(2, *SHAPE, 2, generator=generator)
    if overshoot:
        rec[0, 0, 0, 0, 1] = 1.5  # a reconstruction voxel outside [0, 1]
    mask = torch.ones(2, *SHAPE, dtype=torch.bool)
    mask[:, 0] = False
    return SplitVolumes(
        rows=pd.DataFrame({"subject_id": ["a", "b"], "label": [1, 1]}),
        image=image,
        reconstruction=rec,
        score=(image - rec).abs().mean(-1),
        mask=mask,
        seg=torch.zeros(2, *SHAPE, dtype=torch.bool),
        affine=np.eye(4),
    )


def test_l1_of_a_multichannel_volume_is_the_channel_mean_inside_the_brain() -> None:
    volumes = _volumes(overshoot=False)
    l1 = M.mean_abs_inside(volumes.image, volumes.reconstruction, volumes.mask)
    diff = (volumes.image - volumes.reconstruction).abs().mean(-1).double()
    expected = torch.stack([diff[b][volumes.mask[b]].mean() for b in range(2)])
    torch.testing.assert_close(l1, expected)


def test_clamp_recomputes_the_channel_mean_residual_from_the_clipped_reconstruction() -> None:
    volumes = _volumes(overshoot=True)
    scores, report = residual_scores(volumes, clamp=True)
    assert (report.voxels_outside, report.volumes_recomputed, report.volumes_not_residual) == (1, 1, 0)
    expected = (volumes.image[0] - volumes.reconstruction[0].clamp(0, 1)).abs().mean(-1)
    assert torch.equal(scores[0], expected) and torch.equal(scores[1], volumes.score[1])
    assert float(scores[0][0, 0, 0]) < float(volumes.score[0][0, 0, 0])  # the overshoot no longer counts


def test_figures_show_the_first_channel() -> None:
    volumes = _volumes(overshoot=False)
    assert torch.equal(reference_channel(volumes.image), volumes.image[..., 0])
    assert reference_channel(volumes.score) is volumes.score
