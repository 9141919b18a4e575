"""pDDPM (Behrendt et al., MIDL 2023): a DDPM whose forward process noises only a box of the slice.

Training: per slice, pick a box (a random box of the fixed grid, or a uniformly random position),
noise the box with q(x_t | x0) at a random t, keep the rest of the slice clean as context, predict
the clean slice x0, L1 loss on the box (``loss=patch``, L_p, the paper's best) or the whole slice
(``loss=full``, L_rec).

Reconstruction: ONE network call per box at t_test (no iterative sampling). Every box of the grid,
of every slice, goes through the network in batched calls (chunked to fit memory; on a CPU in small
calls whose activations stay in cache); each call's prediction is kept inside its box and the boxes
are averaged where they overlap. The noise field is drawn once per slice and shared by that slice's
boxes (as the reference does). Given the brain mask, boxes without brain skip the network (their
pixels are never scored); on CUDA the network runs in bf16 autocast with channels_last.

:class:`DiffusionModel` holds everything; :class:`PatchedDDPM` adds the box options; plain DDPM
(:mod:`mriad.models.ddpm`) is the same model with one box covering the slice.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from mriad.infra.errors import MriadError
from mriad.models.base import AnomalyModel
from mriad.models.diffusion import (
    NOISES,
    SCHEDULES,
    alphas_cumprod,
    draw_device,
    from_model_space,
    make_betas,
    make_noise,
    q_sample,
    sample_timesteps,
    to_model_space,
)
from mriad.models.patches import (
    box_masks,
    boxes_with_brain,
    chunk_size,
    coverage,
    full_box,
    grid_boxes,
    random_boxes,
)
from mriad.models.unet import UNet

_DIFFUSION_DEFAULTS: dict[str, Any] = {
    "schedule": "linear",
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
    "lr": 1e-5,
    "batch_size": 32,
    "epochs": 1600,
    "val_every": 10,
}

# Activation bytes per network input per pixel per base channel at inference: the encoder's skips
# (~6 x base full-resolution maps) plus the decoder's widest transients (concat, fp32 GroupNorm copy,
# activation, output: ~12 x base), times 4 bytes, ~80 by count; bench/memory.py measured 93-114 in
# fp32 on a CPU (peak RSS growth per input, widths 16 and 128, several runs), so 120. bf16 on a GPU
# needs less; not measured on a GPU yet.
_BYTES_PER_PIXEL_CHANNEL = 120
PRECISIONS = ("auto", "fp32", "bf16")
COMPILE_MODES = ("none", "default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
# Default upper bounds on network inputs per call (see DiffusionModel.max_batch).
_CPU_CHUNK = 8
_CUDA_CHUNK = 64


class DiffusionModel(AnomalyModel):
    """Shared implementation of pDDPM and DDPM; subclasses decide which boxes are noised."""

    defaults: ClassVar[dict[str, Any]] = dict(_DIFFUSION_DEFAULTS)

    def __init__(self, **config: Any):
        super().__init__(**config)
        c = self.config
        self._check_choice("schedule", SCHEDULES)
        self._check_choice("noise", NOISES)
        if not 1 <= int(c["t_test"]) <= int(c["timesteps"]):
            raise MriadError(f"model {self.name}: t_test must lie in 1..{c['timesteps']}, got {c['t_test']}")
        self.net = UNet(
            in_channels=1,
            out_channels=1,
            base_channels=int(c["base_channels"]),
            channel_mult=tuple(int(m) for m in c["channel_mult"]),
            num_res_blocks=int(c["num_res_blocks"]),
            groups=int(c["groups"]),
            head_channels=int(c["head_channels"]),
            dropout=float(c["dropout"]),
            resblock_updown=bool(c["resblock_updown"]),
        )
        # Derived from the config, so not saved in checkpoints; float64 (cast when applied).
        betas = make_betas(str(c["schedule"]), int(c["timesteps"]))
        self.register_buffer("alpha_bar", alphas_cumprod(betas), persistent=False)
        # How reconstruct() runs the network (configure_inference); compiled networks live in a plain
        # dict, not as submodules, so they never enter the state_dict.
        self._inference: dict[str, Any] = {
            "precision": "auto",
            "channels_last": None,
            "compile": None,
            "max_chunk": None,
        }
        self._compiled: dict[tuple[str, str, int], Any] = {}

    def _check_choice(self, key: str, allowed: tuple[str, ...]) -> None:
        if self.config[key] not in allowed:
            raise MriadError(f"model {self.name}: {key} must be one of {', '.join(allowed)}, got {self.config[key]!r}")

    # ---- boxes (overridden by PatchedDDPM) -----------------------------------------------------
    def grid(self, height: int, width: int) -> torch.Tensor:
        """Boxes reconstructed at test time, ``(K, 4)``."""
        return full_box(height, width)

    def training_boxes(
        self, n: int, height: int, width: int, generator: torch.Generator | None, device: Any
    ) -> torch.Tensor:
        return full_box(height, width).to(device).expand(n, 4)

    def patch_loss(self) -> bool:
        return False

    # ---- noise ---------------------------------------------------------------------------------
    def noise(self, shape: tuple[int, ...], generator: torch.Generator | None, device: Any) -> torch.Tensor:
        c = self.config
        return make_noise(
            str(c["noise"]),
            shape,
            generator=generator,
            device=device,
            octaves=int(c["octaves"]),
            persistence=float(c["persistence"]),
            frequency=float(c["frequency"]),
            normalise=bool(c["normalise_noise"]),
        )

    # ---- training ------------------------------------------------------------------------------
    def training_loss(self, batch: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """L1 between the predicted and the clean slice, on the noised box (L_p) or everywhere (L_rec).

        Draw order (t, boxes, noise) is fixed: resumed runs replay the same random stream.
        """
        x0 = to_model_space(batch.float())
        n, _, height, width = x0.shape
        device = x0.device
        t = sample_timesteps(n, int(self.config["timesteps"]), generator, device)
        boxes = self.training_boxes(n, height, width, generator, device)
        inside = box_masks(boxes, height, width)
        eps = self.noise(tuple(x0.shape), generator, device)
        # Context stays clean: only the box carries the noised image.
        x_t = torch.where(inside, q_sample(x0, t, eps, self.alpha_bar), x0)
        if x_t.device.type == "cuda":
            x_t = x_t.contiguous(memory_format=torch.channels_last)
        error = (self.net(x_t, t).float() - x0).abs()
        if self.patch_loss():
            weight = inside.to(error.dtype)
            return (error * weight).sum() / (weight.sum() * error.shape[1])
        return error.mean()

    # ---- scoring -------------------------------------------------------------------------------
    def configure_inference(
        self,
        *,
        precision: str | None = None,
        channels_last: bool | None = None,
        compile: str | None = None,
        max_chunk: int | None = None,
    ) -> DiffusionModel:
        """Set how :meth:`reconstruct` runs the network (None keeps a setting); returns the model.

        ``precision``: "auto" (bf16 autocast on CUDA, fp32 elsewhere), "fp32" or "bf16".
        ``channels_last``: NHWC activations and weights (default: on CUDA, where cuDNN's tensor-core
        kernels want it; off on a CPU: oneDNN's NHWC kernels are 10-20% faster there but round
        differently, up to 3e-4 on near-empty slices, whose GroupNorm statistics amplify rounding;
        NCHW keeps CPU results bit-identical to a plain per-box loop).
        ``compile``: a torch.compile mode ("default", "reduce-overhead" = CUDA graphs,
        "max-autotune") or "none"; every call of one reconstruction has the same shape, so a compiled
        network is traced once per chunk size.
        ``max_chunk``: an upper bound on network inputs per call (default: from free memory).
        """
        if precision is not None:
            if precision not in PRECISIONS:
                raise MriadError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
            self._inference["precision"] = precision
        if channels_last is not None:
            self._inference["channels_last"] = bool(channels_last)
        if compile is not None:
            if compile not in COMPILE_MODES:
                raise MriadError(f"compile must be one of {', '.join(COMPILE_MODES)}, got {compile!r}")
            self._inference["compile"] = None if compile == "none" else compile
        if max_chunk is not None:
            self._inference["max_chunk"] = max(1, int(max_chunk))
        return self

    @torch.no_grad()
    def reconstruct(
        self, x: torch.Tensor, generator: torch.Generator | None = None, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Reconstruct slices ``(N, 1, H, W)`` in [0, 1]: all boxes x all slices, batched, stitched.

        ``generator`` fixes the noise (default: a generator seeded with 0, so results repeat).
        ``mask`` (N, 1, H, W), optional: boxes without any brain voxel skip the network and keep the
        input. A pixel inside the mask is only covered by boxes that hold brain, so the map inside the
        mask is bit-identical with and without the mask: every network call has the same batch size
        (chosen from N x K, the last call padded) and a sample's output does not depend on its
        neighbours in a fixed-shape call.
        """
        device = next(self.parameters()).device
        x0 = to_model_space(x.to(device, non_blocking=True).float())
        n, _, height, width = x0.shape
        if generator is None:
            generator = torch.Generator(device=device).manual_seed(0)
        boxes = self.grid(height, width).to(device)
        inside = box_masks(boxes, height, width)  # (K, 1, H, W)
        k = boxes.shape[0]
        eps = self.noise(tuple(x0.shape), generator, device)
        t_index = int(self.config["t_test"]) - 1
        x_t = q_sample(x0, torch.full((n,), t_index, device=device, dtype=torch.long), eps, self.alpha_bar)

        total = torch.zeros_like(x0)
        if mask is None:
            pair_slice = torch.arange(n, device=device).repeat_interleave(k)
            pair_box = torch.arange(k, device=device).repeat(n)
        else:
            needed = boxes_with_brain(boxes, mask.to(device, non_blocking=True).expand(n, 1, height, width))
            pair_slice, pair_box = needed.nonzero(as_tuple=True)  # row-major: the unmasked order
            skipped_slice, skipped_box = (~needed).nonzero(as_tuple=True)
            total.index_add_(0, skipped_slice, x0[skipped_slice] * inside[skipped_box])

        chunk = self.inference_chunk(n * k, height, width)  # from N x K alone: the same with or without a mask
        self._denoise_pairs(x0, x_t, inside, pair_slice, pair_box, chunk, t_index, total)
        return from_model_space(total / coverage(inside))

    def inference_chunk(self, pairs: int, height: int, width: int) -> int:
        """Network inputs per call when reconstructing ``pairs`` (slice, box) pairs (see chunk_size)."""
        if self._inference["max_chunk"]:  # the user's size replaces the device default, memory permitting
            limit = min(self._inference["max_chunk"], self.max_batch(height, width, cap=4096))
        else:
            limit = self.max_batch(height, width)
        return chunk_size(pairs, limit)

    def _denoise_pairs(
        self,
        x0: torch.Tensor,
        x_t: torch.Tensor,
        inside: torch.Tensor,
        pair_slice: torch.Tensor,
        pair_box: torch.Tensor,
        chunk: int,
        t_index: int,
        total: torch.Tensor,
    ) -> None:
        """Add each (slice, box) pair's prediction, kept inside its box, to ``total`` (scatter-add).

        Every call has exactly ``chunk`` inputs (the last padded with zeros): fixed shapes make the
        result independent of the chunking, let a compiled network trace once and let CUDA graphs
        replay. The loop never reads a value back to the host.
        """
        device = x0.device
        forward, channels_last, autocast = self._inference_forward(device)
        t = torch.full((chunk,), t_index, device=device, dtype=torch.long)
        with autocast:
            for start in range(0, pair_slice.numel(), chunk):
                s = pair_slice[start : start + chunk]
                box = inside[pair_box[start : start + chunk]]
                net_in = torch.where(box, x_t[s], x0[s])
                real = s.numel()
                if real < chunk:
                    net_in = torch.cat([net_in, net_in.new_zeros((chunk - real, *net_in.shape[1:]))])
                if channels_last:
                    net_in = net_in.contiguous(memory_format=torch.channels_last)
                out = forward(net_in, t)[:real].float()
                total.index_add_(0, s, out * box)

    def _inference_forward(self, device: torch.device) -> tuple[Any, bool, Any]:
        """The network as reconstruction runs it: (callable, channels_last, autocast context)."""
        options = self._inference
        cuda = device.type == "cuda"
        precision = options["precision"]
        bf16 = precision == "bf16" or (precision == "auto" and cuda)
        channels_last = options["channels_last"] if options["channels_last"] is not None else cuda
        layout = torch.channels_last if channels_last else torch.contiguous_format
        if any(p.dim() == 4 and not p.is_contiguous(memory_format=layout) for p in self.net.parameters()):
            self.net.to(memory_format=layout)  # once: the weights keep this layout afterwards
        autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16)
        mode = options["compile"]
        if mode is None:
            return self.net, channels_last, autocast
        key = (mode, str(device), id(self.net))
        if key not in self._compiled:
            self._compiled[key] = torch.compile(self.net, mode=mode, dynamic=False)
        return self._compiled[key], channels_last, autocast

    def max_batch(self, height: int, width: int, memory_bytes: int | None = None, cap: int | None = None) -> int:
        """Network inputs per call that fit ``memory_bytes`` (at most ``cap``, default: per device).

        Default budget: half the free GPU memory on CUDA, at most 64 inputs (64 paper-size forwards
        are ~10 TFLOP, enough to fill a GPU); on a CPU a quarter of the available RAM, at most 8
        inputs: CPU convolutions run fastest when a call's activations stay in cache (measured in
        bench/reconstruct.py: 1.6-1.9x faster per slice than calls of 50 slices). The per-input cost is an
        analytic activation estimate that bench/reconstruct.py checks against the measured peak.
        """
        device = next(self.parameters()).device
        cuda = device.type == "cuda"
        if cap is None:
            cap = (_CUDA_CHUNK if cuda else _CPU_CHUNK) if memory_bytes is None else 4096
        if memory_bytes is None:
            memory_bytes = torch.cuda.mem_get_info(device)[0] // 2 if cuda else available_memory() // 4
        per_image = _BYTES_PER_PIXEL_CHANNEL * height * width * int(self.config["base_channels"])
        return int(max(1, min(cap, memory_bytes // per_image)))


def available_memory() -> int:
    """Bytes of RAM the system can hand out now (MemAvailable; 4 GiB when it cannot be read)."""
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 4 << 30


class PatchedDDPM(DiffusionModel):
    name: ClassVar[str] = "pddpm"
    paper: ClassVar[str] = (
        "Behrendt, Bhattacharya, Krüger, Opfer, Schlaefer: Patched Diffusion Models for Unsupervised "
        "Anomaly Detection in Brain MRI. MIDL 2023 (PMLR 227)."
    )
    summary: ClassVar[str] = (
        "Patched DDPM: the forward process noises one box of the slice, the clean rest is context; "
        "the network predicts the clean slice (L1). Reconstruction noises and denoises a grid of boxes "
        "at t_test in ONE network call each and averages overlaps. Defaults follow the paper (lr 1e-5; "
        "the reference code trains with lr 1e-4 and a cosine schedule: --lr 1e-4 --schedule cosine)."
    )
    defaults: ClassVar[dict[str, Any]] = {
        "patch_size": 48,
        "patch_sampling": "fixed",
        "loss": "patch",
        **_DIFFUSION_DEFAULTS,
    }

    def __init__(self, **config: Any):
        super().__init__(**config)
        self._check_choice("patch_sampling", ("fixed", "random"))
        self._check_choice("loss", ("patch", "full"))
        if int(self.config["patch_size"]) < 1:
            raise MriadError(f"model {self.name}: patch_size must be positive, got {self.config['patch_size']}")

    def grid(self, height: int, width: int) -> torch.Tensor:
        return grid_boxes(height, width, int(self.config["patch_size"]))

    def training_boxes(
        self, n: int, height: int, width: int, generator: torch.Generator | None, device: Any
    ) -> torch.Tensor:
        patch = int(self.config["patch_size"])
        if self.config["patch_sampling"] == "random":
            return random_boxes(n, height, width, patch, generator, device)
        grid = self.grid(height, width).to(device)
        pick = torch.randint(0, grid.shape[0], (n,), generator=generator, device=draw_device(generator, device))
        return grid[pick.to(device)]

    def patch_loss(self) -> bool:
        return self.config["loss"] == "patch"
