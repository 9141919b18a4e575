"""Evaluation protocols: which voxels each number is computed over, and how a map is binarised.

``reference`` computes what the pDDPM reference code computes (DESIGN.md section 5), so its numbers
compare with the paper's Table 1 and with anyone who ran that code:

* the residual of the UNCLAMPED reconstruction, times the brain mask eroded per axial slice, then a
  3D median filter over the whole masked volume (values leak up to two voxels outside the brain);
* the threshold maximises Dice over ALL voxels of the validation volumes, pooled; prediction is
  ``map > threshold`` over the whole volume; components of <= 7 voxels under 26-connectivity are
  dropped; Dice against the whole segmentation;
* AUROC / AUPRC per volume over EVERY voxel of the 96x96x50 volume: the zero background is a large
  pool of easy negatives, so AUROC is much higher than over the brain.

``brain`` restricts everything to the (uneroded) brain mask: the threshold search pools brain
voxels, AUROC / AUPRC rank brain voxels, the prediction is ``(map >= threshold) & brain``,
components of < 7 voxels under 6-connectivity are dropped, Dice against ``seg & brain``, and the
reconstruction is clamped to [0, 1]. It is the cleaner protocol: a number about the brain does not
move with how much empty background the crop happens to hold (the whole-volume AUROC rewards
scoring zeros outside the head), and nothing outside the brain, where no lesion can be, is counted.
It is what mriad computed before protocols existed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

PROTOCOL_NAMES = ("reference", "brain")


@dataclass(frozen=True)
class Protocol:
    """The choices that differ between protocols (everything else is shared)."""

    name: str
    whole_volume: bool  # threshold pool, AUROC/AUPRC/oracle Dice and prediction over every voxel
    strict: bool  # predict ``map > threshold`` (True) or ``map >= threshold``
    min_component_voxels: int  # components with fewer voxels are dropped
    connectivity: int  # 6 (faces) or 26 (faces, edges, corners)
    clamp: bool  # default of --clamp: clip the reconstruction to [0, 1] before the residual

    @property
    def domain(self) -> str:
        return "every voxel of the volume" if self.whole_volume else "brain mask (uneroded)"

    @property
    def prediction(self) -> str:
        where = "over the whole volume" if self.whole_volume else "inside the brain mask"
        return f"score {'>' if self.strict else '>='} threshold, {where}"

    @property
    def components(self) -> str:
        return f"drop components of < {self.min_component_voxels} voxels, {self.connectivity}-connectivity"

    def predict(self, anomaly: np.ndarray, threshold: float, mask: np.ndarray) -> np.ndarray:
        """The binary lesion prediction of one post-processed volume: thresholded as the protocol
        says, small components dropped (what Dice is computed on; for callers such as `detect`)."""
        from mriad.evaluate.metrics import remove_small_components

        binary = anomaly > threshold if self.strict else anomaly >= threshold
        if not self.whole_volume:
            binary = binary & (np.asarray(mask) != 0)
        return remove_small_components(binary, self.min_component_voxels, self.connectivity)


PROTOCOLS: dict[str, Protocol] = {
    # skimage label(connectivity=3) and `filled_area <= 7` dropped: keep components of >= 8 voxels.
    "reference": Protocol("reference", True, True, 8, 26, False),
    "brain": Protocol("brain", False, False, 7, 6, True),
}
DEFAULT_PROTOCOL = "reference"


def get_protocol(name: str) -> Protocol:
    from mriad.infra.errors import MriadError

    if name not in PROTOCOLS:
        raise MriadError(f"--protocol {name!r}: expected one of {', '.join(PROTOCOL_NAMES)}")
    return PROTOCOLS[name]
