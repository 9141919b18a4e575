"""Box skipping: the brain mask saves network calls and leaves the anomaly map inside it bit-identical.

Checked twice: on the model (pDDPM.reconstruct with and without ``mask=``, several chunk sizes, an
all-empty slice, a mask that empties some boxes), and through the stage (`mriad.reconstruct` reading
each subject's mask from the manifest, compared with ``skip_empty_boxes=False``).
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from mriad.infra.io import read_nifti
from mriad.models.patches import box_masks, boxes_with_brain, chunk_size, grid_boxes
from mriad.models.registry import build_model

TINY = {"base_channels": 8, "channel_mult": "1,2", "num_res_blocks": 1, "groups": 4, "head_channels": 16}


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


def _random_weights(model: nn.Module) -> nn.Module:
    torch.manual_seed(0)
    for p in model.parameters():  # zero-initialised output layers would make every output equal
        if p.dim() > 1:
            nn.init.normal_(p, std=0.2)
    return model.eval()


def _mask(n: int, size: int = 32) -> torch.Tensor:
    """Brain in the top-left corner of most slices, a whole disc in one, nothing in the last."""
    mask = torch.zeros(n, 1, size, size, dtype=torch.bool)
    mask[:, :, 2:12, 3:14] = True  # only the top-left 16-box (of four) holds brain
    rows, cols = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    mask[1, 0] = (rows - 16) ** 2 + (cols - 15) ** 2 < 120  # touches every box
    mask[-1] = False
    return mask


class _Counter(nn.Module):
    """Wraps the network and counts the inputs it is given (padding included)."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net, self.inputs = net, 0

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        self.inputs += x.shape[0]
        return self.net(x, t)


@pytest.mark.parametrize(
    "name,patch,max_chunk", [("pddpm", 16, None), ("pddpm", 16, 3), ("pddpm", 20, 7), ("ddpm", None, 2)]
)
def test_box_skip_keeps_the_map_inside_the_mask_bit_identical(name: str, patch: int | None, max_chunk: int | None):
    options = dict(TINY, **({"patch_size": patch} if patch else {}))
    model = _random_weights(build_model(name, **options))
    if max_chunk:
        model.configure_inference(max_chunk=max_chunk)
    model.net = _Counter(model.net)
    x = torch.rand(5, 1, 32, 32)
    mask = _mask(5)

    full = model.reconstruct(x, torch.Generator().manual_seed(3))
    full_inputs, model.net.inputs = model.net.inputs, 0
    skipped = model.reconstruct(x, torch.Generator().manual_seed(3), mask=mask)

    score_full, score_skipped = (x - full).abs(), (x - skipped).abs()
    assert torch.equal(score_full[mask], score_skipped[mask])  # bit for bit, not approximately
    assert model.net.inputs < full_inputs  # and the network did less work
    # a slice without brain never reaches the network: its reconstruction is the input itself
    torch.testing.assert_close(skipped[-1], x[-1], atol=1e-6, rtol=0)


def test_boxes_with_brain_and_chunk_sizes() -> None:
    boxes = grid_boxes(32, 32, 16)
    mask = _mask(3)
    expected = (mask[:, None] & box_masks(boxes, 32, 32)[None]).flatten(2).any(2)
    assert torch.equal(boxes_with_brain(boxes, mask), expected)
    assert expected[0].tolist() == [True, False, False, False] and expected[1].all() and not expected[2].any()
    assert chunk_size(200, 8) == 8 and chunk_size(50, 8) == 5  # 10 calls of 5, not 7 calls of 8 (6 padded)
    assert chunk_size(200, 32) == 25 and chunk_size(200, 256) == 200
    assert chunk_size(5, 1) == 1 and chunk_size(0, 8) == 1


def _write_run(root: Path, manifest: Path) -> Path:
    """A run folder holding a tiny pDDPM with random weights (what `mriad train` would leave)."""
    model = _random_weights(build_model("pddpm", **TINY, patch_size=16))
    run = root / "run"
    (run / "checkpoints").mkdir(parents=True)
    torch.save(
        {"model": "pddpm", "config": model.config, "state_dict": model.state_dict()}, run / "checkpoints" / "best.pt"
    )
    config = {"model": "pddpm", "fold": 0, "data": str(manifest), "options": model.config, "seed": 0}
    (run / "config.json").write_text(json.dumps(config, default=list))
    return run


def _tiny_dataset(root: Path) -> Path:
    """tests/train/tinydata.py's 14 subjects (loaded by path: test folders are not packages)."""
    spec = importlib.util.spec_from_file_location("tinydata", Path(__file__).parents[1] / "train" / "tinydata.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.write_tiny_dataset(root)


def test_stage_reads_masks_from_the_manifest(tmp_path: Path) -> None:
    from mriad.reconstruct import reconstruct

    manifest = _tiny_dataset(tmp_path / "data")  # 32x32x8, the first and last slice without brain
    run = _write_run(tmp_path, manifest)
    plain = reconstruct(run, "ixi-test", skip_empty_boxes=False, volumes_per_batch=2)
    assert len(plain.written) == 2
    maps = {}
    for subject in plain.written:
        score = run / "recon" / "ixi-test" / f"{subject}_score.nii.gz"
        maps[subject] = read_nifti(score, allow_empty=True).data.copy()
    skipping = reconstruct(run, "ixi-test", force=True, volumes_per_batch=2)
    assert skipping.written == plain.written
    for subject in skipping.written:
        folder = run / "recon" / "ixi-test"
        image = read_nifti(tmp_path / "data" / "ixi" / subject / "image.nii.gz").data
        brain = read_nifti(tmp_path / "data" / "ixi" / subject / "mask.nii.gz").data > 0.5
        score = read_nifti(folder / f"{subject}_score.nii.gz", allow_empty=True).data
        rec = read_nifti(folder / f"{subject}_rec.nii.gz", allow_empty=True).data
        np.testing.assert_array_equal(score[brain], maps[subject][brain])
        assert not np.array_equal(score, maps[subject])  # the skipped end slices were not reconstructed
        np.testing.assert_allclose(rec[:, :, 0], image[:, :, 0], atol=1e-6)


def _scores(run: Path, subjects: list[str]) -> dict[str, np.ndarray]:
    folder = run / "recon" / "ixi-test"
    return {s: read_nifti(folder / f"{s}_score.nii.gz", allow_empty=True).data.copy() for s in subjects}


def test_inference_settings_reach_the_model(tmp_path: Path) -> None:
    from mriad.reconstruct import reconstruct

    run = _write_run(tmp_path, _tiny_dataset(tmp_path / "data"))
    default = reconstruct(run, "ixi-test", volumes_per_batch=2)
    reference = _scores(run, default.written)
    # fp32 explicitly, no compilation, 3 boxes per call instead of 8: the same numbers (CPU default is fp32).
    reconstruct(
        run,
        "ixi-test",
        force=True,
        volumes_per_batch=2,
        inference={"precision": "fp32", "compile": "none", "max_chunk": 3},
    )
    for subject, score in _scores(run, default.written).items():
        np.testing.assert_allclose(score, reference[subject], atol=1e-5)
    # bf16 autocast on the CPU: close to fp32 but not equal, so the setting was applied.
    reconstruct(run, "ixi-test", force=True, volumes_per_batch=2, inference={"precision": "bf16"})
    bf16 = _scores(run, default.written)
    assert any(not np.array_equal(bf16[s], reference[s]) for s in reference)
    for subject, score in bf16.items():
        np.testing.assert_allclose(score, reference[subject], atol=0.1)


def test_cli_refuses_unknown_inference_settings(tmp_path: Path, cli) -> None:
    run = _write_run(tmp_path, _tiny_dataset(tmp_path / "data"))
    result = cli("--device", "cpu", "reconstruct", "--run", str(run), "--split", "ixi-test", "--precision", "fp16")
    # Usage errors (exit code 2), refused before any work.
    assert result.exit_code == 2
    assert "'fp16' is not one of auto, fp32, bf16" in result.output
    result = cli("--device", "cpu", "reconstruct", "--run", str(run), "--split", "ixi-test", "--compile", "fast")
    assert result.exit_code == 2 and "'fast' is not one of" in result.output
    assert not list((run / "recon" / "ixi-test").glob("*.nii.gz"))


def test_cli_channels_last_reaches_the_model_and_its_record(tmp_path: Path, cli) -> None:
    run = _write_run(tmp_path, _tiny_dataset(tmp_path / "data"))
    base = ("--device", "cpu", "--hide-progress", "reconstruct", "--run", str(run), "--split", "ixi-test")
    assert cli(*base).exit_code == 0
    plain = {p.name: p.read_bytes() for p in (run / "recon" / "ixi-test").glob("*_score.nii.gz")}
    assert cli(*base, "--channels-last", "--precision", "bf16").exit_code == 0
    records = [json.loads(p.read_text()) for p in (run / "recon" / "ixi-test").glob("*.json")]
    assert records and all(r["settings"]["inference"] == {"precision": "bf16", "channels_last": True} for r in records)
    fast = {p.name: p.read_bytes() for p in (run / "recon" / "ixi-test").glob("*_score.nii.gz")}
    assert fast.keys() == plain.keys() and fast != plain  # redone with the new settings, not skipped


def test_models_without_inference_settings_refuse_them(tmp_path: Path) -> None:
    from mriad.infra.errors import MriadError
    from mriad.reconstruct import reconstruct

    manifest = _tiny_dataset(tmp_path / "data")
    run = tmp_path / "thresh"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"model": "thresh", "fold": 0, "data": str(manifest), "options": {}}))
    with pytest.raises(MriadError, match="model thresh has no inference settings.*--precision bf16"):
        reconstruct(run, "ixi-test", inference={"precision": "bf16", "compile": None})
    assert len(reconstruct(run, "ixi-test", inference={"precision": None}).written) == 2


# ---- CUDA (selected on a GPU machine with `pytest -k cuda`; skipped elsewhere) -------------------
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@needs_cuda
def test_cuda_fp32_reconstruction_matches_the_cpu() -> None:
    model = _random_weights(build_model("pddpm", **TINY, patch_size=16))
    x, mask = torch.rand(6, 1, 32, 32), _mask(6)
    noise = torch.randn(6, 1, 32, 32)
    model.noise = lambda shape, generator, device: noise.to(device)  # the same noise on both devices
    on_cpu = model.reconstruct(x, mask=mask)
    tf32 = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    try:
        on_gpu = model.to("cuda").configure_inference(precision="fp32").reconstruct(x, mask=mask).cpu()
    finally:
        torch.backends.cudnn.allow_tf32 = tf32
    torch.testing.assert_close(on_gpu, on_cpu, atol=1e-4, rtol=0)


@needs_cuda
def test_cuda_bf16_channels_last_default_and_box_skip() -> None:
    model = _random_weights(build_model("pddpm", **TINY, patch_size=16)).to("cuda")
    x, mask = torch.rand(6, 1, 32, 32, device="cuda"), _mask(6).cuda()
    generator = torch.Generator(device="cuda")
    fast = model.reconstruct(x, generator.manual_seed(1), mask=mask)  # bf16 autocast + NHWC by default
    assert model.net.stem.weight.is_contiguous(memory_format=torch.channels_last)
    exact = model.configure_inference(precision="fp32").reconstruct(x, generator.manual_seed(1), mask=mask)
    plain = model.reconstruct(x, generator.manual_seed(1))
    assert torch.isfinite(fast).all()
    difference = (fast - exact).abs()[mask]  # bf16 rounding (8-bit mantissa), not another computation
    assert difference.mean() < 0.03 and difference.max() < 0.5  # CPU bf16 on this net: 0.009, 0.12
    # CUDA's scatter-add may sum in any order: inside the mask equal to float rounding, not bit for bit
    torch.testing.assert_close((x - exact).abs()[mask], (x - plain).abs()[mask], atol=1e-5, rtol=0)


@needs_cuda
def test_cuda_compiled_network_matches_eager() -> None:
    model = _random_weights(build_model("pddpm", **TINY, patch_size=16)).to("cuda")
    x = torch.rand(4, 1, 32, 32, device="cuda")
    eager = model.configure_inference(precision="fp32").reconstruct(x, torch.Generator("cuda").manual_seed(2))
    compiled = model.configure_inference(compile="default").reconstruct(x, torch.Generator("cuda").manual_seed(2))
    torch.testing.assert_close(compiled, eager, atol=1e-3, rtol=0)
