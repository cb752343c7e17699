"""Shallow decoder and per-pixel heads (pe_panoptic/decoder.py)."""
import pytest
import torch
from detectron2.layers import ShapeSpec

from pe_panoptic.decoder import PixelHeads, TransposedConvDecoder, concat_channels


def maps(b=2, c=(48, 48, 48, 48), h=5, w=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {f"dino{i + 1}": torch.randn(b, ci, h, w, generator=g) for i, ci in enumerate(c)}


@pytest.mark.parametrize("n, scale", [(3, 8), (4, 16), (0, 1)])
def test_output_resolution(n, scale):
    dec = TransposedConvDecoder(192, width=32, num_upsample=n, norm="GN").eval()
    y = dec(maps())
    assert y.shape == (2, 32, 5 * scale, 6 * scale) and dec.scale_factor == scale and dec.out_channels == 32
    # 840 px input -> 60x60 tokens -> 480x480 output with 3 upsamplings (paper Sec. 5.1)
    assert 840 // 14 * TransposedConvDecoder(8, 32, 3).scale_factor == 480


def test_concat_order_and_input_types():
    dec = TransposedConvDecoder(96, width=8, num_upsample=1, norm="").eval()
    m = maps(c=(40, 56))
    a = dec(m)
    assert torch.equal(a, dec(list(m.values()))) and torch.equal(a, dec(torch.cat(list(m.values()), 1)))
    assert not torch.allclose(a, dec(torch.cat([m["dino2"], m["dino1"]], 1)))
    assert concat_channels({"a": ShapeSpec(channels=40), "b": ShapeSpec(channels=56)}) == 96


def test_transposed_conv_is_2x2_replication_by_hand():
    """in=1, width=1, no norm/act, ConvT weights 1, 3x3 conv = identity kernel: each input pixel
    becomes a 2x2 block; a ConvT weight [[1, 2], [3, 4]] writes those values into each block."""
    dec = TransposedConvDecoder(1, width=1, num_upsample=1, norm="", activation="")
    up, conv = dec.layers[0][0], dec.layers[1][0]
    with torch.no_grad():
        up.weight.copy_(torch.tensor([[1.0, 2.0], [3.0, 4.0]]).view(1, 1, 2, 2))
        up.bias.zero_()
        conv.weight.zero_()
        conv.weight[0, 0, 1, 1] = 1.0
        conv.bias.fill_(0.5)
    x = torch.tensor([[1.0, -2.0]]).view(1, 1, 1, 2)
    expect = torch.tensor([[1.0, 2.0, -2.0, -4.0], [3.0, 4.0, -6.0, -8.0]]) + 0.5
    assert torch.equal(dec(x)[0, 0], expect)


def test_parameter_count_and_structure():
    # ConvT 8->4 k2 (no bias: 128) + BN(8) + Conv3x3 4->4 (no bias: 144) + BN(8) = 288
    dec = TransposedConvDecoder(8, width=4, num_upsample=1, norm="BN")
    assert sum(p.numel() for p in dec.parameters()) == 288
    assert isinstance(dec.layers[0][1], torch.nn.BatchNorm2d) and isinstance(dec.layers[0][2], torch.nn.GELU)
    # no norm: biases come back: 128 + 4 + 144 + 4
    assert sum(p.numel() for p in TransposedConvDecoder(8, 4, 1, norm="").parameters()) == 280


def test_decoder_errors():
    with pytest.raises(ValueError, match="multiple of 32"):
        TransposedConvDecoder(64, width=48, norm="GN")
    with pytest.raises(ValueError, match="unknown norm"):
        TransposedConvDecoder(64, width=32, norm="XX")
    with pytest.raises(ValueError, match="unknown activation"):
        TransposedConvDecoder(64, width=32, activation="tanhh")
    dec = TransposedConvDecoder(100, width=32)
    with pytest.raises(ValueError, match="expected 100 concatenated channels"):
        dec(maps(c=(48, 48)))
    with pytest.raises(ValueError, match="one spatial size"):
        dec([torch.zeros(1, 50, 4, 4), torch.zeros(1, 50, 4, 5)])


@torch.no_grad()
def test_heads_shapes_and_init():
    torch.manual_seed(0)
    heads = PixelHeads(32, num_classes=133, inst_channels=16, depth=True, max_depth=10.0)
    h = torch.randn(2, 32, 12, 10)
    out = heads(h)
    assert set(out) == {"sem_logits", "inst", "depth"}
    assert out["sem_logits"].shape == (2, 133, 12, 10)
    assert out["inst"].shape == (2, 16, 12, 10) and out["depth"].shape == (2, 1, 12, 10)
    assert float(heads.inst.bias.abs().max()) == 0.0 and float(heads.sem.bias.abs().max()) == 0.0
    assert 0.005 < float(heads.inst.weight.std()) < 0.015
    assert float(out["depth"].min()) > 0 and float(out["depth"].max()) < 10
    # zero weights, bias logit(0.25) -> sigmoid * 10 = 2.5 everywhere
    heads.depth.weight.zero_()
    heads.depth.bias.fill_(float(torch.logit(torch.tensor(0.25))))
    torch.testing.assert_close(heads(h)["depth"], torch.full((2, 1, 12, 10), 2.5))
    assert "depth" not in PixelHeads(32, 3, 16)(h)


def test_heads_kernel_and_errors():
    heads = PixelHeads(8, 3, 16, kernel_size=1)
    assert heads.sem.weight.shape == (3, 8, 1, 1)
    with pytest.raises(ValueError, match="odd"):
        PixelHeads(8, 3, 16, kernel_size=2)
    with pytest.raises(ValueError, match="max_depth"):
        PixelHeads(8, 3, 16, depth=True, max_depth=0)


def test_decoder_heads_backprop():
    torch.manual_seed(0)
    dec = TransposedConvDecoder(96, width=32, num_upsample=3, norm="BN").train()
    heads = PixelHeads(32, 5, 16)
    out = heads(dec(maps(c=(48, 48))))
    (out["sem_logits"].mean() + out["inst"].pow(2).mean()).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in [*dec.parameters(), *heads.parameters()])
