"""Step 8: percentile normalisation inside the brain mask.

The 1st and 99th percentiles of the brain voxels map to 0 and 1, values are clipped to [0, 1] and the
background is 0. Never min/max: real scans carry saturated or hot voxels (BraTS reaches 32767) that would
squash the brain into a narrow band.
"""

from __future__ import annotations

import numpy as np

LOW, HIGH = 1.0, 99.0


def percentile_normalise(image: np.ndarray, mask: np.ndarray, low: float = LOW, high: float = HIGH) -> np.ndarray:
    """``image`` scaled so that the ``low``/``high`` percentiles inside ``mask`` become 0/1, clipped."""
    out = np.zeros(image.shape, dtype=np.float32)
    if not mask.any():
        return out
    inside = image[mask].astype(np.float64)
    lo, hi = np.percentile(inside, [low, high])
    if hi <= lo:  # a constant brain: keep it visible rather than dividing by zero
        out[mask] = 1.0 if hi > 0 else 0.0
        return out
    out[mask] = np.clip((inside - lo) / (hi - lo), 0.0, 1.0)
    return out
