"""pDDPM (Behrendt et al., MIDL 2023): a DDPM whose forward process noises only a box of the slice.

Training: per slice, pick a box (a random box of the fixed grid, or a uniformly random position),
noise the box with q(x_t | x0) at a random t, keep the rest of the slice clean as context, predict
the clean slice x0, L1 loss on the box (``loss=patch``, L_p, the paper's best) or the whole slice
(``loss=full``, L_rec).

The loss on the box is averaged over the box (``loss_normalisation=box``, mriad's default) or over
the whole slice as the reference code does (``image``: ps^2 / (H W) of the box average, x0.25 for
48-pixel boxes on 96x96 slices).

Reconstruction: ONE network call per box of a fixed grid at t_test, overlaps averaged. The shared
machinery (noising, batched reconstruction, the runtime) is :class:`DiffusionModel` in
:mod:`mriad.models.diffusion_model`; this class only decides the boxes.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from mriad.infra.errors import MriadError
from mriad.models.diffusion import DIFFUSION_DEFAULTS, LOSS_NORMALISATIONS, draw_device
from mriad.models.diffusion_model import CHANNEL_DEFAULTS, DiffusionModel
from mriad.models.ensemble import PATCH_ENSEMBLE_DEFAULTS, SCORING_DEFAULTS, Member
from mriad.models.patches import grid_boxes, random_boxes


class PatchedDDPM(DiffusionModel):
    name: ClassVar[str] = "pddpm"
    paper: ClassVar[str] = (
        "Behrendt, Bhattacharya, Krüger, Opfer, Schlaefer: Patched Diffusion Models for Unsupervised "
        "Anomaly Detection in Brain MRI. MIDL 2023 (PMLR 227)."
    )
    summary: ClassVar[str] = (
        "Patched DDPM: the forward process noises one box of the slice, the clean rest is context; "
        "the network predicts the clean slice (L1). Reconstruction noises and denoises a grid of boxes "
        "at t_test in ONE network call each and averages overlaps. Defaults follow the paper (lr 1e-5; "
        "the reference code trains with lr 1e-4 and a cosine schedule: --lr 1e-4 --schedule cosine). "
        "Scoring and ensembles (network calls per slice = boxes x members x n_reconstructions): "
        "--set scoring=mahalanobis (MHD, Behrendt et al., MICCAI 2024; 10 noise draws by default), "
        "--set patch_ensemble=32,48,60 --set t_ensemble=250,500,750 (maps averaged)."
    )
    defaults: ClassVar[dict[str, Any]] = {
        "patch_size": 48,
        "patch_sampling": "fixed",
        "loss": "patch",
        "loss_normalisation": "box",
        **DIFFUSION_DEFAULTS,
        **SCORING_DEFAULTS,
        **PATCH_ENSEMBLE_DEFAULTS,
        **CHANNEL_DEFAULTS,
    }
    test_time_options: ClassVar[tuple[str, ...]] = (*DiffusionModel.test_time_options, *PATCH_ENSEMBLE_DEFAULTS)

    def __init__(self, **config: Any):
        super().__init__(**config)
        self._check_choice("patch_sampling", ("fixed", "random"))
        self._check_choice("loss", ("patch", "full"))
        self._check_choice("loss_normalisation", LOSS_NORMALISATIONS)
        if int(self.config["patch_size"]) < 1:
            raise MriadError(f"model {self.name}: patch_size must be positive, got {self.config['patch_size']}")

    def grid(self, height: int, width: int) -> torch.Tensor:
        return grid_boxes(height, width, int(self.config["patch_size"]))

    def member_grid(self, height: int, width: int, member: Member | None) -> torch.Tensor:
        if member is None or member.patch_size is None:
            return self.grid(height, width)
        return grid_boxes(height, width, member.patch_size)

    def ensemble_patch_size(self) -> int | None:
        return int(self.config["patch_size"])

    def training_boxes(
        self, n: int, height: int, width: int, generator: torch.Generator | None, device: Any
    ) -> torch.Tensor:
        patch = int(self.config["patch_size"])
        if self.config["patch_sampling"] == "random":
            return random_boxes(n, height, width, patch, generator, device)
        grid = self.grid(height, width).to(device)
        pick = torch.randint(0, grid.shape[0], (n,), generator=generator, device=draw_device(generator, device))
        return grid[pick.to(device)]

    def patch_loss(self) -> bool:
        return self.config["loss"] == "patch"

    def loss_normalisation(self) -> str:
        return str(self.config["loss_normalisation"])
