"""Several reconstructions per slice, one anomaly map: noise draws, noise levels, patch sizes.

Every diffusion model reconstructs a slice with one network call per box at ``t_test``. The options
here (model options, so ``mriad train --set`` records them and ``reconstruct`` uses them) ask for
more, all inside one reconstruct call on the slices already on the device:

``n_reconstructions``  N noise draws per ensemble member (0 = auto: 1, or 10 for Mahalanobis
                       scoring as in MHD's configuration).
``scoring``            ``residual`` |x - mean|, ``mahalanobis`` (MHD's pixel-wise distance of the
                       input to the member's N reconstructions, :mod:`mriad.models.scoring`) or
                       ``mahalanobis_residual`` (the distance times the residual).
``t_ensemble``         noise levels, e.g. ``250,500,750`` (cDDPM's noise ensemble); empty = t_test.
``patch_ensemble``     pDDPM only: patch sizes, e.g. ``32,48,60``; empty = patch_size.
``ensemble_average``   ``map``: one map per member (t x patch size), maps averaged (the pDDPM
                       ensemble); ``reconstruction``: all reconstructions averaged first, then
                       scored once (cDDPM's noise ensemble averages reconstructions).

Cost in network calls per slice: members x N x boxes per member (pDDPM 48 on 96 x 96: 4 boxes;
DDPM, cDDPM: 1). Members run in the order t_ensemble (outer) x patch_ensemble (inner), each drawing
fresh noise; the mean of all reconstructions is written as ``_rec``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from mriad.infra.errors import MriadError
from mriad.models.scoring import SCORINGS, mahalanobis_map

SCORING_DEFAULTS: dict[str, Any] = {
    "scoring": "residual",
    "n_reconstructions": 0,
    "mahalanobis_regularisation": 1e-2,
    "t_ensemble": (),
    "ensemble_average": "map",
}
PATCH_ENSEMBLE_DEFAULTS: dict[str, Any] = {"patch_ensemble": ()}
AVERAGES = ("map", "reconstruction")
MHD_RECONSTRUCTIONS = 10  # MHD's num_mc_samples default (src/models/DDPM_2D.py)


@dataclass(frozen=True)
class Member:
    """One ensemble member: a noise level (1-based, like t_test) and, for pDDPM, a patch size."""

    t_test: int
    patch_size: int | None = None


def _ints(value: Any, option: str, model: str) -> tuple[int, ...]:
    if value in (None, "", ()):
        return ()
    items = value.split(",") if isinstance(value, str) else value
    try:
        return tuple(int(v) for v in items if str(v).strip())
    except ValueError:
        raise MriadError(f"model {model}: {option} must be comma-separated integers, got {value!r}") from None


@dataclass(frozen=True)
class EnsemblePlan:
    members: tuple[Member, ...]
    n_reconstructions: int
    scoring: str
    regularisation: float
    average: str

    @classmethod
    def from_config(cls, config: dict[str, Any], model: str, patch_size: int | None = None) -> EnsemblePlan:
        scoring = str(config["scoring"])
        if scoring not in SCORINGS:
            raise MriadError(f"model {model}: scoring must be one of {', '.join(SCORINGS)}, got {scoring!r}")
        average = str(config["ensemble_average"])
        if average not in AVERAGES:
            raise MriadError(f"model {model}: ensemble_average must be one of {', '.join(AVERAGES)}, got {average!r}")
        n = int(config["n_reconstructions"]) or (MHD_RECONSTRUCTIONS if scoring != "residual" else 1)
        if scoring != "residual" and n < 2:
            raise MriadError(f"model {model}: scoring={scoring} needs n_reconstructions >= 2, got {n}")
        timesteps = int(config["timesteps"])
        levels = _ints(config["t_ensemble"], "t_ensemble", model) or (int(config["t_test"]),)
        for t in levels:
            if not 1 <= t <= timesteps:
                raise MriadError(f"model {model}: t_ensemble values must lie in 1..{timesteps}, got {t}")
        sizes: tuple[int | None, ...] = (None,)
        if patch_size is not None:
            sizes = _ints(config.get("patch_ensemble", ()), "patch_ensemble", model) or (patch_size,)
            if min(sizes) < 1:
                raise MriadError(f"model {model}: patch_ensemble sizes must be positive, got {sizes}")
        members = tuple(Member(t, p) for t in levels for p in sizes)
        return cls(members, n, scoring, float(config["mahalanobis_regularisation"]), average)

    def is_single(self) -> bool:
        """One reconstruction scored by its residual: what the model's plain reconstruct does."""
        return len(self.members) == 1 and self.n_reconstructions == 1 and self.scoring == "residual"

    def network_calls(self, boxes: Callable[[Member], int]) -> int:
        """Network calls per slice, given each member's box count."""
        return sum(boxes(m) for m in self.members) * self.n_reconstructions

    def run(
        self, x: torch.Tensor, reconstruct: Callable[[Member], torch.Tensor], mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(x_hat, score)`` for slices ``x`` ``(S, C, H, W)``; ``reconstruct(member)`` draws fresh noise per call.

        ``mask`` (brain, broadcastable to ``x``) limits the Mahalanobis covariance to brain pixels.
        """
        total = torch.zeros_like(x, dtype=torch.float32)
        maps = torch.zeros_like(total)
        pooled: list[torch.Tensor] = []
        for member in self.members:
            recs = torch.stack([reconstruct(member).float() for _ in range(self.n_reconstructions)])
            total += recs.sum(dim=0)
            if self.average == "map":
                maps += self._score(x.float(), recs, mask)
            else:
                pooled.append(recs)
        x_hat = total / (len(self.members) * self.n_reconstructions)
        if self.average == "map":
            return x_hat, maps / len(self.members)
        return x_hat, self._score(x.float(), torch.cat(pooled), mask)

    def _score(self, x: torch.Tensor, recs: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        residual = (x - recs.mean(dim=0)).abs()
        if self.scoring == "residual":
            return residual
        distance = mahalanobis_map(x, recs, mask, self.regularisation)
        return distance if self.scoring == "mahalanobis" else distance * residual
