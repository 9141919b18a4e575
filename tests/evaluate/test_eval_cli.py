"""`mriad evaluate` end to end on a fabricated run folder (tiny 32x32x12 volumes)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from evaluate_helpers import write_subject

from mriad.contracts.manifest import write_manifest

SHAPE = (32, 32, 12)


def _subject(root: Path, run: Path, dataset: str, split: str, subject: str, seed: int, lesion: bool) -> dict:
    rng = np.random.default_rng(seed)
    mask = np.zeros(SHAPE, np.uint8)
    mask[3:29, 3:29, 1:11] = 1
    image = (0.3 + 0.4 * rng.random(SHAPE)).astype(np.float32) * mask
    seg = np.zeros(SHAPE, np.uint8)
    if lesion:
        centre = np.array([16, 16, 6]) + rng.integers(-2, 3, 3)
        grid = np.indices(SHAPE).transpose(1, 2, 3, 0)
        seg[(((grid - centre) / [5, 4, 3]) ** 2).sum(-1) <= 1] = 1
    score = (0.6 * seg + 0.08 * rng.random(SHAPE)).astype(np.float32) * mask
    return write_subject(
        root, run, dataset, split, subject, image=image, mask=mask, seg=seg if lesion else None, score=score
    )


@pytest.fixture
def fake_run(tmp_path: Path) -> Path:
    run = tmp_path / "runs" / "demo"
    rows = []
    for i in range(3):
        rows.append(_subject(tmp_path / "data", run, "brats", "val", f"BV{i}", i, True))
    for i in range(4):
        rows.append(_subject(tmp_path / "data", run, "brats", "test", f"BT{i}", 10 + i, True))
    for i in range(3):
        rows.append(_subject(tmp_path / "data", run, "ixi", "test", f"IXI{i}", 20 + i, False))
    manifest = tmp_path / "data" / "manifest.csv"
    write_manifest(pd.DataFrame(rows), manifest)
    (run / "config.json").write_text(json.dumps({"model": "pddpm", "fold": 0, "data": str(manifest)}))
    _record_maps(run, rows)
    return run


def _record_maps(run: Path, rows: list[dict]) -> None:
    """What `mriad reconstruct` writes beside the maps: without it they count as stale and are redone."""
    from mriad.contracts.recon_records import input_digests, write_recon_record
    from mriad.contracts.run_folder import model_identity

    for row in rows:
        split = f"{row['dataset']}-{row['split']}"
        inputs = input_digests(row["image"], row["mask"])
        write_recon_record(run, split, row["subject_id"], inputs=inputs, model=model_identity(run), settings={})


def test_evaluate_lesion_split_end_to_end(cli, fake_run: Path) -> None:
    result = cli("--device", "cpu", "evaluate", "--run", fake_run, "--split", "brats-test")
    assert result.exit_code == 0, result.output
    out = fake_run / "eval" / "brats-test"
    table = pd.read_csv(out / "per_subject.csv")
    assert list(table.columns) == [
        "subject_id",
        "dataset",
        "label",
        "dice",
        "auprc",
        "auroc",
        "oracle_dice",
        "l1",
        "lesion_voxels",
        "predicted_voxels",
        "protocol",
    ]
    assert (table["protocol"] == "reference").all()
    assert len(table) == 4 and (table["dice"] > 0.75).all() and (table["auprc"] > 0.9).all()
    assert (table["auroc"] > 0.95).all() and (table["oracle_dice"] >= table["dice"] - 1e-9).all()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["val_split"] == "brats-val" and summary["threshold_search"] == "exact"
    assert summary["schema_version"] == 2 and summary["protocol"] == "reference"
    assert summary["settings"]["connectivity"] == 26 and summary["settings"]["clamp"] is False
    assert 0.9 < summary["slice_auroc"] <= 1 and summary["pooled_oracle_dice"] >= summary["metrics"]["dice"]["mean"]
    manifest = fake_run.parent.parent / "data" / "manifest.csv"
    assert summary["healthy"] == {"split": None, "note": f"no ixi-val split in {manifest}"}
    assert 0.04 < summary["threshold"] < 0.6 and summary["n_subjects"] == 4
    assert summary["metrics"]["dice"]["mean"] == pytest.approx(table["dice"].mean())
    assert summary["pooled_auprc"] > 0.9 and summary["versions"]["mriad"]
    assert (out / "figures" / "examples.png").stat().st_size > 1000
    assert (out / "figures" / "pr_curve.png").stat().st_size > 1000
    assert "dice" in result.output


def test_evaluate_healthy_split_json_and_bisection(cli, fake_run: Path) -> None:
    from mriad.infra.workspace import remember_run

    remember_run(fake_run)  # --run defaults to the workspace's last run
    result = cli("--json", "--device", "cpu", "evaluate", "--split", "ixi-test", "--no-figures")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["threshold"] is None and set(summary["fpr_thresholds"]) == {"1%", "5%", "10%"}
    assert 0.0 < summary["metrics"]["l1"]["mean"] < 0.08  # mean |x - x_hat| = the noise inside the brain
    assert "dice" not in summary["metrics"]
    assert not (fake_run / "eval" / "ixi-test" / "figures").exists()

    result = cli(
        "--device",
        "cpu",
        "evaluate",
        "--run",
        fake_run,
        "--split",
        "brats-test",
        "--threshold-search",
        "bisection",
        "--no-figures",
    )
    assert result.exit_code == 0, result.output
    bisect = json.loads((fake_run / "eval" / "brats-test" / "summary.json").read_text())
    assert bisect["threshold_search"] == "bisection"
    fixed = cli(
        "--device", "cpu", "evaluate", "--run", fake_run, "--split", "brats-test", "--threshold", "0.3", "--no-figures"
    )
    assert fixed.exit_code == 0, fixed.output
    assert json.loads((fake_run / "eval" / "brats-test" / "summary.json").read_text())["threshold"] == 0.3


def test_missing_reconstructions(cli, fake_run: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """evaluate() only reads maps; `mriad evaluate` runs the reconstruct stage for missing ones first."""
    import mriad.reconstruct
    from mriad.evaluate import evaluate
    from mriad.evaluate.run import splits_to_reconstruct
    from mriad.infra.errors import InputError

    folder = fake_run / "recon" / "brats-test"
    saved = {path.name: path.read_bytes() for path in folder.iterdir()}
    (folder / "BT1_score.nii.gz").unlink()
    assert splits_to_reconstruct(fake_run, "brats-test")[1] == ["brats-test"]
    summary = evaluate(fake_run, "brats-test", figures=False)  # one subject without maps: a failure
    assert summary["n_subjects"] == 3 and [f["subject_id"] for f in summary["failures"]] == ["BT1"]
    for path in folder.iterdir():
        path.unlink()
    with pytest.raises(InputError, match="mriad reconstruct --run"):
        evaluate(fake_run, "brats-test", figures=False)

    calls = []

    def reconstruct(run: Path, split: str, *, data: Path, device: str) -> None:
        calls.append(split)
        for name, content in saved.items():
            (folder / name).write_bytes(content)

    monkeypatch.setattr(mriad.reconstruct, "reconstruct", reconstruct)
    result = cli("--device", "cpu", "evaluate", "--run", fake_run, "--split", "brats-test", "--no-figures")
    assert result.exit_code == 0, result.output
    assert calls == ["brats-test"] and "reconstructing them first" in result.output
    assert json.loads((fake_run / "eval" / "brats-test" / "summary.json").read_text())["n_subjects"] == 4


def test_healthy_split_gives_fpr_dice_and_l1_and_brain_protocol(cli, fake_run: Path) -> None:
    args = ["--device", "cpu", "evaluate", "--run", fake_run, "--split", "brats-test", "--no-figures"]
    result = cli(*args, "--healthy-split", "ixi-test", "--protocol", "brain")
    assert result.exit_code == 0, result.output
    summary = json.loads((fake_run / "eval" / "brats-test" / "summary.json").read_text())
    healthy = summary["healthy"]
    assert healthy["split"] == "ixi-test" and healthy["n_subjects"] == 3 and 0 < healthy["l1"]["mean"] < 0.08
    assert list(healthy["fpr_thresholds"]) == ["1%", "5%", "10%"]
    thresholds = list(healthy["fpr_thresholds"].values())
    assert thresholds[0] > thresholds[1] > thresholds[2]  # 1 % FPR needs the highest threshold
    dice = healthy["dice_at_fpr"]
    assert set(dice) == {"1%", "5%", "10%"} and all(0 <= d["mean"] <= 1 for d in dice.values())
    assert summary["protocol"] == "brain" and summary["settings"]["connectivity"] == 6
    assert summary["settings"]["clamp"] is True and "brain protocol" in result.output
    assert (pd.read_csv(fake_run / "eval" / "brats-test" / "per_subject.csv")["protocol"] == "brain").all()
    bad = cli(*args, "--healthy-split", "brats-val")
    assert bad.exit_code == 1 and "holds lesion subjects" in bad.output
    assert cli(*args, "--protocol", "paper").exit_code != 0
