"""`evaluate --shard i/n` + `--merge` write what one unsharded evaluate writes (tiny fabricated run)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from evaluate_helpers import write_subject

from mriad.contracts.manifest import write_manifest
from mriad.infra.errors import MriadError

ROOT = Path(__file__).resolve().parents[2]
SHAPE = (32, 32, 12)


def _subject(data: Path, run: Path, dataset: str, split: str, subject: str, seed: int, lesion: bool) -> dict:
    """A subject with maps; brain masks differ in size (the brain protocol ranks rows of unequal
    length), some lesions touch the brain's edge and some score maps are quantised (ties between
    voxels and across subjects)."""
    rng = np.random.default_rng(seed)
    mask = np.zeros(SHAPE, np.uint8)
    low, high = rng.integers(2, 6, 2)
    mask[low : 32 - high, 3:29, 1:11] = 1
    image = (0.3 + 0.4 * rng.random(SHAPE)).astype(np.float32) * mask
    seg = np.zeros(SHAPE, np.uint8)
    if lesion:
        centre = np.array([16, 16, 6]) + rng.integers(-2, 3, 3)
        if seed % 4 == 1:  # at the brain's edge: lesion voxels in the eroded rim score 0, last in the ranking
            centre[0] = low + 1
        grid = np.indices(SHAPE).transpose(1, 2, 3, 0)
        seg[(((grid - centre) / [5, 4, 3]) ** 2).sum(-1) <= 1] = 1
    score = (0.5 * seg * rng.random(SHAPE) + 0.1 * rng.random(SHAPE)).astype(np.float32) * mask
    if seed % 2:
        score = np.round(score * 64) / 64
    rec = image - score * (1 - 2 * (seed % 3 == 0))  # some reconstructions overshoot the image
    seg_or_none = seg if lesion else None
    return write_subject(
        data, run, dataset, split, subject, image=image, mask=mask, seg=seg_or_none, score=score, rec=rec
    )


@pytest.fixture(scope="module")
def sharded_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """brats-val (2), brats-test (5 lesion + 1 healthy, one without maps), ixi-val (2), ixi-test (3)."""
    from mriad.contracts.recon_records import input_digests, write_recon_record
    from mriad.contracts.run_folder import model_identity

    root = tmp_path_factory.mktemp("shards")
    run = root / "runs" / "demo"
    plan = [("brats", "val", 2, True), ("brats", "test", 5, True), ("ixi", "val", 2, False), ("ixi", "test", 3, False)]
    rows = []
    for number, (dataset, split, count, lesion) in enumerate(plan):
        for i in range(count):
            rows.append(_subject(root / "data", run, dataset, split, f"{dataset}{split}{i}", 10 * number + i, lesion))
    rows.append(_subject(root / "data", run, "brats", "test", "bratstest-healthy", 99, False))
    write_manifest(pd.DataFrame(rows), root / "data" / "manifest.csv")
    (run / "config.json").write_text(
        json.dumps({"model": "pddpm", "fold": 0, "data": str(root / "data" / "manifest.csv")})
    )
    for row in rows:
        split = f"{row['dataset']}-{row['split']}"
        inputs = input_digests(row["image"], row["mask"])
        write_recon_record(run, split, row["subject_id"], inputs=inputs, model=model_identity(run), settings={})
    (run / "recon" / "brats-test" / "bratstest2_score.nii.gz").unlink()  # a failure, listed by its shard
    return run


def _outputs(run: Path, split: str) -> dict[str, bytes]:
    folder = run / "eval" / split
    return {name: (folder / name).read_bytes() for name in ("per_subject.csv", "summary.json", "failures.csv")
            if (folder / name).is_file()}  # fmt: skip


def _unsharded(run: Path, split: str, **settings: object) -> dict[str, bytes]:
    from mriad.evaluate import evaluate

    evaluate(run, split, **settings)
    outputs = _outputs(run, split)
    shutil.rmtree(run / "eval" / split)
    return outputs


@pytest.mark.parametrize(
    ("split", "count", "settings"),
    [
        ("brats-test", 2, {}),
        ("brats-test", 3, {"protocol": "brain", "healthy_split": "ixi-test", "threshold_search": "bisection"}),
        ("ixi-test", 2, {"healthy_split": "ixi-test", "threshold": 0.05}),
    ],
)
def test_shards_then_merge_equal_one_run(sharded_run: Path, split: str, count: int, settings: dict) -> None:
    from mriad.evaluate.merge import merge_shards
    from mriad.evaluate.sharded import score_shard

    expected = _unsharded(sharded_run, split, figures=False, **settings)
    for index in range(count):
        score_shard(sharded_run, split, (index, count), figures=False, **settings)
    merge_shards(sharded_run, split, figures=False, **settings)
    got = _outputs(sharded_run, split)
    shutil.rmtree(sharded_run / "eval" / split)
    assert sorted(got) == sorted(expected)
    assert got["per_subject.csv"] == expected["per_subject.csv"]
    # summary.json has no timings; its paths are the run's own, so the whole file is the same.
    assert json.loads(got["summary.json"]) == json.loads(expected["summary.json"])
    assert got["summary.json"] == expected["summary.json"]
    if split == "brats-test":
        assert b"bratstest2" in got["failures.csv"]


def test_merge_refuses_missing_shards_other_options_and_changed_maps(sharded_run: Path) -> None:
    from mriad.evaluate.merge import merge_shards
    from mriad.evaluate.sharded import score_shard

    split, run = "brats-test", sharded_run
    with pytest.raises(MriadError, match="no shard results"):
        merge_shards(run, split)
    score_shard(run, split, (0, 3))
    with pytest.raises(MriadError, match=r"shard\(s\) 1/3, 2/3 missing"):
        merge_shards(run, split)
    score_shard(run, split, (1, 3))
    score_shard(run, split, (2, 3))
    with pytest.raises(MriadError, match="calibration.json: made with other options"):
        merge_shards(run, split, protocol="brain")
    record = run / "recon" / split / "bratstest1.json"
    saved = record.read_bytes()
    record.write_bytes(saved.replace(b"{", b"{ ", 1))  # the same record written again: other bytes
    try:
        with pytest.raises(MriadError, match=r"maps of bratstest1 changed .* shard 1/3 again"):
            merge_shards(run, split)
    finally:
        record.write_bytes(saved)
    # Another cut removes the old one's results; its shards then need all of theirs.
    score_shard(run, split, (0, 2))
    assert sorted(p.name for p in (run / "eval" / split / "shards").glob("*.npz")) == ["0-of-2.npz"]
    with pytest.raises(MriadError, match="1/2 missing"):
        merge_shards(run, split)
    shutil.rmtree(run / "eval" / split)


def test_two_shard_processes_at_once_calibrate_once(sharded_run: Path, tmp_path: Path) -> None:
    from mriad.evaluate.merge import merge_shards

    run = shutil.copytree(sharded_run, tmp_path / "run")
    expected = _unsharded(run, "brats-test", figures=False)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MRIAD_WORKSPACE": str(tmp_path), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "mriad", "--device", "cpu", "evaluate", "--run", str(run), "--split", "brats-test"]
    shards = [
        subprocess.Popen(
            [*command, "--shard", f"{i}/2"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )  # fmt: skip
        for i in range(2)
    ]
    outputs = [p.communicate(timeout=120) for p in shards]
    # Exit 1: the subject without maps is a failure of shard 0, as it is of one run.
    assert [p.returncode for p in shards] == [1, 0], outputs
    logs = [out + err for out, err in outputs]
    assert sum("calibrated on brats-val" in log for log in logs) == 1, logs
    assert sum("calibrated already, reused" in log for log in logs) == 1, logs
    assert not list((run / "eval" / "brats-test").glob(".mriad.lock*"))
    merge_shards(run, "brats-test", figures=False)
    got = _outputs(run, "brats-test")
    assert got["per_subject.csv"] == expected["per_subject.csv"] and got["summary.json"] == expected["summary.json"]


def test_cli_shard_options(cli, sharded_run: Path) -> None:
    args = ["--device", "cpu", "evaluate", "--run", sharded_run, "--split", "brats-test"]
    for value in ("3/2", "1", "a/b"):
        result = cli(*args, "--shard", value)
        assert result.exit_code == 2 and "--shard" in result.output and len(result.output.strip().splitlines()) == 1
    both = cli(*args, "--shard", "0/2", "--merge")
    assert both.exit_code == 2 and "--merge" in both.output and len(both.output.strip().splitlines()) == 1
    merge = cli(*args, "--merge")
    assert merge.exit_code == 1 and "no shard results" in merge.output
    help_text = cli("evaluate", "--help").output
    assert "--shard" in help_text and "--merge" in help_text


def test_a_volume_gets_the_same_numbers_alone_and_in_a_batch() -> None:
    """A shard groups volumes otherwise than one run: a lone row (torch adds it across threads when it
    has 32,768 elements or more) must get the bits it gets among others. With these rows and 2 threads,
    a plain ``sum(1)`` differs in the last bits (AUPRC, and the l1 total of seed 2's second row)."""
    import torch

    from mriad.evaluate import metrics as M

    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        generator = torch.Generator().manual_seed(0)
        scores = torch.rand(3, 200_000, generator=generator)
        labels = torch.rand(3, 200_000, generator=generator) < scores * 0.1
        batch, alone = M.ranking_metrics(scores, labels), M.ranking_metrics(scores[1:2], labels[1:2])
        assert torch.equal(batch.auprc[1:2], alone.auprc) and torch.equal(batch.auroc[1:2], alone.auroc)
        generator = torch.Generator().manual_seed(2)
        image = torch.rand(3, 460_800, generator=generator, dtype=torch.float64)
        image *= torch.rand(3, 460_800, generator=generator) < 0.3
        zeros, brain = torch.zeros_like(image), torch.ones(image.shape, dtype=torch.bool)
        l1 = M.mean_abs_inside(image, zeros, brain)
        assert torch.equal(l1[1:2], M.mean_abs_inside(image[1:2], zeros[1:2], brain[1:2]))
    finally:
        torch.set_num_threads(threads)
