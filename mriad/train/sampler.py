"""Training data that lives on the device: slices are drawn there, no DataLoader, no host copies.

A preprocessed split is small (IXI: ~400 x 96x96x50 float32 ~ 0.7 GB), so the whole split is uploaded
once and every batch is one random index plus one gather on the device.

Healthy slices from patients (:func:`healthy_slice_table`): a lesion data set's slices that are at
least ``margin`` slices from any lesion voxel and carry a large enough brain area are usable as
"healthy-looking" training slices (a known protocol; the caveat is that they come from patients, so
mass effect, oedema below the label's reach and treatment effects may still be in them).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from mriad.contracts.data import SplitData


@dataclass
class DeviceSlices:
    """All slices of a split ``(V*Z, C, X, Y)`` and, per volume, which of its slices contain brain."""

    slices: torch.Tensor
    volumes: int
    depth: int
    brain_index: torch.Tensor  # (V, Zmax) flat slice indices of each volume's brain slices, padded
    brain_count: torch.Tensor  # (V,) how many of them are real

    @classmethod
    def from_split(cls, split: SplitData, usable: torch.Tensor | None = None) -> DeviceSlices:
        """Every brain slice of ``split``, or only the slices marked in ``usable`` ``(V, Z)`` bool
        (volumes left with none are dropped, so sampling never falls on a padded index)."""
        images, masks = split.images, split.masks
        if usable is None:
            has_brain = masks.flatten(1, 2).bool().any(dim=1)  # (V, Z)
        else:
            keep = usable.any(dim=1)
            images, has_brain = images[keep], usable[keep]
        if images.dim() == 4:  # one channel: (V, X, Y, Z) -> (V, X, Y, Z, 1)
            images = images[..., None]
        v, x, y, z, c = images.shape
        slices = images.permute(0, 3, 4, 1, 2).reshape(v * z, c, x, y).contiguous()
        count = has_brain.sum(dim=1)
        # Stable sort puts each volume's brain slices first, in order: a padded index table.
        order = torch.sort((~has_brain).to(torch.uint8), dim=1, stable=True).indices
        width = max(int(count.max().item()), 1)
        base = torch.arange(v, device=images.device)[:, None] * z
        return cls(slices=slices, volumes=v, depth=z, brain_index=(base + order)[:, :width], brain_count=count)

    @property
    def n_brain_slices(self) -> int:
        return int(self.brain_count.sum().item())

    def sample_slices(self, n: int, generator: torch.Generator | None) -> torch.Tensor:
        """``n`` slices: a volume uniformly (with replacement), then one of its brain slices uniformly."""
        device = self.slices.device
        source = generator.device if generator is not None else device
        vol = torch.randint(0, self.volumes, (n,), generator=generator, device=source).to(device)
        u = torch.rand(n, generator=generator, device=source, dtype=torch.float64).to(device)
        pick = (u * self.brain_count[vol]).long().clamp_max(self.brain_index.shape[1] - 1)
        return self.slices[self.brain_index[vol, pick]]

    def sample_volumes(self, n: int, generator: torch.Generator | None) -> torch.Tensor:
        """``n`` whole volumes as slice stacks ``(n, Z, C, X, Y)``, uniformly with replacement."""
        device = self.slices.device
        source = generator.device if generator is not None else device
        vol = torch.randint(0, self.volumes, (n,), generator=generator, device=source).to(device)
        return self.stacks()[vol]

    def stacks(self) -> torch.Tensor:
        return self.slices.view(self.volumes, self.depth, *self.slices.shape[1:])

    def evenly_spaced_brain_slices(self, per_volume: int) -> torch.Tensor:
        """A fixed validation set: up to ``per_volume`` evenly spaced brain slices of every volume."""
        chosen = []
        for vol in range(self.volumes):
            count = int(self.brain_count[vol].item())
            if count == 0:
                continue
            k = min(per_volume, count)
            positions = torch.linspace(0, count - 1, k, device=self.slices.device).round().long()
            chosen.append(self.brain_index[vol, positions])
        return torch.cat(chosen) if chosen else torch.zeros(0, dtype=torch.long, device=self.slices.device)


def healthy_slice_table(split: SplitData, margin: int, min_brain_fraction: float) -> torch.Tensor:
    """``(V, Z)`` bool: slices with no lesion voxel within ``margin`` slices and enough brain.

    "Enough brain" is an area of at least ``min_brain_fraction`` of the volume's largest axial brain
    area (relative, so it does not depend on the grid); a slice with no brain is never usable.
    """
    if split.segs is None:
        raise ValueError("healthy_slice_table needs the split loaded with its segmentations")
    area = split.masks.flatten(1, 2).sum(dim=1).float()  # (V, Z)
    largest = area.max(dim=1, keepdim=True).values
    enough = (area > 0) & (area >= min_brain_fraction * largest)
    lesion = split.segs.flatten(1, 2).bool().any(dim=1).float()  # (V, Z)
    # A lesion slice rules out the margin slices on either side: a max filter along z.
    near = torch.nn.functional.max_pool1d(lesion[:, None], 2 * margin + 1, stride=1, padding=margin)[:, 0]
    return enough & (near == 0)
