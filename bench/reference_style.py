"""The "reference-style" paths mriad is benchmarked against: how the pDDPM reference code does the work.

Written here, apart from mriad's own machinery, so the comparison measures the way of working and not
a second copy of the same code. Both paths run the SAME network (the same module, the same weights);
what differs is everything around it.

Reconstruction (:func:`reconstruct_volume`), as the reference does it for one test volume:
  * the volume's slices are one batch; ONE network call per box (so K calls of 50 slices), fp32,
    NCHW, the box pasted into a clean copy of the slice with slicing (no masks);
  * ONE simplex field for the whole volume, generated on the CPU, converted to numpy and copied to
    the device (the reference computes it with numba, ~2.3 ms on the dev machine; here mriad's CPU
    simplex makes the one field in well under a millisecond, which flatters the reference a little);
  * overlaps averaged with a per-pixel count; every box of every slice is reconstructed, brain or not.

Training (:func:`reference_training_step`): a torch DataLoader over the NIfTI files (each item
reads a volume and returns one random brain slice, as the reference's "epoch = one slice per
volume"), fp32, the batch copied to the device per step, ONE CPU simplex field per batch.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
import torch


def cpu_simplex_field(config: dict[str, Any], height: int, width: int, seed: int) -> np.ndarray:
    """One simplex field ``(H, W)`` made on the CPU and handed over as numpy, like the reference's numba call."""
    from mriad.models.simplex import simplex_noise

    field = simplex_noise(
        (1, height, width),
        generator=torch.Generator().manual_seed(seed),
        octaves=int(config["octaves"]),
        persistence=float(config["persistence"]),
        frequency=float(config["frequency"]),
    )
    return field[0].numpy()


@torch.no_grad()
def reconstruct_volume(
    net: torch.nn.Module,
    slices: torch.Tensor,
    boxes: list[tuple[int, int, int, int]],
    *,
    alpha_bar_t: float,
    t_index: int,
    field: np.ndarray,
) -> torch.Tensor:
    """Reconstruct one volume's slices ``(S, 1, H, W)`` in [0, 1]: one fp32 network call per box.

    ``boxes`` are ``(top, left, bottom, right)``; ``field`` is the volume's one noise field (numpy,
    host memory), shared by all slices and boxes; ``alpha_bar_t`` the schedule's value at ``t_index``.
    """
    device = slices.device
    x0 = slices.float() * 2 - 1
    noise = torch.from_numpy(field).to(device)  # the per-volume host-to-device copy
    x_t = float(np.sqrt(alpha_bar_t)) * x0 + float(np.sqrt(1 - alpha_bar_t)) * noise
    t = torch.full((x0.shape[0],), t_index, device=device, dtype=torch.long)
    total = torch.zeros_like(x0)
    count = torch.zeros_like(x0)
    for top, left, bottom, right in boxes:
        net_in = x0.clone()
        net_in[:, :, top:bottom, left:right] = x_t[:, :, top:bottom, left:right]
        out = net(net_in, t)
        total[:, :, top:bottom, left:right] += out[:, :, top:bottom, left:right]
        count[:, :, top:bottom, left:right] += 1
    return ((total / count + 1) / 2).clamp(0, 1)


def reference_reconstructor(model: Any, seed: int = 0) -> Callable[[torch.Tensor], torch.Tensor]:
    """A function ``slices -> reconstruction`` doing the reference's work with ``model``'s network."""
    height_width: dict[str, Any] = {}

    def run(slices: torch.Tensor) -> torch.Tensor:
        h, w = slices.shape[-2:]
        if "boxes" not in height_width:
            height_width["boxes"] = [tuple(int(v) for v in box) for box in model.grid(h, w).tolist()]
        t_index = int(model.config["t_test"]) - 1
        field = cpu_simplex_field(model.config, h, w, seed)
        return reconstruct_volume(
            model.net,
            slices,
            height_width["boxes"],
            alpha_bar_t=float(model.process.alpha_bar[t_index]),
            t_index=t_index,
            field=field,
        )

    return run


class SliceDataset(torch.utils.data.Dataset):
    """The reference's data pattern: every item reads a volume file and returns one random brain slice."""

    def __init__(self, rows: pd.DataFrame):
        self.rows = rows.reset_index(drop=True)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> torch.Tensor:
        from mriad.infra.io import read_nifti

        image = read_nifti(self.rows.loc[i, "image"]).data
        mask = read_nifti(self.rows.loc[i, "mask"], allow_empty=True).data
        brain = np.flatnonzero(mask.reshape(-1, mask.shape[-1]).any(axis=0))
        z = int(np.random.choice(brain))
        return torch.from_numpy(np.ascontiguousarray(image[:, :, z]))[None]


def reference_training_step(
    model: Any, rows: pd.DataFrame, device: torch.device, batch_size: int, workers: int
) -> Callable[[], None]:
    """One reference-style optimisation step per call (DataLoader, fp32, one CPU noise field per batch)."""
    loader = torch.utils.data.DataLoader(
        SliceDataset(rows),
        batch_size=batch_size,
        shuffle=True,
        num_workers=workers,
        drop_last=True,
        persistent_workers=workers > 0,
    )
    optimizers = model.configure_optimizers()
    state = {"iterator": iter(loader), "seed": 0}
    config = model.config

    def one_field(shape: tuple[int, ...], generator: Any, target: Any) -> torch.Tensor:
        state["seed"] += 1
        field = cpu_simplex_field(config, shape[-2], shape[-1], state["seed"])
        return torch.from_numpy(field).to(target).expand(shape)  # one field for the whole batch

    model.noise = one_field  # the reference's noise, for this model instance only

    def step() -> None:
        try:
            batch = next(state["iterator"])
        except StopIteration:
            state["iterator"] = iter(loader)
            batch = next(state["iterator"])
        model.training_step(batch.to(device), optimizers, None, None)

    return step
