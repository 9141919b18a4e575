"""Every model's memory estimate (counted on the "meta" device), and the guards that use it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from mriad.infra.errors import MriadError
from mriad.models.registry import available_models, build_model, get_model_class
from mriad.runtime import footprint, memory
from mriad.runtime.cost import announce_cpu_cost, expected_step_seconds

# Small networks of every registered model, at 32x32 (the conv baselines need image_size).
SMALL: dict[str, dict[str, Any]] = {
    "ae": {"image_size": 32, "base_channels": 8},
    "vae": {"image_size": 32, "base_channels": 8},
    "svae": {"image_size": 32, "base_channels": 8, "latent_dim": 32, "transformer_ff": 64},
    "dae": {"base_channels": 8},
    "fanogan": {"image_size": 32, "base_channels": 8, "gan_steps": 10},
    "thresh": {},
    "pddpm": {"base_channels": 8, "channel_mult": "1,2", "num_res_blocks": 1, "groups": 4, "head_channels": 16},
    "ddpm": {"base_channels": 8, "channel_mult": "1,2", "num_res_blocks": 1, "groups": 4, "head_channels": 16},
    "cddpm": {
        "base_channels": 8, "channel_mult": "1,2", "num_res_blocks": 1, "groups": 4, "head_channels": 16,
        "encoder_widths": "8,8,8,8", "encoder_blocks": "1,1,1,1", "cond_dim": 16, "pretrain_steps": 2,
    },
}  # fmt: skip


def test_live_peak_counts_allocations_while_they_live_and_not_views() -> None:
    def run() -> None:
        a = torch.zeros(1000, device="meta")  # 4000 bytes
        b = a.view(10, 100).add_(1)  # a view and an in-place op: no new memory
        c = torch.zeros(1000, device="meta")  # 8000 live
        del a, b, c
        torch.zeros(500, device="meta")  # 2000, after the others were freed

    assert footprint.counted_peak_bytes(run) == 8000


@pytest.mark.parametrize("name", available_models())
def test_every_model_estimates_its_training_step_and_inference(name: str) -> None:
    """Counted on the meta device: the estimate grows with the batch; the inference check runs."""
    assert set(SMALL) == set(available_models())  # a new model gets a row here
    cls = get_model_class(name)
    config = cls.resolve_config(SMALL[name])
    model = build_model(name, **SMALL[name])
    memory.check_inference_memory(model, (2, 8, 1, 32, 32), torch.device("cpu"))  # fits: nothing raised
    if model.inference_bytes(32, 32) is None:
        assert footprint.counted_inference_bytes(model, (2, 8, 1, 32, 32)) > 0
    if not cls.trainable:
        return
    small = cls.estimate_training_memory(config, 2, 32, 32, depth=8)
    large = cls.estimate_training_memory(config, 20, 32, 32, depth=8)
    assert small.states == large.states == 4 * sum(p.numel() * 4 for p in model.parameters())
    assert 0 < small.activations < large.activations <= 10 * small.activations + 10  # a fixed part is not scaled


def test_fanogan_counts_the_larger_of_its_two_phases() -> None:
    model = footprint.meta_model(get_model_class("fanogan"), dict(build_model("fanogan", **SMALL["fanogan"]).config))
    batch = torch.zeros(4, 1, 32, 32, device="meta")
    counter_izif = footprint.probe_saved_bytes(_OnlyFirst(model), batch)
    both = footprint.probe_saved_bytes(model, batch)
    assert both >= counter_izif > 0


class _OnlyFirst:
    """A model whose probes stop after the first (f-AnoGAN's encoder phase)."""

    def __init__(self, model: Any) -> None:
        self.model = model

    def parameters(self) -> Any:
        return self.model.parameters()

    def training_probes(self, batch: torch.Tensor, generator: Any = None) -> Any:
        yield next(iter(self.model.training_probes(batch, generator)))


def test_python_api_refuses_an_impossible_baseline_batch_in_one_line(tiny_data: Path, tmp_path: Path) -> None:
    from mriad.train.engine import train

    with pytest.raises(MriadError) as caught:
        train("ae", data=tiny_data, out=tmp_path / "run", options={"image_size": 32, "batch_size": 10**9})
    message = str(caught.value)
    assert "\n" not in message and message.startswith("--batch-size 1000000000: one training step needs about")
    assert "GiB" in message and "or less" in message and "--channels" in message
    assert "checkpointing" not in message  # the AE has no such option: never suggested
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_cli_refuses_an_impossible_baseline_batch_in_one_line(tiny_data: Path, tmp_path: Path, cli: Any) -> None:
    result = cli(
        "--device", "cpu", "train", "--model", "dae", "--data", str(tiny_data), "--out", str(tmp_path / "run"),
        "--batch-size", "100000000", "--epochs", "1",
    )  # fmt: skip
    assert result.exit_code != 0
    assert "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if "--batch-size 100000000:" in line]
    assert len(errors) == 1 and "GiB" in errors[0] and "or less" in errors[0] and "--channels" in errors[0]
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_reconstruction_of_a_baseline_group_that_cannot_fit_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    model = build_model("ae", **SMALL["ae"])
    monkeypatch.setattr(memory, "free_memory", lambda device: 1 << 20)  # a 1 MiB machine
    with pytest.raises(MriadError, match=r"^--volumes-per-batch 4: reconstructing needs about .* 400 slices at once"):
        memory.check_inference_memory(model, (4, 100, 1, 32, 32), torch.device("cpu"))


def test_a_failed_count_warns_and_trains_unchecked(monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
    cls = get_model_class("ae")

    def broken(*args: Any, **kwargs: Any) -> None:
        raise NotImplementedError("no meta kernel")

    monkeypatch.setattr(footprint, "counted_training_memory", broken)
    memory.guard_training(cls, cls.resolve_config(SMALL["ae"]), (10, 1, 32, 32), torch.device("cpu"))
    assert "training memory not estimated (NotImplementedError: no meta kernel)" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["svae", "fanogan"])
def test_step_time_is_estimated_for_volume_and_gan_models(
    name: str, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    """No backward runs (no .grad appears) and the global RNG is left as found."""
    model = build_model(name, **SMALL[name])
    state = torch.get_rng_state()
    seconds = expected_step_seconds(model, 4, (80, 1, 32, 32), depth=8)
    assert seconds > 0 and torch.equal(state, torch.get_rng_state())
    assert all(p.grad is None for p in model.parameters())
    monkeypatch.setattr("mriad.runtime.cost.LARGE_NETWORK_PARAMETERS", 0)
    assert announce_cpu_cost(model, 4, (80, 1, 32, 32), 100, model.batch_kind, depth=8) is not None
    unit = "volumes" if name == "svae" else "slices"
    assert f"per step of 4 {unit}" in capsys.readouterr().out
