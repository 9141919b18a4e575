"""Scoring options of the diffusion models: ensembles over t and patch sizes, Mahalanobis over N noise
draws, AnoDDPM's iterative sampling; the default stays one reconstruction and its residual."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mriad.infra.errors import MriadError
from mriad.models.ensemble import Member
from mriad.models.registry import build_model, get_model_class
from mriad.models.scoring import mahalanobis_map

TINY = {"base_channels": 8, "channel_mult": "1,2", "num_res_blocks": 1, "groups": 4, "head_channels": 16}


def _random(model: nn.Module) -> nn.Module:
    torch.manual_seed(0)
    for p in model.parameters():  # zero-initialised output layers would make every output equal
        if p.dim() > 1:
            nn.init.normal_(p, std=0.2)
    return model.eval()


def _volumes() -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.rand(1, 2, 1, 24, 24, generator=torch.Generator().manual_seed(3))
    mask = torch.zeros_like(x, dtype=torch.bool)
    mask[..., 3:21, 4:20] = True
    return x, mask


@pytest.mark.parametrize("name", ["pddpm", "ddpm"])
def test_default_is_one_reconstruction_and_its_residual(name: str) -> None:
    model = _random(build_model(name, **TINY, patch_size=12) if name == "pddpm" else build_model(name, **TINY))
    assert model.plan.is_single()
    x, mask = _volumes()
    x_hat, score = model.score_volumes(x, torch.Generator().manual_seed(1), mask)
    expected = model.reconstruct_volumes(x, torch.Generator().manual_seed(1), mask)
    assert torch.equal(x_hat, expected) and torch.equal(score, (x - expected).abs())


def test_pddpm_ensemble_averages_the_members_maps() -> None:
    options = {**TINY, "patch_size": 12, "t_ensemble": "200,500", "patch_ensemble": "12,16"}
    model = _random(build_model("pddpm", **options))
    x, mask = _volumes()
    x_hat, score = model.score_volumes(x, torch.Generator().manual_seed(5), mask)
    flat, flat_mask = x.flatten(0, 1), mask.flatten(0, 1)
    g = torch.Generator().manual_seed(5)
    recs = [
        model.reconstruct(flat, g, flat_mask, member=Member(t, p)) for t in (200, 500) for p in (12, 16)
    ]  # the same order and noise draws as the ensemble
    maps = torch.stack([(flat - r).abs() for r in recs]).mean(0)
    torch.testing.assert_close(score.flatten(0, 1), maps)
    torch.testing.assert_close(x_hat.flatten(0, 1), torch.stack(recs).mean(0))
    # members differ: a patch size and a noise level really change the reconstruction
    assert not torch.allclose(recs[0], recs[1]) and not torch.allclose(recs[0], recs[2])


@pytest.mark.parametrize("name", ["pddpm", "ddpm", "cddpm"])
def test_mahalanobis_over_noise_draws(name: str) -> None:
    extra = {"patch_size": 12} if name == "pddpm" else {}
    if name == "cddpm":
        extra = {"encoder_widths": "8,16", "encoder_blocks": "1,1", "cond_dim": 16, "t_ensemble": "500"}
    model = _random(build_model(name, **TINY, **extra, scoring="mahalanobis", n_reconstructions=4))
    x, mask = _volumes()
    _, score = model.score_volumes(x, torch.Generator().manual_seed(2), mask)
    flat, flat_mask = x.flatten(0, 1), mask.flatten(0, 1)
    g = torch.Generator().manual_seed(2)
    if name == "cddpm":  # its members are not separately callable; the map must be a real, masked one
        assert torch.isfinite(score).all() and (score[~mask] == 0).all() and score[mask].max() > 0
        return
    recs = torch.stack([model.reconstruct(flat, g, flat_mask, member=model.plan.members[0]) for _ in range(4)])
    torch.testing.assert_close(score.flatten(0, 1), mahalanobis_map(flat, recs, flat_mask))
    assert (score[~mask] == 0).all()


def test_scoring_options_are_checked_and_listed_in_the_defaults() -> None:
    for name in ("pddpm", "ddpm", "cddpm"):
        defaults = {**get_model_class(name).defaults}
        assert {"scoring", "n_reconstructions", "mahalanobis_regularisation", "t_ensemble"} <= set(defaults)
    assert "patch_ensemble" in get_model_class("pddpm").defaults
    with pytest.raises(MriadError, match="scoring must be one of"):
        build_model("ddpm", **TINY, scoring="l2")
    with pytest.raises(MriadError, match="t_ensemble does not apply"):
        build_model("ddpm", **TINY, sampling="iterative", t_ensemble="100,200")


def test_anoddpm_costs_sampling_steps_calls_and_keeps_empty_slices() -> None:
    model = _random(build_model("ddpm", **TINY, sampling="iterative", t_start=60, sampling_steps=6))
    calls: list[int] = []
    forward = model.net.forward
    model.net.forward = lambda x, t, *a: (calls.append(int(t[0])), forward(x, t, *a))[1]  # type: ignore[method-assign]
    x = torch.rand(4, 1, 24, 24, generator=torch.Generator().manual_seed(0))
    mask = torch.zeros_like(x, dtype=torch.bool)
    mask[:2, :, 6:18, 6:18] = True
    rec = model.reconstruct(x, torch.Generator().manual_seed(0), mask=mask)
    assert calls == [59, 47, 35, 24, 12, 0]  # one call per step: 2 brain slices fit one chunk
    torch.testing.assert_close(rec[2:], x[2:])  # no brain: the input, no network call
    full = model.reconstruct(x, torch.Generator().manual_seed(0))
    torch.testing.assert_close(rec[:2], full[:2], atol=1e-5, rtol=0)  # the mask does not change the rest
    one_step = _random(build_model("ddpm", **TINY))
    assert not torch.allclose(rec[:2], one_step.reconstruct(x[:2], torch.Generator().manual_seed(0)))


@pytest.mark.slow  # 44 s measured on the 2 shared, heavily loaded cores
def test_learning_lowers_heldout_error_for_every_reconstruction_mode() -> None:
    """One tiny DDPM trained briefly; its weights under one-step, AnoDDPM and noise-ensemble reconstruction."""
    from test_baselines import brain_slices, fit

    torch.manual_seed(0)
    trained = build_model("ddpm", **TINY, lr=3e-3, schedule="linear")
    modes = {
        "one_step": {},
        "anoddpm": {"sampling": "iterative", "t_start": 200, "sampling_steps": 4},
        "ensemble": {"t_ensemble": "200,400", "n_reconstructions": 2},
    }
    held_out = brain_slices(12, seed=2)[:, None]  # (V, S=1, 1, H, W) stacks for score_volumes

    def errors() -> dict[str, float]:
        out = {}
        for mode, options in modes.items():
            model = build_model("ddpm", **TINY, **options)
            model.load_state_dict(trained.state_dict())
            x_hat, _ = model.eval().score_volumes(held_out, torch.Generator().manual_seed(0))
            out[mode] = float((held_out - x_hat).abs().mean())
        return out

    before = errors()
    fit(trained, brain_slices(64, seed=1), steps=30, batch=8)
    after = errors()
    for mode in modes:
        assert after[mode] < 0.7 * before[mode], f"{mode}: held-out |x - x_hat| {before[mode]:.4f} -> {after[mode]:.4f}"
