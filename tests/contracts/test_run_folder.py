"""The run-folder contract (mriad.contracts.run_folder): paths, refused names, config.json, map records."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from mriad.contracts import recon_records as rr
from mriad.contracts import run_folder as rf
from mriad.contracts.run_folder import RunFolder
from mriad.infra.digests import file_sha256
from mriad.infra.errors import InputError, MriadError


def test_every_path_of_the_layout(tmp_path: Path) -> None:
    run = RunFolder(tmp_path / "run")
    root = tmp_path / "run"
    assert run.config == root / "config.json" and run.metrics == root / "metrics.csv"
    assert run.last == root / "checkpoints" / "last.pt" and run.best == root / "checkpoints" / "best.pt"
    assert run.recon_files("brats-test", "BraTS2021_00001") == (
        root / "recon" / "brats-test" / "BraTS2021_00001_rec.nii.gz",
        root / "recon" / "brats-test" / "BraTS2021_00001_score.nii.gz",
    )
    assert run.recon_record("brats-test", "S1") == root / "recon" / "brats-test" / "S1.json"
    assert run.per_subject("ixi-test") == root / "eval" / "ixi-test" / "per_subject.csv"
    assert run.summary("ixi-test") == root / "eval" / "ixi-test" / "summary.json"
    assert run.figures("ixi-test") == root / "eval" / "ixi-test" / "figures"
    assert run.report == root / "report.html" and run.lock == root / ".mriad.lock"
    with pytest.raises(MriadError, match="--checkpoint 'final'"):
        run.checkpoint("final")


@pytest.mark.parametrize("bad", ["../x", "a/b", "..", "/abs", ""])
def test_names_that_would_leave_the_folder_are_refused(tmp_path: Path, bad: str) -> None:
    run = RunFolder(tmp_path / "run")
    for build in (
        lambda: run.recon_files("brats-test", bad),
        lambda: run.recon_record("brats-test", bad),
        lambda: run.recon_dir(bad),
        lambda: run.eval_dir(bad),
        lambda: run.summary(bad),
    ):
        with pytest.raises(InputError, match="cannot be used in a file name") as caught:
            build()
        assert "\n" not in str(caught.value)
    assert not (tmp_path / "run").exists() and not (tmp_path / "x").exists()


def test_config_round_trip(tmp_path: Path) -> None:
    run = RunFolder(tmp_path / "run")
    run.root.mkdir()
    assert run.read_config_if_any() is None and not run.is_run()
    written = rf.write_config(
        run, model="ae", fold=2, data=tmp_path / "m.csv", options={"lr": 0.001}, seed=7, dataset="ixi"
    )
    assert run.is_run() and rf.is_run_folder(run.root)
    assert run.read_config() == written == rf.read_run_config(run.root)
    assert written["data"] == str((tmp_path / "m.csv").resolve()) and written["options"] == {"lr": 0.001}
    assert {"mriad", "torch", "numpy", "scipy", "python"} <= set(written["versions"]) == set(rf.versions())


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "not a run folder (no config.json)"),
        ('{"model": "ae",', "not valid JSON (line 1"),
        ("[1, 2]", "expected a JSON object"),
        ('{"fold": 0}', 'has no "model" entry'),
        (b"\xff\xfe\x00", "unreadable run config"),
    ],
)
def test_a_missing_or_corrupt_config_is_one_line_naming_the_file(
    tmp_path: Path, content: str | bytes | None, message: str
) -> None:
    run = RunFolder(tmp_path / "run")
    run.root.mkdir()
    if isinstance(content, bytes):
        run.config.write_bytes(content)
    elif content is not None:
        run.config.write_text(content)
    with pytest.raises(InputError) as caught:
        run.read_config()
    text = str(caught.value)
    assert message in text and "\n" not in text
    assert text.startswith(str(run.config if content is not None else run.root))


def test_model_checkpoint_falls_back_to_last(tmp_path: Path) -> None:
    run = RunFolder(tmp_path / "run")
    assert run.model_checkpoint("best") is None
    run.checkpoints.mkdir(parents=True)
    run.last.write_bytes(b"last")
    assert run.model_checkpoint("best") == run.last and run.model_checkpoint("last") == run.last
    run.best.write_bytes(b"best")
    assert run.model_checkpoint("best") == run.best
    assert run.checkpoint_files() == [run.best, run.last]


def _maps(tmp_path: Path) -> tuple[RunFolder, Path, Path]:
    run = RunFolder(tmp_path / "run")
    run.checkpoints.mkdir(parents=True)
    run.best.write_bytes(b"weights v1")
    run.config.write_text(json.dumps({"model": "ae", "options": {}}))
    image, mask = tmp_path / "image.nii.gz", tmp_path / "mask.nii.gz"
    image.write_bytes(b"scan v1")
    mask.write_bytes(b"mask v1")
    rec, score = run.recon_files("brats-test", "S1")
    rec.parent.mkdir(parents=True)
    rec.write_bytes(b"rec")
    score.write_bytes(b"score")
    return run, image, mask


def _rewrite(path: Path, payload: bytes) -> None:
    """New content and a new mtime (the digest cache is keyed on size and mtime_ns)."""
    stat = path.stat()
    path.write_bytes(payload)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))


def test_a_record_matches_only_what_made_the_maps(tmp_path: Path) -> None:
    run, image, mask = _maps(tmp_path)
    settings = {"which": "best", "seed": 0, "skip_empty_boxes": True, "inference": {}, "volumes_per_batch": 4}
    model = rf.model_identity(run.root)
    assert model == {"which": "best", "checkpoint": "best.pt", "sha256": file_sha256(run.best)}
    inputs = rr.input_digests(image, mask)
    assert rr.recon_mismatch(run.root, "brats-test", "S1", inputs) == "maps without a record of what made them"
    rr.write_recon_record(run.root, "brats-test", "S1", inputs=inputs, model=model, settings=settings)
    record = rr.read_recon_record(run.root, "brats-test", "S1")
    assert record is not None and record["inputs"] == inputs and record["model"] == model
    assert rr.recon_mismatch(run.root, "brats-test", "S1", inputs, model=model, settings=settings) is None
    assert rr.stale_maps(run.root, "brats-test", "S1", image, mask) is None
    # the batch size is recorded, not matched; the seed is matched
    assert (
        rr.recon_mismatch(run.root, "brats-test", "S1", inputs, settings={**settings, "volumes_per_batch": 8}) is None
    )
    assert "seed" in str(rr.recon_mismatch(run.root, "brats-test", "S1", inputs, settings={**settings, "seed": 1}))

    _rewrite(mask, b"mask v2")
    assert rr.stale_maps(run.root, "brats-test", "S1", image, mask) == "made from another version of the brain mask"
    _rewrite(mask, b"mask v1")
    _rewrite(image, b"scan v2")
    assert rr.stale_maps(run.root, "brats-test", "S1", image, mask) == "made from another version of the image"
    _rewrite(image, b"scan v1")
    assert rr.stale_maps(run.root, "brats-test", "S1", image, mask) is None
    _rewrite(run.best, b"weights v2")
    assert rr.stale_maps(run.root, "brats-test", "S1", image, mask) == "made by another checkpoint"
    _rewrite(run.best, b"weights v1")
    run.recon_files("brats-test", "S1")[1].write_bytes(b"other score")
    assert rr.stale_maps(run.root, "brats-test", "S1", image, mask) == "maps changed after they were recorded"
    image.unlink()
    assert str(rr.stale_maps(run.root, "brats-test", "S1", image, mask)).startswith(f"{image}: cannot be read")
    run.remove_recon("brats-test", "S1")
    assert not list(run.recon_dir("brats-test").iterdir())


def test_untrained_models_are_identified_by_their_options(tmp_path: Path) -> None:
    run = RunFolder(tmp_path / "run")
    run.root.mkdir()
    run.config.write_text(json.dumps({"model": "thresh", "options": {"level": 0.5}}))
    first = rf.model_identity(run.root)
    assert first["checkpoint"] is None and len(first["options_sha256"]) == 64
    run.config.write_text(json.dumps({"model": "thresh", "options": {"level": 0.6}}))
    assert rf.model_identity(run.root) != first


def test_evaluation_provenance_names_manifest_and_checkpoint(tmp_path: Path) -> None:
    run, image, mask = _maps(tmp_path)
    model = rf.model_identity(run.root)
    inputs = rr.input_digests(image, mask)
    rr.write_recon_record(run.root, "brats-test", "S1", inputs=inputs, model=model, settings={})
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("subject_id\nS1\n")
    provenance = rf.evaluation_provenance(run.root, manifest, {"brats-test": ["S1", "S2"]})
    assert provenance == {
        "manifest": {"path": str(manifest), "sha256": file_sha256(manifest)},
        "checkpoints": [model],
    }
