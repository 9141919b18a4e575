"""`evaluate` with the manifest's optional ``ignore`` column, end to end on a fabricated run folder
(tiny 24x24x10 volumes): ignored voxels leave every number, and a manifest without the column (or
with empty ignore masks) is scored exactly as before."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from evaluate_helpers import AFFINE, write_subject
from sklearn.metrics import average_precision_score

from mriad.contracts.manifest import read_manifest, write_manifest
from mriad.evaluate.postprocess import postprocess
from mriad.evaluate.run import evaluate
from mriad.infra.io import read_nifti, write_nifti

SHAPE = (24, 24, 10)


def _blob() -> np.ndarray:
    """The ignored voxels ("other pathology"), inside the brain, away from the lesion."""
    blob = np.zeros(SHAPE, bool)
    blob[14:19, 13:18, 3:7] = True
    return blob


def _subject(data: Path, run: Path, split: str, subject: str, seed: int) -> dict:
    """A lesion subject whose score map is even higher on the ignored blob than on its lesion."""
    rng = np.random.default_rng(seed)
    mask = np.zeros(SHAPE, np.uint8)
    mask[3:21, 3:21, 1:9] = 1
    seg = np.zeros(SHAPE, np.uint8)
    corner = rng.integers(6, 9, 3)
    seg[corner[0] : corner[0] + 5, corner[1] : corner[1] + 5, 3:7] = 1
    image = (0.3 + 0.4 * rng.random(SHAPE)).astype(np.float32) * mask
    score = (0.5 * seg + 0.7 * _blob() + 0.1 * rng.random(SHAPE)).astype(np.float32) * mask
    row = write_subject(data, run, "wmh", split, subject, image=image, mask=mask, seg=seg, score=score)
    for name, values in (("ignore", _blob()), ("empty", np.zeros(SHAPE, bool))):
        write_nifti(data / "wmh" / subject / f"{name}.nii.gz", values.astype(np.uint8), AFFINE, dtype=np.uint8)
    return row


@pytest.fixture
def wmh_run(tmp_path: Path) -> tuple[Path, list[dict]]:
    from mriad.contracts.recon_records import input_digests, write_recon_record
    from mriad.contracts.run_folder import model_identity

    run = tmp_path / "runs" / "demo"
    rows = [_subject(tmp_path / "data", run, "val", f"V{i}", i) for i in range(2)]
    rows += [_subject(tmp_path / "data", run, "test", f"T{i}", 10 + i) for i in range(3)]
    (run / "config.json").write_text(json.dumps({"model": "pddpm", "fold": 0, "dataset": "wmh"}))
    for row in rows:
        inputs = input_digests(row["image"], row["mask"])
        write_recon_record(
            run, f"wmh-{row['split']}", row["subject_id"], inputs=inputs, model=model_identity(run), settings={}
        )
    return run, rows


def _manifest(tmp_path: Path, rows: list[dict], name: str, ignore: str | None) -> Path:
    """``ignore``: None (no column), ``empty`` (all-zero masks) or ``ignore`` (the blob)."""
    frame = pd.DataFrame(rows)
    if ignore is not None:
        frame["ignore"] = [Path(row["image"]).parent / f"{ignore}.nii.gz" for row in rows]
    return write_manifest(frame, tmp_path / "data" / name)


def _evaluate(run: Path, manifest: Path) -> tuple[dict, bytes]:
    summary = evaluate(run, "wmh-test", data=manifest, figures=False)
    return summary, (run / "eval" / "wmh-test" / "per_subject.csv").read_bytes()


def test_ignored_voxels_leave_every_number(wmh_run, tmp_path: Path) -> None:
    run, rows = wmh_run
    plain, plain_csv = _evaluate(run, _manifest(tmp_path, rows, "plain.csv", None))
    assert "ignore" not in (tmp_path / "data" / "plain.csv").read_text().splitlines()[0]
    assert "ignored_voxels" not in plain["settings"]
    manifest = _manifest(tmp_path, rows, "ignore.csv", "ignore")
    assert read_manifest(manifest)["ignore"].map(lambda p: Path(p).is_file()).all()  # resolved, absolute
    summary, _ = _evaluate(run, manifest)
    assert summary["settings"]["ignored_voxels"] == 3 * int(_blob().sum())
    assert summary["settings"]["ignored_subjects"] == 3
    table = pd.read_csv(run / "eval" / "wmh-test" / "per_subject.csv")
    keep = ~_blob()  # reference protocol: every voxel of the volume but the ignored ones
    pooled_scores, pooled_labels = [], []
    for row in (r for r in rows if r["split"] == "test"):
        score = read_nifti(run / "recon" / "wmh-test" / f"{row['subject_id']}_score.nii.gz", allow_empty=True).data
        mask = read_nifti(row["mask"]).data > 0
        anomaly = postprocess(torch.from_numpy(score), torch.from_numpy(mask), restrict_to_mask=False).numpy()
        seg = read_nifti(row["seg"]).data > 0
        got = table.loc[table["subject_id"] == row["subject_id"]].iloc[0]
        assert got["auprc"] == pytest.approx(average_precision_score(seg[keep], anomaly[keep]), abs=1e-9)
        assert got["lesion_voxels"] == int(seg[keep].sum())
        pooled_scores.append(anomaly[keep])
        pooled_labels.append(seg[keep])
    want = average_precision_score(np.concatenate(pooled_labels), np.concatenate(pooled_scores))
    assert summary["pooled_auprc"] == pytest.approx(want, abs=1e-9)
    # The map is highest on the ignored blob: scored as healthy, it ruins every number.
    for name in ("dice", "auprc", "auroc", "oracle_dice"):
        assert summary["metrics"][name]["mean"] > plain["metrics"][name]["mean"], name
    assert summary["metrics"]["auprc"]["mean"] > plain["metrics"]["auprc"]["mean"] + 0.05
    assert summary["threshold_val_dice"] > plain["threshold_val_dice"] + 0.05
    assert plain_csv != (run / "eval" / "wmh-test" / "per_subject.csv").read_bytes()


@pytest.mark.parametrize("protocol", ["reference", "brain"])
def test_no_column_and_empty_masks_score_as_before(wmh_run, tmp_path: Path, protocol: str) -> None:
    run, rows = wmh_run
    plain = evaluate(
        run, "wmh-test", data=_manifest(tmp_path, rows, "plain.csv", None), figures=False, protocol=protocol
    )
    plain_csv = (run / "eval" / "wmh-test" / "per_subject.csv").read_bytes()
    empty = evaluate(
        run, "wmh-test", data=_manifest(tmp_path, rows, "empty.csv", "empty"), figures=False, protocol=protocol
    )
    assert (run / "eval" / "wmh-test" / "per_subject.csv").read_bytes() == plain_csv
    assert empty["settings"].pop("ignored_voxels") == 0 and empty["settings"].pop("ignored_subjects") == 0
    empty["settings"].pop("ignored")
    for key in ("metrics", "threshold", "threshold_val_dice", "pooled_auprc", "pooled_oracle_dice", "slice_auroc"):
        assert empty[key] == plain[key], key
    assert {k: v for k, v in empty["settings"].items() if k != "data"} == {
        k: v for k, v in plain["settings"].items() if k != "data"
    }
