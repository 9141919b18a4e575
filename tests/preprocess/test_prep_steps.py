"""Each step on its own, on small arrays: fast, and exact where the step is exact."""

from __future__ import annotations

import numpy as np
import pytest

from mriad.atlas import crop_grid, downsampled_grid, final_grid
from mriad.infra.io import Volume


def _oblique_free_affine(codes: str, spacing: tuple[float, float, float], origin=(10.0, -20.0, 5.0)) -> np.ndarray:
    import nibabel as nib

    ornt = nib.orientations.axcodes2ornt(tuple(codes))
    affine = np.zeros((4, 4))
    affine[3, 3] = 1.0
    for axis, (world, sign) in enumerate(ornt.astype(int)):
        affine[world, axis] = sign * spacing[axis]
    affine[:3, 3] = origin
    return affine


def test_reorient_keeps_every_voxel_at_its_world_position() -> None:
    from mriad.preprocess.reorient import axis_codes, reorient_canonical

    rng = np.random.default_rng(0)
    data = rng.random((5, 6, 7)).astype(np.float32)
    affine = _oblique_free_affine("PSL", (1.0, 2.0, 3.0))
    out = reorient_canonical(Volume(data, affine))
    assert axis_codes(out.affine) == "RAS"
    index = np.array([1, 2, 3, 1.0])
    world = affine @ index
    new_index = np.round(np.linalg.inv(out.affine) @ world).astype(int)[:3]
    assert out.data[tuple(new_index)] == data[1, 2, 3]


def test_resample_isotropic_keeps_the_field_of_view() -> None:
    from mriad.preprocess.resample import resample_isotropic

    data = np.zeros((20, 20, 10), np.float32)
    data[5:15, 5:15, 3:7] = 1.0
    affine = _oblique_free_affine("RAS", (1.0, 1.0, 3.0))
    out = resample_isotropic(Volume(data, affine), 1.0)
    assert out.shape == (20, 20, 30)
    centre_in = affine @ np.array([9.5, 9.5, 4.5, 1.0])
    centre_out = out.affine @ np.array([9.5, 9.5, 14.5, 1.0])
    assert np.allclose(centre_in, centre_out)  # same field-of-view centre: no half-voxel shift
    assert resample_isotropic(out, 1.0) is out  # already 1 mm: untouched


def test_grids_chain_crop_downsampled_final() -> None:
    assert crop_grid().shape == (192, 192, 160) and final_grid().shape == (96, 96, 50)
    # The final voxel (0,0,0) is the centre of crop voxels (0..1, 0..1, 30..31).
    centre = crop_grid().affine @ np.array([0.5, 0.5, 30.5, 1.0])
    assert np.allclose(final_grid().affine @ np.array([0, 0, 0, 1.0]), centre)
    assert np.allclose(downsampled_grid().affine[:3, :3], 2 * np.eye(3))


def test_downsample_block_mean_majority_and_slice_drop() -> None:
    from mriad.preprocess.downsample import block_majority, block_mean, downsample

    image = np.arange(8, dtype=np.float32).reshape(2, 2, 2)
    assert block_mean(image)[0, 0, 0] == pytest.approx(3.5)
    mask = np.zeros((2, 2, 2), bool)
    mask[0, :, :] = True  # 4 of 8: a tie counts as inside
    assert block_majority(mask)[0, 0, 0]
    mask[0, 0, :] = False
    assert not block_majority(mask)[0, 0, 0]
    big = np.ones((192, 192, 160), np.float32)
    big_mask = np.zeros_like(big, bool)
    big_mask[40:150, 40:150, 20:140] = True
    small, small_mask, small_seg = downsample(big * 5, big_mask, big_mask)
    assert small.shape == small_mask.shape == small_seg.shape == (96, 96, 50)
    # Only brain voxels enter the average: no darker rim at the mask edge.
    assert np.allclose(small[small_mask], 5.0) and np.all(small[~small_mask] == 0)


def test_normalise_uses_percentiles_not_min_max() -> None:
    from mriad.preprocess.normalise import percentile_normalise

    rng = np.random.default_rng(1)
    image = rng.normal(100, 10, (30, 30, 30)).astype(np.float32)
    image[0, 0, 0] = 32767.0  # a saturated voxel must not squash the brain
    mask = np.ones_like(image, bool)
    mask[:, :, :3] = False
    out = percentile_normalise(image, mask)
    assert out.min() == 0.0 and out.max() == 1.0 and np.all(out[~mask] == 0)
    inside = out[mask]
    assert 0.4 < np.median(inside) < 0.6
    assert np.mean(inside >= 1.0) == pytest.approx(0.01, abs=0.003)


def test_n4_removes_a_smooth_bias_field() -> None:
    from mriad.preprocess.bias import n4_correct

    x, y, z = np.meshgrid(*[np.linspace(-1, 1, 64)] * 3, indexing="ij")
    mask = x**2 + y**2 + z**2 < 0.8
    tissue = np.where((x > 0) & mask, 100.0, 60.0).astype(np.float32)
    field = np.exp(0.3 * y + 0.2 * z).astype(np.float32)
    corrected = n4_correct(tissue * field, mask, shrink=2)
    assert np.all(corrected[~mask] == 0)

    def spread(image: np.ndarray) -> float:  # variation within one tissue class
        values = image[mask & (x > 0)]
        return float(values.std() / values.mean())

    assert spread(corrected) < 0.5 * spread(tissue * field)


def test_support_mask_fills_holes_and_ignores_interpolation_noise() -> None:
    from mriad.preprocess.skullstrip import support_mask

    data = np.zeros((40, 40, 40), np.float32)
    data[10:30, 10:30, 10:30] = 100.0
    data[18:22, 18:22, 18:22] = 0.0  # a dark hole inside the brain
    data[0, 0, 0] = 1e-4  # interpolation residue far away
    mask = support_mask(data)
    assert mask[20, 20, 20] and not mask[0, 0, 0] and mask.sum() == 20**3


def test_ants_conversion_round_trips_the_world(tmp_path) -> None:
    import ants
    import nibabel as nib

    from mriad.preprocess.register import to_ants

    data = np.random.default_rng(2).random((6, 7, 8)).astype(np.float32)
    affine = _oblique_free_affine("LPI", (1.0, 1.5, 2.0), origin=(30.0, 40.0, -10.0))
    path = tmp_path / "x.nii.gz"
    nib.save(nib.Nifti1Image(data, affine), path)
    reference = ants.image_read(str(path))
    mine = to_ants(data, affine)
    assert np.allclose(reference.origin, mine.origin) and np.allclose(reference.direction, mine.direction)
    assert np.allclose(reference.spacing, mine.spacing) and np.array_equal(reference.numpy(), mine.numpy())


def test_qc_picture_is_written(tmp_path) -> None:
    from mriad.preprocess.qc import write_qc

    image = np.random.default_rng(3).random((96, 96, 50)).astype(np.float32)
    mask = np.zeros_like(image, bool)
    mask[20:70, 20:70, 10:40] = True
    path = write_qc(tmp_path / "qc.png", image * mask, mask, mask & (image > 0.9), title="t")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(tmp_path.glob(".*tmp*"))


def test_unknown_methods_are_refused() -> None:
    from mriad.infra.errors import MriadError
    from mriad.preprocess.subject import Options

    with pytest.raises(MriadError, match="--skull-strip bet"):
        Options(skull_strip="bet")
    with pytest.raises(MriadError, match="--registration elastic"):
        Options(registration="elastic")


def test_deepbet_missing_gives_a_clear_error() -> None:
    try:
        import deepbet  # noqa: F401
    except ImportError:
        from mriad.infra.errors import MriadError
        from mriad.preprocess.skullstrip import deepbet_mask

        with pytest.raises(MriadError, match=r"mriad\[deepbet\]"):
            deepbet_mask(np.zeros((4, 4, 4), np.float32), np.eye(4))
    else:
        pytest.skip("deepbet is installed")


def test_whole_voxel_shift_is_an_exact_copy_like_interpolation() -> None:
    from scipy import ndimage

    from mriad.preprocess.resample import resample_to_grid

    rng = np.random.default_rng(4)
    data = rng.random((20, 18, 16)).astype(np.float32)
    affine = _oblique_free_affine("RAS", (1.0, 1.0, 1.0))
    grid = affine.copy()
    grid[:3, 3] += (-3.0, 4.0, 2.0)  # the output starts 3 voxels before, 4 and 2 after the input
    fast = resample_to_grid(data, affine, (25, 10, 20), grid)
    slow = ndimage.affine_transform(data, np.eye(3), offset=(-3, 4, 2), output_shape=(25, 10, 20), order=1)
    assert np.array_equal(fast, slow)
