"""pDDPM/DDPM: defaults, the patch loss, batched reconstruction = per-box loop, stitching identity."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

from mriad.infra.errors import MriadError
from mriad.models.diffusion import from_model_space, q_sample, to_model_space
from mriad.models.patches import box_masks, coverage
from mriad.models.registry import build_model, get_model_class

TINY = {"base_channels": 8, "channel_mult": "1,2", "num_res_blocks": 1, "groups": 4, "head_channels": 16}


def test_defaults_follow_the_paper() -> None:
    cls = get_model_class("pddpm")
    config = cls.resolve_config({})
    assert cls.name == "pddpm" and "Behrendt" in cls.paper and cls.summary
    expected = {
        "patch_size": 48,
        "patch_sampling": "fixed",
        "loss": "patch",
        "schedule": "linear",
        "noise": "simplex",
        "t_test": 500,
        "octaves": 6,
        "persistence": 0.8,
        "frequency": 64.0,
        "normalise_noise": False,
        "base_channels": 128,
        "channel_mult": (1, 2, 2),
        "num_res_blocks": 3,
        "lr": 1e-5,
        "batch_size": 32,
        "epochs": 1600,
    }
    assert {k: config[k] for k in expected} == expected
    ddpm = get_model_class("ddpm")
    assert ddpm.name == "ddpm" and "patch_size" not in ddpm.resolve_config({})


def test_cli_strings_are_coerced_and_bad_choices_refused() -> None:
    model = build_model("pddpm", **TINY, patch_size="32", schedule="cosine")
    assert model.config["channel_mult"] == (1, 2) and model.config["patch_size"] == 32
    with pytest.raises(MriadError, match="patch_sampling"):
        build_model("pddpm", **TINY, patch_sampling="diagonal")
    with pytest.raises(MriadError, match="t_test"):
        build_model("pddpm", **TINY, t_test=0)
    with pytest.raises(MriadError, match="unknown option"):
        build_model("ddpm", **TINY, patch_size=48)


class _BoxedStub(nn.Module):
    """out = w * x + w * outside_field * (1 - box): arbitrary (and w-dependent) outside the box."""

    def __init__(self, box: torch.Tensor, outside: torch.Tensor):
        super().__init__()
        self.w = nn.Parameter(torch.tensor(0.7))
        self.register_buffer("outside", outside * (~box).float())

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.w * x + self.w * self.outside


@pytest.mark.parametrize("loss", ["patch", "full"])
def test_patch_loss_only_sees_the_box(loss: str, monkeypatch: pytest.MonkeyPatch) -> None:
    box = torch.tensor([[8, 4, 24, 20]])
    mask = box_masks(box, 32, 32).expand(2, 1, 32, 32)
    x = torch.rand(2, 1, 32, 32)
    results = []
    for scale in (0.0, 50.0):
        model = build_model("pddpm", **TINY, patch_size=16, loss=loss)
        monkeypatch.setattr(model, "training_boxes", lambda n, h, w, g, d: box.expand(n, 4))
        model.net = _BoxedStub(mask, torch.randn(2, 1, 32, 32) * scale)
        value = model.training_loss(x, torch.Generator().manual_seed(0))
        value.backward()
        results.append((value.item(), model.net.w.grad.item()))
    if loss == "patch":
        assert results[0] == pytest.approx(results[1], rel=1e-6)
    else:
        assert results[0][0] != pytest.approx(results[1][0])


class _Identity(nn.Module):
    """Returns its input (and remembers it); one dummy parameter so the model has a device."""

    def __init__(self) -> None:
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(()))
        self.seen: torch.Tensor | None = None

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        self.seen = x
        return x + self.dummy


def test_training_noises_only_the_box() -> None:
    model = build_model("pddpm", **TINY, patch_size=16)
    model.net = _Identity()
    x = torch.rand(6, 1, 32, 32)
    model.training_loss(x, torch.Generator().manual_seed(1))
    changed = (model.net.seen != to_model_space(x)).flatten(1).sum(1)
    assert torch.all(changed > 0) and torch.all(changed <= 16 * 16)


def _with_random_weights(model: nn.Module) -> nn.Module:
    torch.manual_seed(0)
    for p in model.parameters():  # zero-initialised output layers would make every output equal
        if p.dim() > 1:
            nn.init.normal_(p, std=0.2)
    return model


def _per_box_loop(model, x: torch.Tensor, seed: int) -> torch.Tensor:
    """The obvious implementation: one network call per box for all slices, then average."""
    generator = torch.Generator().manual_seed(seed)
    x0 = to_model_space(x)
    n, _, h, w = x0.shape
    eps = model.noise(tuple(x0.shape), generator, x.device)  # reconstruct draws the noise first, too
    t = torch.full((n,), int(model.config["t_test"]) - 1)
    x_t = q_sample(x0, t, eps, model.process.alpha_bar)
    masks = box_masks(model.grid(h, w), h, w)
    total = torch.zeros_like(x0)
    for box in masks:
        total += model.net(torch.where(box, x_t, x0), t) * box
    return from_model_space(total / coverage(masks))


@pytest.mark.parametrize("name,patch", [("pddpm", 20), ("pddpm", 16), ("ddpm", None)])
def test_batched_reconstruction_equals_the_per_box_loop(name: str, patch: int | None, monkeypatch) -> None:
    options = dict(TINY, **({"patch_size": patch} if patch else {}))
    model = _with_random_weights(build_model(name, **options)).eval()
    monkeypatch.setattr(model, "max_batch", lambda h, w, memory_bytes=None: 5)  # force several chunks
    x = torch.rand(4, 1, 32, 32)
    got = model.reconstruct(x, torch.Generator().manual_seed(7))
    torch.testing.assert_close(got, _per_box_loop(model, x, 7), atol=1e-5, rtol=0)
    # reproducible by default (seeded), different with another seed
    assert torch.equal(model.reconstruct(x), model.reconstruct(x))
    assert not torch.equal(got, model.reconstruct(x, torch.Generator().manual_seed(8)))


@pytest.mark.parametrize("patch", [16, 20, 32])
def test_a_network_returning_x0_gives_back_the_input(patch: int) -> None:
    model = build_model("pddpm", **TINY, patch_size=patch)
    # no noise: x_t = x0, so identity returns x0
    model.process = dataclasses.replace(model.process, alpha_bar=torch.ones_like(model.process.alpha_bar))
    model.net = _Identity()
    x = torch.rand(3, 1, 32, 32)
    torch.testing.assert_close(model.reconstruct(x), x, atol=1e-6, rtol=0)


def test_boxes_without_brain_keep_the_input() -> None:
    model = _with_random_weights(build_model("pddpm", **TINY, patch_size=16)).eval()
    x = torch.rand(2, 1, 32, 32)
    mask = torch.zeros(2, 1, 32, 32, dtype=torch.bool)
    mask[:, :, 2:10, 3:12] = True  # brain only in the top-left box
    rec = model.reconstruct(x, torch.Generator().manual_seed(0), mask=mask)
    full = model.reconstruct(x, torch.Generator().manual_seed(0))
    torch.testing.assert_close(rec[..., 16:, :], x[..., 16:, :], atol=1e-6, rtol=0)
    # same noise and weights; only the batch composition differs (float rounding of the convolutions)
    torch.testing.assert_close(rec[..., :16, :16], full[..., :16, :16], atol=1e-5, rtol=0)


def test_ddpm_noises_the_whole_slice() -> None:
    model = build_model("ddpm", **TINY)
    assert model.grid(32, 32).tolist() == [[0, 0, 32, 32]]
    assert model.training_boxes(3, 32, 32, None, "cpu").tolist() == [[0, 0, 32, 32]] * 3


def test_random_patch_sampling_and_chunk_size() -> None:
    model = build_model("pddpm", **TINY, patch_size=12, patch_sampling="random")
    boxes = model.training_boxes(200, 32, 32, torch.Generator().manual_seed(0), "cpu")
    assert len({tuple(b) for b in boxes.tolist()}) > 20  # not restricted to the grid
    assert model.max_batch(96, 96, memory_bytes=10**9) >= 1
