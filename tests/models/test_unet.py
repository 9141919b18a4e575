"""The denoising UNet: shapes, paper size (parameters, FLOPs), time conditioning, channels_last."""

from __future__ import annotations

import pytest
import torch

from mriad.models.unet import UNet, count_flops, count_parameters, timestep_embedding

TINY = {"base_channels": 16, "channel_mult": (1, 2), "num_res_blocks": 1, "groups": 8, "head_channels": 16}


def _randomise_output(net: UNet) -> UNet:
    # The output convolution starts at zero (guided-diffusion init); give it weights so outputs vary.
    torch.nn.init.normal_(net.out_conv.weight, std=0.1)
    return net


@pytest.mark.parametrize("size", [(96, 96), (48, 48), (50, 50), (45, 37)])
@pytest.mark.parametrize("updown", [True, False])
def test_output_has_the_input_shape(size: tuple[int, int], updown: bool) -> None:
    torch.manual_seed(0)
    net = UNet(**{**TINY, "channel_mult": (1, 2, 2)}, resblock_updown=updown)
    out = net(torch.randn(2, 1, *size), torch.tensor([0, 999]))
    assert out.shape == (2, 1, *size)


def test_fresh_network_outputs_zero() -> None:
    net = UNet(**TINY)
    assert torch.count_nonzero(net(torch.randn(2, 1, 32, 32), torch.tensor([3, 400]))) == 0


def test_paper_configuration_size_and_flops() -> None:
    with torch.device("meta"):  # shapes only: no memory, no arithmetic
        net = UNet()  # base 128, mult (1, 2, 2), 3 blocks, GroupNorm 32, attention in the middle block
        plain = UNet(resblock_updown=False)
    params = count_parameters(net)
    flops = count_flops(net, 96, 96)
    assert 37.0e6 < params < 38.0e6  # design notes: ~37.5 M
    assert 140e9 < flops < 160e9  # design notes: ~150 GFLOP per 96x96 forward
    assert 33e6 < count_parameters(plain) < 36e6


def test_attention_only_in_the_middle_block() -> None:
    from mriad.models.unet import Attention

    net = UNet(**TINY)
    names = [name for name, module in net.named_modules() if isinstance(module, Attention)]
    assert names == ["mid_attn"]


def test_timestep_changes_the_output() -> None:
    torch.manual_seed(0)
    net = _randomise_output(UNet(**TINY))
    for block in net.modules():  # residual branches also start at zero; open them
        if hasattr(block, "out_conv") and block is not net:
            torch.nn.init.normal_(block.out_conv.weight, std=0.05)
    x = torch.randn(1, 1, 32, 32).repeat(2, 1, 1, 1)
    out = net(x, torch.tensor([10, 900]))
    assert not torch.allclose(out[0], out[1])


def test_timestep_embedding_is_sinusoidal() -> None:
    emb = timestep_embedding(torch.tensor([0, 5]), 16)
    assert emb.shape == (2, 16)
    assert torch.allclose(emb[0, :8], torch.ones(8)) and torch.allclose(emb[0, 8:], torch.zeros(8))
    assert torch.allclose(emb[1, 0], torch.cos(torch.tensor(5.0)))


def test_channels_last_gives_the_same_result() -> None:
    torch.manual_seed(0)
    net = _randomise_output(UNet(**TINY))
    x, t = torch.randn(2, 1, 32, 32), torch.tensor([1, 2])
    expected = net(x, t)
    net_cl = net.to(memory_format=torch.channels_last)
    got = net_cl(x.contiguous(memory_format=torch.channels_last), t)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
