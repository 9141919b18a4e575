"""Step 6: N4 bias field correction inside the brain mask (SimpleITK).

The field is smooth, so it is estimated on a x6-shrunk image and evaluated at full resolution through
``GetLogBiasFieldAsImage``; the image is divided by it. Voxels outside the mask stay 0. x6 rather than
the usual x4 (bench/n4.py, 8 real BraTS T2 scans): 2.1 instead of 5.7 CPU seconds per scan, the same
tumour/brain contrast (mean ratio 1.22 with both), corrected images 1.6 % apart (RMS, relative); on
the test phantom the 30 % bias is left at 1.1 % instead of 0.1 %. x8 was faster still but further from
x4 (2.9 %).

Three B-spline fitting levels, not SimpleITK's/ANTs' usual four: the fourth level refines the field to
~25 mm control-point spacing, fine enough to absorb a large lesion as "bias". On the eight real BraTS
2018 cases the tumour/brain T2 mean ratio fell from 1.13-1.72 (raw) to 1.00-1.21 with four levels and
stayed at 1.11-1.41 with three; scanner bias is far smoother than that and is removed either way
(tests/preprocess/test_prep_bias.py). Anomaly detection scores exactly that contrast.
"""

from __future__ import annotations

import numpy as np

SHRINK = 6


def n4_correct(
    image: np.ndarray,
    mask: np.ndarray,
    *,
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0),
    shrink: int = SHRINK,
    iterations: tuple[int, ...] = (50, 50, 50),
) -> np.ndarray:
    """Bias-corrected copy of ``image`` (float32); 0 outside ``mask``. One fitting level per entry of
    ``iterations`` (its value: that level's maximum iterations).

    Arrays are passed to SimpleITK as they are (its z, y, x reading just reverses the axes, so the
    spacing is reversed too); N4 does not care about orientation.
    """
    import SimpleITK as sitk

    if not mask.any():
        return np.zeros_like(image, dtype=np.float32)
    inside = image[mask]
    # N4 works on log intensities: keep the masked voxels strictly positive.
    floor = max(float(np.percentile(inside, 1)) * 1e-2, 1e-6)
    work = np.where(mask, np.maximum(image, floor), floor).astype(np.float32)
    img = sitk.GetImageFromArray(work)
    img.SetSpacing(tuple(float(s) for s in spacing[::-1]))
    msk = sitk.GetImageFromArray(mask.astype(np.uint8))
    msk.CopyInformation(img)
    small = sitk.Shrink(img, [shrink] * 3)
    small_mask = sitk.Shrink(msk, [shrink] * 3)
    if not sitk.GetArrayViewFromImage(small_mask).any():  # a tiny mask can vanish when shrunk
        small, small_mask = img, msk
    corrector = sitk.N4BiasFieldCorrectionImageFilter()
    corrector.SetMaximumNumberOfIterations(list(iterations))
    corrector.Execute(small, small_mask)
    log_field = sitk.GetArrayFromImage(corrector.GetLogBiasFieldAsImage(img))
    corrected = work / np.exp(log_field)
    return np.where(mask, corrected, 0.0).astype(np.float32)
