"""Ensemble plans: members, averaging of maps or reconstructions, option checks."""

from __future__ import annotations

import pytest
import torch

from mriad.infra.errors import MriadError
from mriad.models.ensemble import PATCH_ENSEMBLE_DEFAULTS, SCORING_DEFAULTS, EnsemblePlan, Member
from mriad.models.scoring import mahalanobis_map


def _config(**changes: object) -> dict[str, object]:
    return {**SCORING_DEFAULTS, **PATCH_ENSEMBLE_DEFAULTS, "timesteps": 1000, "t_test": 500, **changes}


def test_default_plan_is_the_single_reconstruction() -> None:
    plan = EnsemblePlan.from_config(_config(), "ddpm")
    assert plan.members == (Member(500),) and plan.n_reconstructions == 1 and plan.is_single()
    assert plan.network_calls(lambda m: 1) == 1
    mhd = EnsemblePlan.from_config(_config(scoring="mahalanobis"), "ddpm")
    assert mhd.n_reconstructions == 10 and not mhd.is_single()  # MHD's default number of samples


def test_grid_of_patch_sizes_and_noise_levels() -> None:
    config = _config(t_ensemble="250,500,750", patch_ensemble=("32", "48"), n_reconstructions="2")
    plan = EnsemblePlan.from_config(config, "pddpm", patch_size=48)
    assert [(m.t_test, m.patch_size) for m in plan.members] == [
        (250, 32),
        (250, 48),
        (500, 32),
        (500, 48),
        (750, 32),
        (750, 48),
    ]
    assert plan.network_calls(lambda m: 4 if m.patch_size == 48 else 9) == 3 * (4 + 9) * 2


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"scoring": "ssim"}, "scoring must be one of"),
        ({"scoring": "mahalanobis", "n_reconstructions": 1}, "needs n_reconstructions >= 2"),
        ({"t_ensemble": "0,500"}, "t_ensemble values must lie in 1..1000"),
        ({"t_ensemble": "a"}, "comma-separated integers"),
        ({"ensemble_average": "median"}, "ensemble_average must be one of"),
    ],
)
def test_bad_options_are_refused(changes: dict[str, object], message: str) -> None:
    with pytest.raises(MriadError, match=message):
        EnsemblePlan.from_config(_config(**changes), "ddpm")


def _fake(x: torch.Tensor) -> tuple[list[Member], object]:
    calls: list[Member] = []
    g = torch.Generator().manual_seed(0)

    def reconstruct(member: Member) -> torch.Tensor:
        calls.append(member)
        return x + member.t_test / 1000 + 0.01 * torch.randn(x.shape, generator=g)

    return calls, reconstruct


def test_map_average_scores_each_member_then_averages() -> None:
    x = torch.rand(2, 1, 6, 6, generator=torch.Generator().manual_seed(1))
    plan = EnsemblePlan.from_config(_config(t_ensemble="100,300", n_reconstructions=3), "ddpm")
    calls, reconstruct = _fake(x)
    x_hat, score = plan.run(x, reconstruct)
    assert [m.t_test for m in calls] == [100] * 3 + [300] * 3
    # Member residuals are ~0.1 and ~0.3 everywhere; averaged maps ~0.2, the mean reconstruction x + 0.2.
    torch.testing.assert_close(score, torch.full_like(x, 0.2), atol=0.02, rtol=0)
    torch.testing.assert_close(x_hat, x + 0.2, atol=0.02, rtol=0)


def test_reconstruction_average_and_pooled_mahalanobis() -> None:
    x = torch.rand(2, 1, 6, 6, generator=torch.Generator().manual_seed(1))
    config = _config(t_ensemble="100,300", n_reconstructions=2, ensemble_average="reconstruction")
    calls, reconstruct = _fake(x)
    x_hat, score = EnsemblePlan.from_config(config, "ddpm").run(x, reconstruct)
    torch.testing.assert_close(score, (x - x_hat).abs())
    calls, reconstruct = _fake(x)
    mhd_plan = EnsemblePlan.from_config({**config, "scoring": "mahalanobis"}, "ddpm")
    mask = torch.ones_like(x, dtype=torch.bool)
    _, mhd = mhd_plan.run(x, reconstruct, mask)
    calls2, reconstruct2 = _fake(x)
    recs = torch.stack([reconstruct2(m) for m in [Member(100)] * 2 + [Member(300)] * 2])
    torch.testing.assert_close(mhd, mahalanobis_map(x, recs, mask))
