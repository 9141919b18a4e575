"""cDDPM: defaults and paper, the conditioning reaches the network, the noise ensemble, TorchIO
augmentation, encoder pretraining by masked image modelling, and a learning check."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from test_baselines import brain_slices, fit, reconstruct_error

from mriad.models.registry import build_model, get_model_class

TINY: dict[str, Any] = {
    "base_channels": 8,
    "channel_mult": "1,2",
    "num_res_blocks": 1,
    "groups": 4,
    "head_channels": 16,
    "encoder_widths": "8,16",
    "encoder_blocks": "1,1",
    "cond_dim": 16,
}


def tiny(**extra: Any) -> Any:
    torch.manual_seed(0)
    return build_model("cddpm", **{**TINY, **extra})


def test_defaults_follow_the_paper_and_reference() -> None:
    cls = get_model_class("cddpm")
    config = cls.resolve_config({})
    assert "Behrendt" in cls.paper and "2312.04215" in cls.paper and "250, 500, 750" in cls.summary
    assert config["t_ensemble"] == (250, 500, 750) and config["ensemble_average"] == "reconstruction"
    assert config["augment"] is True and config["mask_ratio"] == 0.65 and config["noise"] == "simplex"
    assert (config["lr"], config["batch_size"], config["epochs"], config["schedule"]) == (1e-4, 32, 1200, "cosine")
    model = tiny()
    assert [m.t_test for m in model.plan.members] == [250, 500, 750] and model.plan.n_reconstructions == 1


def test_the_condition_changes_the_prediction() -> None:
    model = tiny(augment=False)
    torch.nn.init.normal_(model.project[2].weight, std=0.5)  # zero-initialised: a fresh model ignores it
    for p in model.net.parameters():
        if p.dim() > 1:
            torch.nn.init.normal_(p, std=0.2)
    x_t, t = torch.rand(2, 1, 24, 24), torch.full((2,), 100)
    a, b = torch.rand(2, 1, 24, 24) * 2 - 1, torch.rand(2, 1, 24, 24) * 2 - 1
    assert not torch.allclose(model.net(x_t, t, cond=model.condition(a)), model.net(x_t, t, cond=model.condition(b)))


def test_augmentation_changes_slices_repeatably_and_leaves_global_rng() -> None:
    from mriad.models.augment import augment_slices, intensity_transform

    x = brain_slices(8, seed=4)
    transform = intensity_transform()
    torch.manual_seed(123)
    state = torch.random.get_rng_state()
    a = augment_slices(x, transform, torch.Generator().manual_seed(0))
    assert torch.equal(torch.random.get_rng_state(), state)  # the caller's global stream is untouched
    b = augment_slices(x, transform, torch.Generator().manual_seed(0))
    assert torch.equal(a, b) and a.shape == x.shape and a.dtype == x.dtype
    assert (a - x).abs().amax(dim=(1, 2, 3)).gt(1e-3).sum() >= 4  # most slices get at least one transform


def test_pretraining_phase_then_diffusion_and_counter_in_checkpoint() -> None:
    model = tiny(augment=False, pretrain_steps=2)
    encoder_before = [p.detach().clone() for p in model.encoder.parameters()]
    net_before = [p.detach().clone() for p in model.net.parameters()]
    fit(model, brain_slices(8, seed=1), steps=2, batch=4)
    assert int(model.pretrained_steps) == 2
    assert any(not torch.equal(a, b) for a, b in zip(encoder_before, model.encoder.parameters()))
    assert all(torch.equal(a, b) for a, b in zip(net_before, model.net.parameters()))  # UNet untouched so far
    fit(model, brain_slices(8, seed=1), steps=1, batch=4)
    assert int(model.pretrained_steps) == 2
    assert any(not torch.equal(a, b) for a, b in zip(net_before, model.net.parameters()))
    restored = tiny(augment=False, pretrain_steps=2)
    restored.load_state_dict(model.state_dict())
    assert int(restored.pretrained_steps) == 2


def test_mim_masks_the_requested_share_of_patches() -> None:
    model = tiny(pretrain_steps=1)
    assert model.mim is not None
    masked = model.mim.patch_mask(torch.zeros(3, 1, 32, 32), torch.Generator().manual_seed(0))
    assert masked.shape == (3, 1, 32, 32)
    share = masked.float().mean(dim=(1, 2, 3))
    assert torch.allclose(share, torch.full((3,), 42 / 64))  # 64 patches of 4x4 (stride 4), 22 kept


@pytest.mark.slow  # 23 s measured on the 2 shared, heavily loaded cores
def test_learning_lowers_heldout_reconstruction_error() -> None:
    model = tiny(augment=False, lr=3e-3, t_ensemble="100,200", schedule="linear")
    train, held_out = brain_slices(64, seed=1), brain_slices(16, seed=2)
    before = reconstruct_error(model, held_out)
    fit(model, train, steps=30, batch=8)
    after = reconstruct_error(model, held_out)
    assert after < 0.7 * before, f"cddpm: held-out |x - x_hat| {before:.4f} -> {after:.4f}"
