"""Memory before it is spent: the training estimate, the one-line refusal, train precision option."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from mriad.infra.errors import MriadError
from mriad.models.registry import get_model_class
from mriad.runtime.inference import training_autocast
from mriad.runtime.memory import GIB, TrainingMemory, check_training_memory

TINY = {"base_channels": 8, "channel_mult": "1,2", "num_res_blocks": 1, "groups": 4, "head_channels": 16}


def _tiny_dataset(root: Path) -> Path:
    spec = importlib.util.spec_from_file_location("tinydata", Path(__file__).parents[1] / "train" / "tinydata.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.write_tiny_dataset(root)


def test_estimate_grows_with_batch_and_checkpointing_saves_activations() -> None:
    cls = get_model_class("pddpm")
    config = cls.resolve_config(TINY)
    small = cls.estimate_training_memory(config, 2, 32, 32)
    large = cls.estimate_training_memory(config, 8, 32, 32)
    assert small.states == large.states > 0
    assert large.activations == pytest.approx(4 * small.activations, rel=1e-6)
    assert 0 < large.checkpointed_activations < large.activations
    paper = cls.estimate_training_memory(cls.resolve_config({}), 32, 96, 96)  # meta device: nothing allocated
    assert 8 * GIB < paper.total(False) < 40 * GIB  # issue 19: 16.4 GB resident were seen on a CPU
    assert paper.total(True) < 0.6 * paper.total(False)  # three blocks per level: checkpointing pays


def test_refusal_is_one_line_saying_what_to_change() -> None:
    estimate = TrainingMemory(states=1 * GIB, activations=32 * GIB, checkpointed_activations=4 * GIB)
    with pytest.raises(MriadError) as caught:
        check_training_memory(estimate, batch=32, checkpointing=False, device=torch.device("cpu"), free=10 * GIB)
    message = str(caught.value)
    assert "\n" not in message and message.startswith("--batch-size 32:")
    assert "--batch-size 8 or less" in message and "checkpointing=true" in message and "--channels" in message
    check_training_memory(estimate, batch=32, checkpointing=True, device=torch.device("cpu"), free=10 * GIB)


def test_train_refuses_an_impossible_configuration_before_allocating(tmp_path: Path, cli) -> None:
    manifest = _tiny_dataset(tmp_path / "data")
    result = cli(
        "--device", "cpu", "train", "--model", "pddpm", "--data", str(manifest), "--out", str(tmp_path / "run"),
        "--channels", "512", "--batch-size", "4096", "--epochs", "1",
    )  # fmt: skip
    assert result.exit_code != 0
    assert "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if "--batch-size 4096:" in line]
    assert len(errors) == 1 and "GiB" in errors[0] and "--channels" in errors[0]
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_train_precision_option() -> None:
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert training_autocast("auto", cpu) is None and training_autocast("fp32", cuda) is None
    assert training_autocast("auto", cuda) is not None
    with training_autocast("bf16", cpu)():
        assert torch.mm(torch.ones(2, 2), torch.ones(2, 2)).dtype == torch.bfloat16
    with pytest.raises(MriadError, match="train_precision must be one of"):
        training_autocast("fp16", cpu)
    assert get_model_class("ae").resolve_config({})["train_precision"] == "auto"


def test_reconstruction_group_that_cannot_fit_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    from mriad.models.registry import build_model
    from mriad.runtime import memory

    model = build_model("pddpm", **TINY)
    memory.check_inference_memory(model, (4, 50, 1, 96, 96), torch.device("cpu"))  # fits: nothing happens
    monkeypatch.setattr(memory, "free_memory", lambda device: 10 << 20)  # a 10 MiB machine
    with pytest.raises(MriadError, match=r"^--volumes-per-batch 4: reconstructing needs about .* GiB"):
        memory.check_inference_memory(model, (4, 50, 1, 96, 96), torch.device("cpu"))
