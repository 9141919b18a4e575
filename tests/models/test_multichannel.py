"""Multi-channel input (``in_channels``, e.g. T2 + FLAIR) for the UNet-based models: every channel is
noised and reconstructed, the anomaly map is the channel mean of the per-channel score."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from mriad.infra.errors import MriadError
from mriad.models.diffusion_model import channel_mean
from mriad.models.registry import build_model
from mriad.models.scoring import mahalanobis_map

UNET: dict[str, Any] = {
    "base_channels": 8,
    "channel_mult": "1,2",
    "num_res_blocks": 1,
    "groups": 4,
    "head_channels": 16,
    "octaves": 2,
    "frequency": 8.0,
}
TINY: dict[str, dict[str, Any]] = {
    "pddpm": {**UNET, "patch_size": 8},
    "ddpm": dict(UNET),
    "cddpm": {**UNET, "encoder_widths": "8,16", "encoder_blocks": "1,1", "cond_dim": 16, "augment": False},
}


def tiny(name: str, **extra: Any) -> Any:
    torch.manual_seed(0)
    model = build_model(name, **{**TINY[name], **extra}).eval()
    # A non-zero output layer, so reconstructions differ per channel (a fresh UNet ends in zeros).
    with torch.no_grad():
        for parameter in model.net.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    return model


def _stacks(channels: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Two stacks of 3 slices, 16 x 16, with a brain square."""
    generator = torch.Generator().manual_seed(1)
    mask = torch.zeros(2, 3, 1, 16, 16, dtype=torch.bool)
    mask[..., 3:13, 3:13] = True
    return torch.rand(2, 3, channels, 16, 16, generator=generator) * mask, mask


@pytest.mark.parametrize("name", list(TINY))
def test_two_channel_models_train_and_score_one_map_per_slice(name: str) -> None:
    model = tiny(name, in_channels=2)
    assert model.net.stem.in_channels == 2 and model.net.out_conv.out_channels == 2  # takes and predicts both
    volumes, mask = _stacks(2)
    model.train()
    loss = model.training_loss(volumes.flatten(0, 1), torch.Generator().manual_seed(0))
    loss.backward()
    assert torch.isfinite(loss)
    model.eval()
    x_hat, score = model.score_volumes(volumes, torch.Generator().manual_seed(0), mask=mask)
    assert x_hat.shape == volumes.shape and score.shape == (2, 3, 1, 16, 16)
    # The map is the channel mean of the per-channel residual, and the channels differ.
    residual = (volumes - x_hat).abs()
    assert not torch.allclose(residual[:, :, 0], residual[:, :, 1])
    torch.testing.assert_close(score, residual.mean(dim=2, keepdim=True))


def test_single_channel_maps_are_passed_through_untouched() -> None:
    score = torch.rand(4, 1, 8, 8)
    assert channel_mean(score) is score
    assert torch.equal(channel_mean(torch.stack([score[:, 0], 3 * score[:, 0]], dim=1)), 2 * score)


def test_single_channel_models_are_unchanged_by_the_option() -> None:
    """in_channels=1 (the default) builds the very same network and maps as before the option existed."""
    plain, explicit = tiny("pddpm"), tiny("pddpm", in_channels=1)
    assert plain.config["in_channels"] == 1
    for key, value in plain.state_dict().items():
        assert torch.equal(value, explicit.state_dict()[key]), key
    volumes, mask = _stacks(1)
    x_hat, score = plain.score_volumes(volumes, torch.Generator().manual_seed(0), mask=mask)
    assert torch.equal(score, (volumes - x_hat).abs())


def test_a_model_refuses_inputs_of_another_channel_count() -> None:
    model = tiny("ddpm", in_channels=2)
    with pytest.raises(RuntimeError):
        model.reconstruct(torch.rand(2, 1, 16, 16))
    with pytest.raises(MriadError, match="in_channels must be at least 1"):
        build_model("pddpm", **TINY["pddpm"], in_channels=0)


def test_mahalanobis_scoring_of_two_channels_is_the_channel_mean_of_the_joint_distance() -> None:
    """All channels of a slice form one vector (one covariance); the map averages its per-channel terms."""
    model = tiny("ddpm", in_channels=2, scoring="mahalanobis", n_reconstructions=3)
    volumes, mask = _stacks(2)
    x_hat, score = model.score_volumes(volumes, torch.Generator().manual_seed(0), mask=mask)
    assert score.shape == (2, 3, 1, 16, 16) and torch.isfinite(score).all()
    x = volumes.flatten(0, 1)
    generator = torch.Generator().manual_seed(0)
    recs = torch.stack([model.reconstruct(x, generator, mask.flatten(0, 1)) for _ in range(3)])
    expected = mahalanobis_map(x, recs, mask.flatten(0, 1), 1e-2).mean(dim=1, keepdim=True)
    torch.testing.assert_close(score.flatten(0, 1), expected)
    assert float(score[~mask].abs().max()) == 0.0  # nothing outside the brain


def test_cddpm_augments_every_channel_of_a_two_channel_slice() -> None:
    """TorchIO's intensity transforms take the C channels of a slice as one multi-channel image."""
    pytest.importorskip("torchio")
    model = tiny("cddpm", in_channels=2, augment=True).train()
    volumes, _ = _stacks(2)
    augmented = model._augment(volumes.flatten(0, 1), torch.Generator().manual_seed(3))
    assert augmented.shape == volumes.flatten(0, 1).shape and torch.isfinite(augmented).all()
    loss = model.training_loss(volumes.flatten(0, 1), torch.Generator().manual_seed(0))
    assert torch.isfinite(loss)
