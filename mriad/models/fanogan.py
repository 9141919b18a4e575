"""f-AnoGAN (Schlegl et al. 2019): a WGAN-GP of healthy slices plus an encoder into its latent space.

Phase 1 trains a Wasserstein GAN with gradient penalty (critic and generator). Phase 2 freezes both
and trains an encoder E with the "izif" loss, ||x - G(E(x))||^2 / n + kappa ||f(x) - f(G(E(x)))||^2 / n_f,
f = the critic's last convolutional features. A test slice is mapped to the closest healthy image
G(E(x)); lesions, which G cannot produce, remain in the residual |x - G(E(x))|.

Both phases run inside the engine's single loop: :meth:`FAnoGAN.training_step` looks at a step
counter kept as a registered buffer (so checkpoints and resume restore it) and does a critic update
(plus a generator update every ``n_critic`` steps) for the first ``gan_steps`` steps, encoder updates
after. ``gan_steps`` is ``gan_fraction`` of the run's total steps, which the engine announces through
:meth:`FAnoGAN.set_total_steps`; ``--set gan_steps=N`` fixes it explicitly. ``best.pt`` can only come
from the encoder phase: the validation loss is +inf before it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any, ClassVar

import torch
from torch import nn

from mriad.infra.errors import MriadError
from mriad.models.base import AnomalyModel
from mriad.models.layers import ConvDecoder, ConvEncoder, check_input


class FAnoGAN(AnomalyModel):
    """WGAN-GP generator/critic + izif encoder; score = |x - G(E(x))|."""

    # Buffers (registered in __init__), declared for the type checker.
    step: torch.Tensor
    total_steps: torch.Tensor
    encoder_from: torch.Tensor

    name: ClassVar[str] = "fanogan"
    paper: ClassVar[str] = (
        "Schlegl, Seeboeck, Waldstein, Langs, Schmidt-Erfurth. f-AnoGAN: Fast unsupervised anomaly "
        "detection with generative adversarial networks. Medical Image Analysis 54:30-44, 2019."
    )
    summary: ClassVar[str] = (
        "f-AnoGAN: WGAN-GP (gradient penalty 10, n_critic 5, Adam lr 1e-4, betas (0, 0.9) as in "
        "Gulrajani et al.) for the first gan_fraction of the steps, then an encoder trained with the "
        "izif loss (image + kappa * critic-feature residual) with G and D frozen; latent 128 and lr "
        "1e-4 (pDDPM paper); z ~ U(-1, 1) with a tanh encoder (our choice); score |x - G(E(x))|."
    )
    defaults: ClassVar[dict[str, Any]] = {
        "image_size": 96,
        "base_channels": 32,
        "channel_mult": (1, 2, 4, 8),
        "latent_dim": 128,
        "latent_prior": "uniform",
        "lr": 1e-4,
        "adam_beta1": 0.0,
        "adam_beta2": 0.9,
        "gp_weight": 10.0,
        "n_critic": 5,
        "kappa": 1.0,
        "gan_fraction": 0.75,
        "gan_steps": 0,
        "score_features": False,
    }

    def __init__(self, **config: Any):
        super().__init__(**config)
        c = self.config
        if c["latent_prior"] not in ("uniform", "normal"):
            raise MriadError(f"fanogan: latent_prior must be uniform or normal, not {c['latent_prior']!r}")
        shared: dict[str, Any] = {
            "image_size": int(c["image_size"]),
            "base_channels": int(c["base_channels"]),
            "channel_mult": tuple(c["channel_mult"]),
        }
        latent = int(c["latent_dim"])
        self.generator_net = ConvDecoder(latent, norm="batch", **shared)
        # Per-sample normalisation in the critic: the gradient penalty is a per-sample quantity.
        self.critic = ConvEncoder(1, norm="layer", **shared)
        self.encoder = ConvEncoder(latent, norm="batch", **shared)
        self.register_buffer("step", torch.zeros((), dtype=torch.long))
        self.register_buffer("total_steps", torch.zeros((), dtype=torch.long))
        # Step at which the encoder phase began (-1: not yet). Once set, the phase never flips back,
        # even if a resumed run is given more epochs (which moves gan_fraction * total_steps).
        self.register_buffer("encoder_from", torch.full((), -1, dtype=torch.long))

    # ---- schedule -------------------------------------------------------------------------------
    def set_total_steps(self, total_steps: int) -> None:
        """Called by the training engine before the loop, so the phase boundary is a fixed step."""
        self.total_steps.fill_(int(total_steps))

    @property
    def gan_steps(self) -> int:
        if int(self.config["gan_steps"]) > 0:
            return int(self.config["gan_steps"])
        if int(self.total_steps) <= 0:
            raise MriadError(
                "fanogan: the number of GAN steps is unknown (the engine did not call set_total_steps); "
                "pass --set gan_steps=N"
            )
        return round(float(self.config["gan_fraction"]) * int(self.total_steps))

    @property
    def in_gan_phase(self) -> bool:
        return int(self.encoder_from) < 0 and int(self.step) < self.gan_steps

    # ---- pieces ---------------------------------------------------------------------------------
    def sample_latent(self, n: int, generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
        shape = (n, int(self.config["latent_dim"]))
        if self.config["latent_prior"] == "normal":
            return torch.randn(shape, generator=generator, device=device)
        return torch.rand(shape, generator=generator, device=device) * 2 - 1

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        check_input(x, int(self.config["image_size"]), self.name)
        z = self.encoder(x)
        return torch.tanh(z) if self.config["latent_prior"] == "uniform" else z

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.generator_net(self.encode(x))

    def gradient_penalty(
        self, real: torch.Tensor, fake: torch.Tensor, generator: torch.Generator | None
    ) -> torch.Tensor:
        """E[(||grad D(x_mix)||_2 - 1)^2] on random interpolates (Gulrajani et al. 2017), in fp32."""
        alpha = torch.rand((real.shape[0], 1, 1, 1), generator=generator, device=real.device)
        mixed = (alpha * real.float() + (1 - alpha) * fake.float()).requires_grad_(True)
        (grad,) = torch.autograd.grad(self.critic(mixed).sum(), mixed, create_graph=True)
        return (grad.flatten(1).norm(dim=1) - 1).pow(2).mean()

    def izif_loss(self, x: torch.Tensor) -> torch.Tensor:
        x_hat = self(x)
        image = (x.float() - x_hat.float()).pow(2).mean()
        features = (self.critic.features(x).float() - self.critic.features(x_hat).float()).pow(2).mean()
        return image + float(self.config["kappa"]) * features

    # ---- training -------------------------------------------------------------------------------
    def configure_optimizers(self) -> list[torch.optim.Optimizer]:
        """``[opt_G, opt_D, opt_E]``, Adam with the WGAN-GP betas for all three."""
        c = self.config
        fused = any(p.is_cuda for p in self.parameters()) or None
        kwargs: dict[str, Any] = {
            "lr": float(c["lr"]),
            "betas": (float(c["adam_beta1"]), float(c["adam_beta2"])),
            "fused": fused,
        }
        return [
            torch.optim.Adam(self.generator_net.parameters(), **kwargs),
            torch.optim.Adam(self.critic.parameters(), **kwargs),
            torch.optim.Adam(self.encoder.parameters(), **kwargs),
        ]

    def training_step(
        self,
        batch: torch.Tensor,
        optimizers: list[torch.optim.Optimizer],
        generator: torch.Generator | None = None,
        autocast: Any = None,
    ) -> dict[str, float | torch.Tensor]:
        opt_g, opt_d, opt_e = optimizers
        context = autocast if autocast is not None else contextlib.nullcontext
        if self.in_gan_phase:
            losses = self._gan_step(batch, opt_g, opt_d, generator, context)
        else:
            if int(self.encoder_from) < 0:
                self.encoder_from.fill_(int(self.step))
            losses = self._encoder_step(batch, opt_e, context)
        self.step += 1
        return losses

    def _gan_step(self, x: torch.Tensor, opt_g: Any, opt_d: Any, generator: Any, context: Any) -> dict[str, Any]:
        """One critic update; every ``n_critic``-th step also one generator update."""
        self.generator_net.train()
        self.critic.train()
        with torch.no_grad(), context():
            fake = self.generator_net(self.sample_latent(x.shape[0], generator, x.device))
        opt_d.zero_grad(set_to_none=True)
        with context():
            wasserstein = self.critic(fake).mean() - self.critic(x).mean()
        loss_d = wasserstein.float() + float(self.config["gp_weight"]) * self.gradient_penalty(x, fake, generator)
        loss_d.backward()
        opt_d.step()
        if (int(self.step) + 1) % int(self.config["n_critic"]) == 0:
            _set_requires_grad(self.critic, False)
            opt_g.zero_grad(set_to_none=True)
            with context():
                loss_g = -self.critic(self.generator_net(self.sample_latent(x.shape[0], generator, x.device))).mean()
            loss_g.backward()
            opt_g.step()
            _set_requires_grad(self.critic, True)
        return {"loss": loss_d.detach()}

    def _encoder_step(self, x: torch.Tensor, opt_e: Any, context: Any) -> dict[str, Any]:
        """izif update of E only; G and D frozen and in eval mode (as they will be at test time)."""
        self.generator_net.eval()
        self.critic.eval()
        self.encoder.train()
        _set_requires_grad(self.generator_net, False)
        _set_requires_grad(self.critic, False)
        try:
            opt_e.zero_grad(set_to_none=True)
            with context():
                loss = self.izif_loss(x)
            loss.backward()
            opt_e.step()
        finally:
            _set_requires_grad(self.generator_net, True)
            _set_requires_grad(self.critic, True)
        return {"loss": loss.detach()}

    @torch.no_grad()
    def validation_loss(self, batch: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """izif loss once the encoder trains; +inf before, so "best" is never a half-trained GAN."""
        if self.in_gan_phase:
            return batch.new_full((), float("inf"))
        return self.izif_loss(batch)

    def training_loss(self, batch: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """The izif (encoder) objective; the GAN phase lives in :meth:`training_step`."""
        return self.izif_loss(batch)

    def training_probes(self, batch: torch.Tensor, generator: torch.Generator | None = None) -> Iterator[torch.Tensor]:
        """Both phases' forward passes: the izif loss, then the critic loss with its gradient penalty
        (the generator's fake batch without a graph, as in :meth:`_gan_step`)."""
        yield self.izif_loss(batch)
        with torch.no_grad():
            fake = self.generator_net(self.sample_latent(batch.shape[0], generator, batch.device))
        wasserstein = self.critic(fake).mean() - self.critic(batch).mean()
        yield wasserstein.float() + float(self.config["gp_weight"]) * self.gradient_penalty(batch, fake, generator)

    # ---- scoring --------------------------------------------------------------------------------
    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return self(x).clamp(0, 1)

    def anomaly_score(self, x: torch.Tensor, x_hat: torch.Tensor) -> torch.Tensor:
        """|x - x_hat|; with ``score_features`` plus kappa x the slice's critic-feature residual."""
        score = (x - x_hat).abs()
        if not self.config["score_features"]:
            return score
        flat_x, flat_hat = x.reshape(-1, *x.shape[-3:]), x_hat.reshape(-1, *x.shape[-3:])
        with torch.no_grad():
            residual = (self.critic.features(flat_x) - self.critic.features(flat_hat)).pow(2).flatten(1).mean(1)
        return score + float(self.config["kappa"]) * residual.reshape(*x.shape[:-3], 1, 1, 1)

    def max_batch(self, height: int, width: int, memory_bytes: int | None = None) -> int:
        return 512


def _set_requires_grad(module: nn.Module, flag: bool) -> None:
    for parameter in module.parameters():
        parameter.requires_grad_(flag)
