"""Unit tests of the paper's baselines (thresh, ae, vae, svae, dae, fanogan) at tiny sizes on CPU.

Each model: output shapes and finiteness, one training step that changes parameters, determinism
given the seed, and a learning check (held-out reconstruction error falls during a short run).
"""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from mriad.models.registry import build_model, get_model_class

SIZE = 32
CONV_TINY: dict[str, Any] = {"image_size": SIZE, "base_channels": 4, "channel_mult": (1, 2, 4), "latent_dim": 16}
TINY: dict[str, dict[str, Any]] = {
    "thresh": {},
    "ae": CONV_TINY,
    "vae": CONV_TINY,
    "svae": {**CONV_TINY, "transformer_layers": 1, "transformer_heads": 2, "transformer_ff": 32},
    "dae": {"base_channels": 4, "channel_mult": (1, 2, 4)},
    "fanogan": {**CONV_TINY, "gan_steps": 2, "n_critic": 1},
}
TRAINABLE = ["ae", "vae", "svae", "dae", "fanogan"]


def brain_volumes(n_volumes: int, n_slices: int, size: int = SIZE, seed: int = 0) -> torch.Tensor:
    """Brain-like stacks ``(V, S, 1, size, size)`` in [0, 1]: an ellipse that shrinks towards the
    ends of the stack, a smooth random texture, a darker central "ventricle", 0 outside."""
    g = torch.Generator().manual_seed(seed)
    axis = torch.linspace(-1, 1, size)
    yy, xx = torch.meshgrid(axis, axis, indexing="ij")
    z = torch.linspace(-0.8, 0.8, n_slices).view(1, n_slices, 1, 1)
    radius = torch.sqrt(1 - z**2)  # a sphere-like brain: slices shrink towards the ends
    a = (0.65 + 0.2 * torch.rand(n_volumes, 1, 1, 1, generator=g)) * radius
    b = (0.8 + 0.15 * torch.rand(n_volumes, 1, 1, 1, generator=g)) * radius
    brain = (xx / a) ** 2 + (yy / b) ** 2 < 1
    ventricle = (xx / (0.25 * a)) ** 2 + (yy / (0.4 * b)) ** 2 < 1
    texture = F.interpolate(
        torch.randn(n_volumes * n_slices, 1, 4, 4, generator=g), size=(size, size), mode="bilinear", align_corners=False
    ).view(n_volumes, n_slices, size, size)
    image = (0.6 + 0.1 * texture - 0.3 * ventricle).clamp(0, 1) * brain
    return image.unsqueeze(2).float()


def brain_slices(n: int, seed: int = 0) -> torch.Tensor:
    return brain_volumes(n, 1, seed=seed)[:, 0]


def tiny(name: str, **extra: Any) -> Any:
    torch.manual_seed(0)
    return build_model(name, **{**TINY[name], **extra})


def batch_for(model: Any, n: int = 4, seed: int = 0) -> torch.Tensor:
    if model.batch_kind == "volumes":
        return brain_volumes(2, n, seed=seed)
    return brain_slices(n, seed=seed)


def reconstruct_error(model: Any, x: torch.Tensor) -> float:
    model.eval()
    with torch.no_grad():
        x_hat = model.reconstruct_volumes(x) if model.batch_kind == "volumes" else model.reconstruct(x)
    return float((x - x_hat).abs().mean())


def fit(model: Any, data: torch.Tensor, steps: int, batch: int, seed: int = 0) -> list[float]:
    """The engine's loop in miniature: random batches, ``training_step`` with a seeded generator."""
    g = torch.Generator().manual_seed(seed)
    optimizers = model.configure_optimizers()
    model.train()
    losses = []
    for _ in range(steps):
        index = torch.randint(0, len(data), (batch,), generator=g)
        losses.append(float(model.training_step(data[index], optimizers, g)["loss"]))
    return losses


# ---- metadata --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(TINY))
def test_registered_with_paper_summary_and_defaults(name: str) -> None:
    cls = get_model_class(name)
    assert cls.name == name
    assert cls.paper and cls.summary
    config = cls.resolve_config({})
    assert {"lr", "batch_size", "epochs"} <= set(config)
    if name in ("vae", "svae"):
        assert config["sigma_vae"] == 1e-3
    if name == "fanogan":
        assert config["latent_dim"] == 128 and config["lr"] == 1e-4
        assert config["gp_weight"] == 10.0 and config["n_critic"] == 5
    if name == "dae":
        assert config["noise_res"] == 16 and config["noise_std"] == 0.2
    assert cls.trainable == (name != "thresh")


def test_cli_strings_are_coerced() -> None:
    model = build_model("ae", image_size="32", base_channels="4", channel_mult="1,2", latent_dim="8")
    assert model.config["channel_mult"] == (1, 2)
    assert reconstruct_error(model, brain_slices(2)) < 1


# ---- shapes and one step ------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(TINY))
def test_shapes_and_finite(name: str) -> None:
    model = tiny(name).eval()
    x = brain_slices(6)
    x_hat = model.reconstruct(x)
    score = model.anomaly_score(x, x_hat)
    assert x_hat.shape == x.shape == score.shape
    assert torch.isfinite(x_hat).all() and torch.isfinite(score).all()
    assert x_hat.min() >= 0 and x_hat.max() <= 1
    volumes = brain_volumes(2, 3)  # what `mriad reconstruct` passes: (V, S, 1, H, W)
    rec = model.reconstruct_volumes(volumes)
    assert rec.shape == volumes.shape
    assert model.anomaly_score(volumes, rec).shape == volumes.shape


@pytest.mark.parametrize("name", TRAINABLE)
def test_one_training_step_changes_parameters(name: str) -> None:
    model = tiny(name, n_critic=1) if name == "fanogan" else tiny(name)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    losses = fit(model, batch_for(model, 4), steps=1, batch=2)
    assert all(math.isfinite(loss) for loss in losses)
    changed = [k for k, v in model.state_dict().items() if v.is_floating_point() and not torch.equal(v, before[k])]
    assert changed, "no parameter changed"


@pytest.mark.parametrize("name", TRAINABLE)
def test_training_is_deterministic_given_seed(name: str) -> None:
    data = batch_for(tiny(name), 4)
    runs = [fit(tiny(name), data, steps=3, batch=2, seed=7) for _ in range(2)]
    assert runs[0] == runs[1]


def test_thresh_scores_intensity_and_has_no_parameters() -> None:
    model = tiny("thresh")
    x = brain_slices(3)
    assert not model.trainable and sum(p.numel() for p in model.parameters()) == 0
    assert torch.equal(model.reconstruct(x), torch.zeros_like(x))
    assert torch.equal(model.anomaly_score(x, model.reconstruct(x)), x)


def test_vae_reconstruction_is_deterministic_but_training_samples() -> None:
    model = tiny("vae")
    x = brain_slices(3)
    model.eval()
    assert torch.equal(model.reconstruct(x), model.reconstruct(x))
    g1, g2 = torch.Generator().manual_seed(1), torch.Generator().manual_seed(2)
    assert model.training_loss(x, g1) != model.training_loss(x, g2)


def test_svae_mixes_slices_and_reads_flat_stack_as_one_volume() -> None:
    model = tiny("svae").eval()
    volume = brain_volumes(1, 5)
    rec = model.reconstruct_volumes(volume)
    assert torch.allclose(model.reconstruct(volume[0]), rec[0])
    changed = volume.clone()
    changed[0, 4] = 1.0  # alter only the last slice ...
    rec_changed = model.reconstruct_volumes(changed)
    assert not torch.allclose(rec_changed[0, 0], rec[0, 0])  # ... and the first slice's reconstruction moves
    assert model.training_loss(volume[0]).isfinite()  # a flat stack trains as one volume


def test_dae_noise_is_coarse_and_stays_in_the_brain() -> None:
    model = tiny("dae", noise_res=4, noise_std=0.2)
    x = brain_slices(8)
    noise = model.add_noise(x, torch.Generator().manual_seed(0)) - x
    assert torch.all(noise[x == 0] == 0)
    assert 0.05 < float(noise[x > 0].std()) < 0.3
    # Coarse: neighbouring pixels are almost equal (4x4 noise upsampled to 32x32).
    inside = (x[..., 1:] > 0) & (x[..., :-1] > 0)
    assert float((noise[..., 1:] - noise[..., :-1])[inside].abs().mean()) < 0.03
    everywhere = tiny("dae", noise_in_brain=False).add_noise(x, torch.Generator().manual_seed(0)) - x
    assert everywhere[x == 0].abs().sum() > 0


def test_fanogan_phases_and_step_counter_survive_a_checkpoint() -> None:
    model = tiny("fanogan", gan_steps=2, n_critic=2)
    data = brain_slices(4)
    optimizers = model.configure_optimizers()
    assert len(optimizers) == 3
    g = torch.Generator().manual_seed(0)

    def snapshot(module: torch.nn.Module) -> list[torch.Tensor]:
        return [p.detach().clone() for p in module.parameters()]

    def moved(before: list[torch.Tensor], module: torch.nn.Module) -> bool:
        return any(not torch.equal(a, b) for a, b in zip(before, module.parameters()))

    gen, crit, enc = snapshot(model.generator_net), snapshot(model.critic), snapshot(model.encoder)
    model.training_step(data, optimizers, g)  # step 0: critic only
    assert moved(crit, model.critic) and not moved(gen, model.generator_net) and not moved(enc, model.encoder)
    assert float(model.validation_loss(data)) == math.inf  # "best" is never taken from the GAN phase
    gen = snapshot(model.generator_net)
    model.training_step(data, optimizers, g)  # step 1: critic + generator (n_critic = 2)
    assert moved(gen, model.generator_net) and not moved(enc, model.encoder)
    gen, crit = snapshot(model.generator_net), snapshot(model.critic)
    model.training_step(data, optimizers, g)  # step 2: encoder phase, G and D frozen
    assert moved(enc, model.encoder)
    assert not moved(gen, model.generator_net) and not moved(crit, model.critic)
    assert all(p.requires_grad for p in model.parameters())
    assert math.isfinite(float(model.validation_loss(data)))
    restored = tiny("fanogan", gan_steps=2, n_critic=2)
    restored.load_state_dict(model.state_dict())
    assert int(restored.step) == 3 and not restored.in_gan_phase
    restored.config["gan_steps"] = 10  # e.g. a resume with more epochs: the encoder phase stays
    assert not restored.in_gan_phase


def test_fanogan_phase_boundary_from_total_steps() -> None:
    model = tiny("fanogan", gan_steps=0, gan_fraction=0.75)
    with pytest.raises(Exception, match="gan_steps"):
        _ = model.gan_steps
    model.set_total_steps(40)
    assert model.gan_steps == 30
    assert model.state_dict()["total_steps"] == 40


def test_fanogan_feature_score_option() -> None:
    model = tiny("fanogan", score_features=True).eval()
    volumes = brain_volumes(2, 3)
    rec = model.reconstruct_volumes(volumes)
    plain = (volumes - rec).abs()
    score = model.anomaly_score(volumes, rec)
    assert score.shape == volumes.shape and torch.all(score >= plain)


# ---- learning ---------------------------------------------------------------------------------

# steps, batch, options: small enough for CPU, long enough for a clear drop.
LEARNING: dict[str, tuple[int, int, dict[str, Any]]] = {
    "ae": (60, 16, {"lr": 3e-3}),
    "vae": (60, 16, {"lr": 3e-3}),
    "svae": (40, 2, {"lr": 3e-3}),
    "dae": (15, 8, {"lr": 3e-3}),
    "fanogan": (160, 16, {"lr": 1e-3, "gan_steps": 100, "n_critic": 2}),
}


@pytest.mark.parametrize("name", TRAINABLE)
def test_learning_lowers_heldout_reconstruction_error(name: str) -> None:
    steps, batch, options = LEARNING[name]
    model = tiny(name, **options)
    if model.batch_kind == "volumes":
        train, held_out = brain_volumes(16, 6, seed=1), brain_volumes(4, 6, seed=2)
    else:
        train, held_out = brain_slices(96, seed=1), brain_slices(24, seed=2)
    before = reconstruct_error(model, held_out)
    fit(model, train, steps=steps, batch=batch)
    after = reconstruct_error(model, held_out)
    assert after < 0.7 * before, f"{name}: held-out |x - x_hat| {before:.4f} -> {after:.4f}"
