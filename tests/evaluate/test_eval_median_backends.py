"""The two median backends (torch gather + median, scipy cropped to the mask) agree bit for bit."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from mriad.evaluate.postprocess import median_filter3d, postprocess


@pytest.mark.parametrize("negative", [False, True])
def test_torch_and_scipy_backends_agree(negative: bool) -> None:
    rng = np.random.default_rng(11)
    volume = rng.random((2, 19, 17, 9)).astype(np.float32) - (0.3 if negative else 0.0)
    volume[volume < 0.2] = 0
    where = np.zeros(volume.shape, dtype=bool)
    where[0, 3:15, 1:16, 2:9] = True  # touches the volume's far Z edge: reflect padding applies there
    where[1, 0:4, 5:9, 0:3] = True  # a corner box
    tensors = torch.from_numpy(volume), torch.from_numpy(where)
    by_torch = median_filter3d(tensors[0], where=tensors[1], backend="torch", chunk_elements=5000).numpy()
    by_scipy = median_filter3d(tensors[0], where=tensors[1], backend="scipy").numpy()
    np.testing.assert_array_equal(by_torch, by_scipy)
    for b in range(2):
        np.testing.assert_array_equal(by_scipy[b][where[b]], ndimage.median_filter(volume[b], size=5)[where[b]])
    everywhere = median_filter3d(tensors[0], backend="torch").numpy()
    np.testing.assert_array_equal(everywhere, median_filter3d(tensors[0], backend="scipy").numpy())


def test_empty_mask_and_bad_backend() -> None:
    score = torch.rand(8, 8, 4)
    assert not postprocess(score, torch.zeros(8, 8, 4, dtype=torch.bool)).any()
    with pytest.raises(ValueError, match="backend"):
        median_filter3d(score, backend="numba")
