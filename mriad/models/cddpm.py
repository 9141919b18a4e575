"""cDDPM (Behrendt et al., 2025): a DDPM whose UNet is conditioned on an encoding of the clean input.

Training: encode the clean slice with a ResNet (:mod:`mriad.models.encoder`), project the feature
vector with an MLP and add it to the UNet's time embedding; noise the whole slice at t ~ U{1..T}
(simplex noise), predict the clean slice, L1. With ``augment`` (the default, as the paper trains),
each training slice first goes through TorchIO's gamma / bias field / blur / ghosting
(:mod:`mriad.models.augment`), so the encoder, the noised input and the target all see the
augmented slice, as in the reference, where the augmentation runs on the volume.

Reconstruction: the encoder sees the clean test slice once; the noise ensemble reconstructs it at
t = 250, 500 and 750 (a fresh noise field each) and averages the reconstructions (cDDPM's
``noise_ensemble``); one network call per slice and level (3 per slice), plus one encoder call.
The ensemble and scoring options of :mod:`mriad.models.ensemble` apply (e.g. ``scoring=mahalanobis``).
No patching. Multi-channel input (``in_channels`` C > 1, set by ``train`` from the data): the
encoder, the UNet's input and its prediction have C channels; the anomaly map is the channel mean
of the per-channel score (:func:`mriad.models.diffusion_model.channel_mean`).

Optional encoder pretraining (``pretrain_steps`` > 0): the first steps of training optimise the
encoder with masked image modelling (65 % of the patches masked, see the encoder module for where
this departs from SparK) on the same healthy training slices, then the diffusion training starts
with the pretrained encoder; the counter is saved in checkpoints, so ``--resume`` continues either
phase. The paper pretrains separately (SparK, 1200 epochs) and loads the encoder.

Departures from the reference code (Conditioned-Diffusion-Models-UAD): the encoder (basic-block
ResNet-34 layout with GroupNorm instead of timm's ResNet-50) and its projection is *added* to the
time embedding (the reference concatenates a 512-dim projection to the 512-dim time embedding,
doubling the embedding the residual blocks read); the UNet is mriad's (attention only in the
middle block, as for pDDPM). Reference training settings: lr 1e-4, batch 32, cosine schedule,
1200 epochs, T2, simplex noise.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, ClassVar

import torch
from torch import nn

from mriad.infra.errors import MriadError
from mriad.models.base import AnomalyModel
from mriad.models.diffusion import NOISES, SCHEDULES, DiffusionProcess, from_model_space, to_model_space
from mriad.models.diffusion_model import CHANNEL_DEFAULTS, channel_mean
from mriad.models.encoder import MaskedImageModelling, ResNetEncoder
from mriad.models.ensemble import SCORING_DEFAULTS, EnsemblePlan, Member
from mriad.models.patches import chunk_size
from mriad.models.unet import UNet
from mriad.runtime.inference import InferenceExecutor, chunk_limit
from mriad.runtime.memory import unet_inference_bytes

_DEFAULTS: dict[str, Any] = {
    "schedule": "cosine",
    "noise": "simplex",
    "timesteps": 1000,
    "t_test": 500,
    "octaves": 6,
    "persistence": 0.8,
    "frequency": 64.0,
    "normalise_noise": False,
    "base_channels": 128,
    "channel_mult": (1, 2, 2),
    "num_res_blocks": 3,
    "groups": 32,
    "head_channels": 64,
    "dropout": 0.0,
    "resblock_updown": True,
    "encoder_widths": (64, 128, 256, 512),
    "encoder_blocks": (3, 4, 6, 3),
    "cond_dim": 512,
    "augment": True,
    "pretrain_steps": 0,
    "mask_ratio": 0.65,
    **SCORING_DEFAULTS,
    "t_ensemble": (250, 500, 750),
    "ensemble_average": "reconstruction",
    "lr": 1e-4,
    "batch_size": 32,
    "epochs": 1200,
    "val_every": 10,
    **CHANNEL_DEFAULTS,
}


class ConditionalDDPM(AnomalyModel):
    name: ClassVar[str] = "cddpm"
    paper: ClassVar[str] = (
        "Behrendt, Bhattacharya, Mieling, Maack, Krüger, Opfer, Schlaefer: Guided Reconstruction with "
        "Conditioned Diffusion Models for Unsupervised Anomaly Detection in Brain MRIs. Computers in "
        "Biology and Medicine 2025, 109660 (doi 10.1016/j.compbiomed.2025.109660; arXiv 2312.04215)."
    )
    summary: ClassVar[str] = (
        "cDDPM: a DDPM whose UNet is conditioned on a ResNet encoding of the clean slice (projected, "
        "added to the time embedding); TorchIO intensity augmentation in training (gamma p 0.5, bias "
        "field p 0.25, blur p 0.25, ghosting p 0.5); reconstruction averages the reconstructions at "
        "t = 250, 500, 750 (3 network calls + 1 encoder call per slice; more with n_reconstructions). "
        "Optional encoder pretraining by masked image modelling: --set pretrain_steps=N. Defaults "
        "from the reference code (lr 1e-4, cosine schedule, 1200 epochs)."
    )
    defaults: ClassVar[dict[str, Any]] = dict(_DEFAULTS)
    accepts_mask: ClassVar[bool] = True  # the brain mask bounds the Mahalanobis covariance
    inference_options: ClassVar[tuple[str, ...]] = ("precision", "channels_last", "compile", "max_chunk")
    test_time_options: ClassVar[tuple[str, ...]] = ("t_test", *SCORING_DEFAULTS)

    def __init__(self, **config: Any):
        super().__init__(**config)
        c = self.config
        for key, allowed in (("schedule", SCHEDULES), ("noise", NOISES)):
            if c[key] not in allowed:
                raise MriadError(f"model {self.name}: {key} must be one of {', '.join(allowed)}, got {c[key]!r}")
        base, groups, channels = int(c["base_channels"]), int(c["groups"]), int(c["in_channels"])
        if channels < 1:
            raise MriadError(f"model {self.name}: in_channels must be at least 1, got {channels}")
        self.net = UNet(
            in_channels=channels,
            out_channels=channels,
            base_channels=base,
            channel_mult=tuple(int(m) for m in c["channel_mult"]),
            num_res_blocks=int(c["num_res_blocks"]),
            groups=groups,
            head_channels=int(c["head_channels"]),
            dropout=float(c["dropout"]),
            resblock_updown=bool(c["resblock_updown"]),
        )
        cond_dim = int(c["cond_dim"])
        widths, blocks = tuple(int(w) for w in c["encoder_widths"]), tuple(int(b) for b in c["encoder_blocks"])
        self.encoder = ResNetEncoder(channels, widths, blocks, cond_dim, groups)
        emb_dim = 4 * base
        # Zero-initialised output: a fresh model starts as the unconditioned DDPM.
        last = nn.Linear(emb_dim, emb_dim)
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)
        self.project = nn.Sequential(nn.Linear(cond_dim, emb_dim), nn.SiLU(), last)
        self.mim = MaskedImageModelling(self.encoder, float(c["mask_ratio"]), groups) if c["pretrain_steps"] else None
        # Pretraining steps done so far: a buffer, so checkpoints carry it and --resume continues.
        self.pretrained_steps: torch.Tensor
        self.register_buffer("pretrained_steps", torch.zeros((), dtype=torch.long))
        self.process = DiffusionProcess.from_config(c)
        self.executor = InferenceExecutor()
        self.plan = EnsemblePlan.from_config(c, self.name)
        self._transform: Any = None

    # ---- training ------------------------------------------------------------------------------
    def _augment(self, batch: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        if not self.config["augment"]:
            return batch
        from mriad.models.augment import augment_slices, intensity_transform

        if self._transform is None:
            self._transform = intensity_transform()
        return augment_slices(batch, self._transform, generator)

    def condition(self, x0: torch.Tensor) -> torch.Tensor:
        """The encoder's projected feature vector of clean slices (model space), ``(N, 4 x base)``."""
        return self.project(self.encoder(x0))

    def diffusion_loss(self, x0: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """L1 between the predicted and the clean slice; draw order t, noise (resumes replay it)."""
        t = self.process.sample_timesteps(x0.shape[0], generator, x0.device)
        x_t = self.process.q_sample(x0, t, self.process.noise(tuple(x0.shape), generator, x0.device))
        return (self.net(x_t, t, cond=self.condition(x0)).float() - x0).abs().mean()

    def training_loss(self, batch: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """The masked-image-modelling loss for the first ``pretrain_steps`` steps, then the diffusion loss.

        One optimiser holds every parameter: in each phase the other phase's parameters get no
        gradient, so Adam leaves them alone (the encoder keeps its Adam moments across the switch).
        """
        x0 = to_model_space(self._augment(batch.float(), generator))
        if self.mim is not None and int(self.pretrained_steps) < int(self.config["pretrain_steps"]):
            self.pretrained_steps += 1
            return self.mim.loss(x0, generator)
        return self.diffusion_loss(x0, generator)

    def training_probes(self, batch: torch.Tensor, generator: torch.Generator | None = None) -> Iterator[torch.Tensor]:
        """The diffusion loss's forward with Gaussian noise at t = 0 (neither changes what autograd
        keeps, and simplex noise is drawn on the host, which the "meta" device has not), then the
        pretraining loss when there is one; no augmentation, no step counted."""
        x0 = to_model_space(batch.float())
        t = torch.zeros(x0.shape[0], dtype=torch.long, device=x0.device)
        x_t = self.process.q_sample(x0, t, torch.randn(x0.shape, generator=generator, device=x0.device))
        yield (self.net(x_t, t, cond=self.condition(x0)).float() - x0).abs().mean()
        if self.mim is not None:
            yield self.mim.loss(x0, generator)

    @torch.no_grad()
    def validation_loss(self, batch: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return self.diffusion_loss(to_model_space(batch.float()), generator)  # healthy slices as they are

    # ---- scoring -------------------------------------------------------------------------------
    def configure_inference(self, **settings: Any) -> ConditionalDDPM:
        """Precision, channels_last, compile and max_chunk, as for the other diffusion models."""
        super().configure_inference(**settings)
        self.executor.configure(**settings)
        return self

    def _chunk(self, n: int, height: int, width: int) -> int:
        per_input = unet_inference_bytes(height, width, int(self.config["base_channels"]))
        device = next(self.parameters()).device
        user = self.executor.settings.max_chunk
        limit = min(user, chunk_limit(per_input, device, cap=4096)) if user else chunk_limit(per_input, device)
        return chunk_size(n, limit)

    def _denoise(self, x_t: torch.Tensor, index: int, cond: torch.Tensor, chunk: int) -> torch.Tensor:
        """The network over ``x_t`` at one timestep in fixed-size calls (last padded), float32 out.

        Not :meth:`InferenceExecutor.run`: the condition differs per call; the executor still
        decides precision, layout and compilation.
        """
        forward, channels_last, autocast = self.executor.prepare(self.net, x_t.device)
        t = torch.full((chunk,), index, device=x_t.device, dtype=torch.long)
        out = torch.empty_like(x_t, dtype=torch.float32)
        with autocast:
            for start in range(0, x_t.shape[0], chunk):
                stop = min(start + chunk, x_t.shape[0])
                pad = chunk - (stop - start)
                net_in = torch.cat([x_t[start:stop], x_t.new_zeros((pad, *x_t.shape[1:]))]) if pad else x_t[start:stop]
                c = torch.cat([cond[start:stop], cond.new_zeros((pad, cond.shape[1]))]) if pad else cond[start:stop]
                if channels_last:
                    net_in = net_in.contiguous(memory_format=torch.channels_last)
                out[start:stop] = forward(net_in, t, c)[: stop - start].float()
        return out

    @torch.no_grad()
    def score_slices(
        self, x: torch.Tensor, generator: torch.Generator | None = None, mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(x_hat, score)`` for slices ``(N, C, H, W)``: the ensemble of :attr:`plan`, one encoding per slice;
        ``score`` ``(N, 1, H, W)`` is the channel mean of the per-channel scores."""
        device = next(self.parameters()).device
        x = x.to(device).float()
        if generator is None:
            generator = torch.Generator(device=device).manual_seed(0)
        x0 = to_model_space(x)
        chunk = self._chunk(x0.shape[0], x0.shape[-2], x0.shape[-1])
        with self.executor.prepare(self.net, device)[2]:
            cond = torch.cat([self.condition(x0[i : i + chunk]).float() for i in range(0, x0.shape[0], chunk)])

        def member_reconstruction(member: Member) -> torch.Tensor:
            eps = self.process.noise(tuple(x0.shape), generator, device)
            index = member.t_test - 1
            x_t = self.process.q_sample(x0, torch.full((x0.shape[0],), index, device=device, dtype=torch.long), eps)
            return from_model_space(self._denoise(x_t, index, cond, chunk))

        x_hat, score = self.plan.run(x, member_reconstruction, None if mask is None else mask.to(device))
        return x_hat, channel_mean(score)

    @torch.no_grad()
    def score_volumes(
        self, volumes: torch.Tensor, generator: torch.Generator | None = None, mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        flat_mask = None if mask is None else mask.flatten(0, 1)
        x_hat, score = self.score_slices(volumes.flatten(0, 1), generator, flat_mask)
        return x_hat.unflatten(0, volumes.shape[:2]), score.unflatten(0, volumes.shape[:2])

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return self.score_slices(x, generator)[0]

    def inference_bytes(self, height: int, width: int) -> int:
        """Per network input, as for the other diffusion models (the encoder's call is smaller)."""
        return unet_inference_bytes(height, width, int(self.config["base_channels"]))

    def max_batch(self, height: int, width: int, memory_bytes: int | None = None) -> int:
        per_input = unet_inference_bytes(height, width, int(self.config["base_channels"]))
        return chunk_limit(per_input, next(self.parameters()).device, memory_bytes)
