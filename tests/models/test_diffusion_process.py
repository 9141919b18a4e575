"""DiffusionProcess: the schedule as data, the training loss and its normalisation, checkpointing."""

from __future__ import annotations

import pytest
import torch

from mriad.infra.errors import MriadError
from mriad.models.diffusion import DIFFUSION_DEFAULTS, DiffusionProcess, alphas_cumprod, linear_betas
from mriad.models.registry import build_model

TINY = {"base_channels": 8, "channel_mult": "1,2", "num_res_blocks": 1, "groups": 4, "head_channels": 16}


def _model(name: str, **options: object) -> torch.nn.Module:
    """A tiny model with the same random weights whatever its options (a fresh UNet starts at zero)."""
    torch.manual_seed(0)
    model = build_model(name, **TINY, **options)
    for p in model.parameters():
        if p.dim() > 1:
            torch.nn.init.normal_(p, std=0.2)
    return model


def test_process_from_config_holds_the_schedule_in_float64() -> None:
    process = DiffusionProcess.from_config(DIFFUSION_DEFAULTS)
    assert process.alpha_bar.dtype == torch.float64 and process.timesteps == 1000
    assert torch.equal(process.alpha_bar, alphas_cumprod(linear_betas()))
    assert process.test_index == 499
    x0 = torch.zeros(2, 1, 4, 4)
    eps = torch.ones(2, 1, 4, 4)
    expected = (1 - process.alpha_bar[499]).sqrt().float()
    torch.testing.assert_close(process.noised_at_test(x0, eps), torch.full_like(x0, float(expected)))
    with pytest.raises(ValueError, match="t_test"):
        DiffusionProcess.from_config({**DIFFUSION_DEFAULTS, "t_test": 1001})


def test_image_normalisation_is_the_box_share_of_the_box_loss() -> None:
    """48-pixel boxes on 96x96 slices: L_p averaged over the image = 48^2 / 96^2 = 0.25 x the box average."""
    x = torch.rand(4, 1, 96, 96, generator=torch.Generator().manual_seed(3))
    losses = {}
    for normalisation in ("box", "image"):
        model = _model("pddpm", patch_size=48, loss_normalisation=normalisation)
        losses[normalisation] = model.training_loss(x, torch.Generator().manual_seed(0))
    assert losses["box"].item() > 0
    assert losses["image"].item() == losses["box"].item() * (48 * 48) / (96 * 96)


def test_loss_normalisation_is_a_checked_option_recorded_in_the_config() -> None:
    assert build_model("pddpm", **TINY).config["loss_normalisation"] == "box"  # the default keeps past runs
    with pytest.raises(MriadError, match="loss_normalisation must be one of box, image"):
        build_model("pddpm", **TINY, loss_normalisation="pixels")
    assert "loss_normalisation" not in build_model("ddpm", **TINY).config  # one box = the image: nothing to choose


def test_gradient_checkpointing_gives_the_same_loss_and_gradients() -> None:
    x = torch.rand(3, 1, 32, 32, generator=torch.Generator().manual_seed(1))
    results = []
    for checkpointing in (False, True):
        model = _model("pddpm", patch_size=16, checkpointing=checkpointing).train()
        loss = model.training_loss(x, torch.Generator().manual_seed(0))
        loss.backward()
        grads = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
        results.append((loss.detach(), grads))
    torch.testing.assert_close(results[1][0], results[0][0], rtol=0, atol=1e-6)
    torch.testing.assert_close(results[1][1], results[0][1], rtol=1e-4, atol=1e-6)
