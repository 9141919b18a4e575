"""DDPM baseline of the pDDPM paper: the same network and diffusion, the whole slice noised.

It is pDDPM with a single box covering the slice (so L_p and L_rec coincide), which is exactly how
it is implemented: :class:`mriad.models.diffusion_model.DiffusionModel` with its default (full-slice) boxes.
Reconstruction is one network call per slice at t_test, with simplex noise by default (the paper's
DDPM baseline, after Wyatt et al. 2022).

``sampling=iterative`` is AnoDDPM's partial diffusion instead (:mod:`mriad.models.sampling`):
noise to ``t_start``, then ``sampling_steps`` denoising steps back to 0, fresh noise each step.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from mriad.infra.errors import MriadError
from mriad.models.diffusion import DIFFUSION_DEFAULTS, from_model_space, to_model_space
from mriad.models.diffusion_model import CHANNEL_DEFAULTS, DiffusionModel
from mriad.models.ensemble import SCORING_DEFAULTS, Member
from mriad.models.sampling import iterative_denoise


class DDPM(DiffusionModel):
    name: ClassVar[str] = "ddpm"
    paper: ClassVar[str] = (
        "Baseline in Behrendt et al., MIDL 2023; simplex-noise DDPM after Wyatt et al.: AnoDDPM, CVPR Workshops 2022."
    )
    summary: ClassVar[str] = (
        "DDPM: the whole slice is noised at t and the network predicts the clean slice (L1); "
        "reconstruction is one network call per slice at t_test. Same network and defaults as pddpm "
        "(lr 1e-5 as in the paper; the reference code uses 1e-4). --set sampling=iterative: AnoDDPM's "
        "partial diffusion, noised to t_start (AnoDDPM: 250) and denoised in sampling_steps steps = "
        "sampling_steps network calls per slice (250 by default; 1 for one_step), eta 1 = ancestral "
        "DDPM steps, 0 = deterministic DDIM."
    )
    defaults: ClassVar[dict[str, Any]] = {
        **DIFFUSION_DEFAULTS,
        **SCORING_DEFAULTS,
        "sampling": "one_step",
        "t_start": 250,
        "sampling_steps": 250,
        "sampling_eta": 1.0,
        **CHANNEL_DEFAULTS,
    }
    test_time_options: ClassVar[tuple[str, ...]] = (
        *DiffusionModel.test_time_options,
        "sampling",
        "t_start",
        "sampling_steps",
        "sampling_eta",
    )

    def __init__(self, **config: Any):
        super().__init__(**config)
        c = self.config
        self._check_choice("sampling", ("one_step", "iterative"))
        if self.iterative():
            if not 1 <= int(c["t_start"]) <= int(c["timesteps"]) or int(c["sampling_steps"]) < 1:
                raise MriadError(
                    f"model {self.name}: t_start must lie in 1..{c['timesteps']} and sampling_steps be positive, "
                    f"got {c['t_start']}, {c['sampling_steps']}"
                )
            if len({m.t_test for m in self.plan.members}) > 1:
                raise MriadError(f"model {self.name}: t_ensemble does not apply to sampling=iterative (t_start)")

    def iterative(self) -> bool:
        return self.config["sampling"] == "iterative"

    @torch.no_grad()
    def reconstruct(
        self,
        x: torch.Tensor,
        generator: torch.Generator | None = None,
        mask: torch.Tensor | None = None,
        member: Member | None = None,
    ) -> torch.Tensor:
        """One network call per slice at t_test, or (``sampling=iterative``) AnoDDPM's partial diffusion.

        Iterative: slices without brain (given ``mask``) keep the input; every call has the same size
        (from N alone), so the others do not depend on the mask.
        """
        if not self.iterative():
            return super().reconstruct(x, generator, mask, member)
        device = next(self.parameters()).device
        x0 = to_model_space(x.to(device).float())
        n, _, height, width = x0.shape
        if generator is None:
            generator = torch.Generator(device=device).manual_seed(0)
        keep = torch.arange(n, device=device)
        if mask is not None:
            keep = mask.to(device).flatten(1).any(dim=1).nonzero()[:, 0]
        chunk = self.inference_chunk(n, height, width)

        def denoise(x_t: torch.Tensor, index: int) -> torch.Tensor:
            out = torch.empty_like(x_t)
            t = torch.full((chunk,), index, device=device, dtype=torch.long)

            def consume(start: int, stop: int, pred: torch.Tensor) -> None:
                out[start:stop] = pred

            self.executor.run(self.net, device, x_t.shape[0], chunk, lambda a, b: x_t[a:b], consume, extra=(t,))
            return out

        c = self.config
        shape = (n, *x0.shape[1:])
        # Noise for every slice (so the fields do not depend on the mask), used on the kept ones.
        draw = lambda: self.noise(shape, generator, device)[keep]  # noqa: E731
        result = x0.clone()
        result[keep] = iterative_denoise(
            denoise, x0[keep], self.process.alpha_bar, draw, int(c["t_start"]), int(c["sampling_steps"]),
            float(c["sampling_eta"]),
        )  # fmt: skip
        return from_model_space(result)
