"""InferenceExecutor: fixed-shape padded calls, settings validation, one compilation per network."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mriad.infra.errors import MriadError
from mriad.runtime.inference import InferenceExecutor, InferenceSettings, chunk_limit


class _Recorder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.tensor(2.0))
        self.shapes: list[tuple[int, ...]] = []

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        self.shapes.append(tuple(x.shape))
        return self.w * x + t[:, None, None, None]


def test_every_call_has_the_chunk_size_and_padding_is_dropped() -> None:
    net = _Recorder()
    inputs = torch.arange(7.0).reshape(7, 1, 1, 1)
    out = torch.zeros(7, 1, 1, 1)

    def consume(start: int, stop: int, y: torch.Tensor) -> None:
        out[start:stop] = y

    t = torch.ones(3)
    InferenceExecutor().run(net, torch.device("cpu"), 7, 3, lambda a, b: inputs[a:b], consume, extra=(t,))
    assert net.shapes == [(3, 1, 1, 1)] * 3  # 3 + 3 + 1 padded to 3
    torch.testing.assert_close(out, 2 * inputs + 1)


def test_settings_are_validated_and_none_keeps_a_value() -> None:
    settings = InferenceSettings().updated(precision="bf16", max_chunk=0)
    assert settings.precision == "bf16" and settings.max_chunk == 1
    assert settings.updated(precision=None).precision == "bf16"
    assert settings.updated(compile="none").compile is None
    with pytest.raises(MriadError, match="precision must be one of auto, fp32, bf16"):
        settings.updated(precision="fp16")
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert not InferenceSettings().bf16(cpu) and InferenceSettings().bf16(cuda)
    assert not InferenceSettings().nhwc(cpu) and InferenceSettings().nhwc(cuda)


def test_compiled_network_is_cached_per_network_not_per_id(monkeypatch: pytest.MonkeyPatch) -> None:
    made: list[nn.Module] = []

    def fake_compile(net: nn.Module, **_: object) -> nn.Module:
        made.append(net)
        return net

    monkeypatch.setattr(torch, "compile", fake_compile)
    executor = InferenceExecutor(InferenceSettings(compile="default"))
    first, second = _Recorder(), _Recorder()
    cpu = torch.device("cpu")
    executor.prepare(first, cpu)
    executor.prepare(first, cpu)
    assert made == [first]
    executor.prepare(second, cpu)  # a replaced network is compiled anew, never served a stale one
    assert made == [first, second]


def test_chunk_limit_follows_the_budget_and_the_cap() -> None:
    cpu = torch.device("cpu")
    assert chunk_limit(100, cpu, memory_bytes=1000) == 10
    assert chunk_limit(100, cpu, memory_bytes=10**9, cap=8) == 8
    assert chunk_limit(10**12, cpu, memory_bytes=1000) == 1  # never zero: the guard decides what cannot run
