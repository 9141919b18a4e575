"""cDDPM's intensity augmentation of training slices, with TorchIO (Pérez-García et al., 2021).

The reference (Conditioned-Diffusion-Models-UAD, ``aug_intensity``) composes, per training sample,
``RandomGamma(p=0.5)``, ``RandomBiasField(p=0.25)``, ``RandomBlur(p=0.25)`` and
``RandomGhosting(p=0.5)`` with TorchIO's default ranges, on 3D volumes before slices are drawn.
mriad draws slices on the device first and augments each slice as a one-voxel-thick 3D image.

Where the data cannot stay on the device: TorchIO's transforms work on CPU tensors (NumPy, SciPy,
SimpleITK inside), so an augmented batch makes one device -> host -> device round trip per step
(~6 ms per 96 x 96 slice on one CPU core; a GPU batch of 32 slices waits ~0.2 s for it). Ghosting
acts in-plane only (axes 0, 1): the slice has no third axis to ghost along. TorchIO draws from
torch's global generator, so each batch runs under a global seed drawn from the training generator
(``torch.random.fork_rng``): runs repeat with the same ``--seed`` and the caller's global state is
left alone.
"""

from __future__ import annotations

from typing import Any

import torch


def intensity_transform() -> Any:
    """The four transforms of the reference's ``aug_intensity`` policy (imported lazily: TorchIO is slow to import)."""
    import torchio as tio

    return tio.Compose(
        [
            tio.RandomGamma(p=0.5),
            tio.RandomBiasField(p=0.25),
            tio.RandomBlur(p=0.25),
            tio.RandomGhosting(axes=(0, 1), p=0.5),
        ]
    )


def augment_slices(batch: torch.Tensor, transform: Any, generator: torch.Generator | None) -> torch.Tensor:
    """Apply ``transform`` to every slice of ``batch`` ``(N, C, H, W)`` (any device); same device and dtype back."""
    import torchio as tio

    source = generator.device if generator is not None else batch.device
    seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator, device=source).item())
    host = batch.detach().float().cpu()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        out = [transform(tio.ScalarImage(tensor=s[..., None])).data[..., 0] for s in host]
    return torch.stack(out).to(device=batch.device, dtype=batch.dtype)
