"""The transform sidecar: what `preprocess` records per subject and the way back to the scan's own grid."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from mriad.infra.errors import InputError
from mriad.infra.io import Volume, read_nifti
from mriad.preprocess.transform import Transform, read_transform, sidecar_record, to_native


def _rotation(degrees: float) -> np.ndarray:
    angle = np.deg2rad(degrees)
    matrix = np.eye(4)
    matrix[:2, :2] = [[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]]
    matrix[:3, 3] = [4.0, -7.5, 12.25]
    return matrix


def test_to_native_samples_the_final_grid_where_each_native_voxel_lies() -> None:
    """A linear ramp on the final grid maps to exactly its value at each native voxel's position:
    linear interpolation reproduces linear functions, so any composition error shows."""
    from mriad.atlas import final_grid

    final = final_grid()
    native_affine = np.array([[-0.9, 0, 0, 0], [0, 0, 1.3, 0], [0, -1.1, 0, 0], [0, 0, 0, 1]])
    # Place the scan so that its centre is where the final grid's centre lands in the subject.
    centre = _rotation(10.0) @ final.affine @ np.array([47.5, 47.5, 24.5, 1.0])
    native_affine[:3, 3] = centre[:3] - native_affine[:3, :3] @ np.array([19.5, 24.5, 14.5])
    transform = Transform((40, 50, 30), native_affine, final.shape, final.affine, _rotation(10.0), "affine")
    i, j, k = np.meshgrid(*[np.arange(n, dtype=float) for n in final.shape], indexing="ij")
    ramp = (0.5 * i + 0.25 * j + 2.0 * k + 1.0).astype(np.float32)
    mapped = to_native(ramp, transform, order=1)
    assert mapped.shape == (40, 50, 30) and mapped.dtype == np.float32
    native_voxels = np.argwhere(np.ones((40, 50, 30), bool)).T
    coords = transform.final_to_native_voxels() @ np.vstack([native_voxels, np.ones(native_voxels.shape[1])])
    expected = 0.5 * coords[0] + 0.25 * coords[1] + 2.0 * coords[2] + 1.0
    inside = np.all((coords[:3] >= 0) & (coords[:3] <= np.array(final.shape)[:, None] - 1), axis=0)
    assert inside.sum() > 1000  # the test looks at many voxels
    np.testing.assert_allclose(mapped.reshape(-1)[inside], expected[inside], atol=1e-3)


def test_nearest_keeps_labels_binary() -> None:
    from mriad.atlas import final_grid

    final = final_grid()
    native_affine = np.diag([3.0, 3.0, 3.0, 1.0])
    native_affine[:3, 3] = final.affine[:3, 3]  # 3 mm voxels from the final grid's first voxel on
    transform = Transform((60, 60, 30), native_affine, final.shape, final.affine, np.eye(4), "none")
    mask = np.zeros(final.shape, np.uint8)
    mask[30:60, 30:60, 10:40] = 1
    mapped = to_native(mask, transform, order=0)
    assert mapped.dtype == np.uint8 and set(np.unique(mapped)) == {0, 1}
    assert mapped[25, 25, 10] == 1 and mapped[5, 5, 5] == 0  # final voxel (37.5, 37.5, 15) / (7.5, 7.5, 7.5)


def test_sidecar_records_every_step() -> None:
    native = Volume(np.zeros((20, 30, 10), np.float32), np.diag([-2.0, 1.0, 3.0, 1.0]), path="/x/scan.nii.gz")
    record = sidecar_record(native, "affine-fast", _rotation(5.0), revision=3)
    assert record["native"] == {"file": "scan.nii.gz", "shape": [20, 30, 10], "affine": native.affine.tolist()}
    assert record["reorient"]["from"] == "LAS" and record["reorient"]["to"] == "RAS"
    assert record["resample"]["done"] is True  # 2 mm and 3 mm voxels become 1 mm
    assert record["resample"]["shape"] == [40, 30, 30]
    assert record["registration"]["method"] == "affine-fast" and record["registration"]["ants_file"] == "transform.mat"
    assert record["crop"]["shape"] == [192, 192, 160]
    assert record["downsample"]["factor"] == 2 and record["slices"]["dropped_each_end"] == 15
    assert record["final"]["shape"] == [96, 96, 50]
    json.dumps(record)  # plain JSON


def test_a_folder_without_sidecar_is_refused_with_the_fix(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="mriad preprocess"):
        read_transform(tmp_path)


def test_syn_folders_are_refused(tmp_path: Path) -> None:
    from mriad.preprocess.transform import write_sidecar

    native = Volume(np.zeros((8, 8, 8), np.float32), np.eye(4), path="s.nii.gz")
    write_sidecar(tmp_path, native, "syn", np.eye(4), 3)
    with pytest.raises(InputError, match="non-linear"):
        read_transform(tmp_path)


def test_preprocess_writes_the_sidecar_and_the_maps_go_back(raw_scan: dict[str, Path], training_data: Path) -> None:
    """The preprocessed brain and lesion masks mapped back onto the raw scan's grid match the originals."""
    from mriad.evaluate.metrics import dice_score
    from mriad.preprocess import markers
    from mriad.preprocess.register import ants_affine_to_ras
    from mriad.preprocess.subject import PIPELINE_REVISION

    folder = Path(str(read_nifti_path(training_data))).parent
    record = markers.read_done(folder)
    assert record is not None and record["options"]["revision"] == PIPELINE_REVISION == 4
    assert {"transform.json", "transform.mat"} <= set(record["files"])
    transform = read_transform(folder)
    raw = read_nifti(raw_scan["scan"])
    assert transform.native_shape == raw.shape and np.allclose(transform.native_affine, raw.affine)
    np.testing.assert_allclose(
        ants_affine_to_ras(str(folder / "transform.mat")), transform.template_to_subject, atol=1e-6
    )
    brain = to_native(read_nifti(folder / "mask.nii.gz").data.astype(np.uint8), transform, order=0) > 0
    seg = to_native(read_nifti(folder / "seg.nii.gz").data.astype(np.uint8), transform, order=0) > 0
    brain_dice = dice_score(brain, read_nifti(raw_scan["brain"]).data > 0)
    seg_dice = dice_score(seg, read_nifti(raw_scan["seg"], allow_empty=True).data > 0)
    assert brain_dice >= 0.9, brain_dice
    assert seg_dice >= 0.85, seg_dice


def read_nifti_path(manifest: Path) -> str:
    import pandas as pd

    frame = pd.read_csv(manifest)
    return str(manifest.parent / str(frame["image"].iloc[0]))
