"""The torch post-processing equals the scipy calls the reference code makes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from mriad.evaluate.postprocess import _median_rows, erode_axial, median_filter3d, postprocess

CROSS = ndimage.generate_binary_structure(2, 1)


def _scipy_erode_axial(mask: np.ndarray, iterations: int) -> np.ndarray:
    return np.stack(
        [ndimage.binary_erosion(mask[:, :, z], CROSS, iterations=iterations) for z in range(mask.shape[2])], -1
    )


@pytest.mark.parametrize("shape", [(17, 13, 9), (6, 7, 5), (3, 4, 2), (40, 36, 12)])
def test_median_equals_scipy_everywhere(shape: tuple[int, int, int]) -> None:
    rng = np.random.default_rng(sum(shape))
    volume = rng.random(shape).astype(np.float32)
    volume[volume < 0.4] = 0  # zeros exercise the exact "mostly zero" shortcut
    expected = ndimage.median_filter(volume, size=5)  # default mode 'reflect', as in the reference
    got = median_filter3d(torch.from_numpy(volume)).numpy()
    np.testing.assert_array_equal(got, expected)


def test_median_with_negative_values_and_ties() -> None:
    rng = np.random.default_rng(3)
    volume = rng.integers(-3, 4, (12, 11, 10)).astype(np.float32)
    np.testing.assert_array_equal(
        median_filter3d(torch.from_numpy(volume)).numpy(), ndimage.median_filter(volume, size=5)
    )


def test_median_batched_small_chunks_and_size3() -> None:
    rng = np.random.default_rng(4)
    batch = rng.random((3, 10, 9, 8)).astype(np.float32)
    got = median_filter3d(torch.from_numpy(batch), 5, chunk_elements=1000).numpy()
    for b in range(3):
        np.testing.assert_array_equal(got[b], ndimage.median_filter(batch[b], size=5))
    np.testing.assert_array_equal(
        median_filter3d(torch.from_numpy(batch[0]), 3).numpy(), ndimage.median_filter(batch[0], size=3)
    )
    with pytest.raises(ValueError):
        median_filter3d(torch.from_numpy(batch[0]), 4)


def test_median_where_is_exact_inside_and_zero_outside() -> None:
    rng = np.random.default_rng(5)
    volume = rng.random((14, 15, 8)).astype(np.float32)
    where = rng.random(volume.shape) > 0.5
    got = median_filter3d(torch.from_numpy(volume), where=torch.from_numpy(where)).numpy()
    expected = ndimage.median_filter(volume, size=5)
    np.testing.assert_array_equal(got[where], expected[where])
    assert not got[~where].any()


@pytest.mark.parametrize("iterations", [1, 3])
def test_erosion_equals_scipy_per_axial_slice(iterations: int) -> None:
    rng = np.random.default_rng(iterations)
    mask = ndimage.binary_dilation(rng.random((30, 28, 6)) > 0.7, iterations=2)
    mask[:, :4, :] = True  # touching the border: scipy erodes from it (border_value=0)
    got = erode_axial(torch.from_numpy(mask), iterations).numpy()
    np.testing.assert_array_equal(got, _scipy_erode_axial(mask, iterations))
    batch = erode_axial(torch.from_numpy(np.stack([mask, ~mask])), iterations).numpy()
    np.testing.assert_array_equal(batch[1], _scipy_erode_axial(~mask, iterations))


def test_postprocess_chain_matches_reference_inside_brain() -> None:
    rng = np.random.default_rng(7)
    score = rng.random((24, 24, 10)).astype(np.float32)
    mask = np.zeros(score.shape, dtype=bool)
    mask[3:21, 4:20, 1:9] = True
    reference = ndimage.median_filter(score * _scipy_erode_axial(mask, 3), size=5)
    got = postprocess(torch.from_numpy(score), torch.from_numpy(mask)).numpy()
    np.testing.assert_array_equal(got[mask], reference[mask])
    assert not got[~mask].any()
    full = postprocess(torch.from_numpy(score), torch.from_numpy(mask), restrict_to_mask=False).numpy()
    np.testing.assert_array_equal(full, reference)


def test_gpu_and_cpu_median_selections_agree() -> None:
    values = torch.from_numpy(np.random.default_rng(8).integers(0, 9, (500, 125)).astype(np.float32))
    torch.testing.assert_close(_median_rows(values, 62, use_sort=True), _median_rows(values, 62, use_sort=False))
    torch.testing.assert_close(_median_rows(values, 62), torch.from_numpy(np.median(values.numpy(), axis=1)))
