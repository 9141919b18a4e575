"""DDPM baseline of the pDDPM paper: the same network and diffusion, the whole slice noised.

It is pDDPM with a single box covering the slice (so L_p and L_rec coincide), which is exactly how
it is implemented: :class:`mriad.models.diffusion_model.DiffusionModel` with its default (full-slice) boxes.
Reconstruction is one network call per slice at t_test, with simplex noise by default (the paper's
DDPM baseline, after Wyatt et al. 2022).
"""

from __future__ import annotations

from typing import Any, ClassVar

from mriad.models.diffusion import DIFFUSION_DEFAULTS
from mriad.models.diffusion_model import DiffusionModel


class DDPM(DiffusionModel):
    name: ClassVar[str] = "ddpm"
    paper: ClassVar[str] = (
        "Baseline in Behrendt et al., MIDL 2023; simplex-noise DDPM after Wyatt et al.: AnoDDPM, CVPR Workshops 2022."
    )
    summary: ClassVar[str] = (
        "DDPM: the whole slice is noised at t and the network predicts the clean slice (L1); "
        "reconstruction is one network call per slice at t_test (not iterative sampling). Same network "
        "and defaults as pddpm (lr 1e-5 as in the paper; the reference code uses 1e-4)."
    )
    defaults: ClassVar[dict[str, Any]] = dict(DIFFUSION_DEFAULTS)
