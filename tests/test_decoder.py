"""Shallow decoder and per-pixel heads (pe_panoptic/modeling/decoder.py)."""
import pytest
import torch
from detectron2.layers import ShapeSpec

from pe_panoptic.modeling.decoder import PixelHeads, TransposedConvDecoder, concat_channels


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


# ----------------------------------------------------------------------------- position options


@pytest.mark.parametrize("bias", [True, False])
def test_upsample2x_equals_conv_transpose(bias):
    from pe_panoptic.modeling.decoder import Upsample2x

    torch.manual_seed(0)
    m = Upsample2x(7, 5, bias=bias)
    ref = torch.nn.ConvTranspose2d(7, 5, 2, stride=2, bias=bias)
    with torch.no_grad():
        if bias:
            m.bias.normal_()
    ref.load_state_dict(m.state_dict())  # same parameters, same keys
    x = torch.randn(3, 7, 4, 6, requires_grad=True)
    y, y_ref = m(x), ref(x)
    torch.testing.assert_close(y, y_ref, rtol=1e-5, atol=1e-5)
    g = torch.randn_like(y)
    (gx,) = torch.autograd.grad(y, x, g)
    (gx_ref,) = torch.autograd.grad(y_ref, x, g)
    torch.testing.assert_close(gx, gx_ref, rtol=1e-5, atol=1e-5)


def test_position_channels_values():
    from pe_panoptic.modeling.decoder import position_channels
    from pe_panoptic.encoding import positional_embedding

    like = torch.zeros(1)
    xy = position_channels("xy", 2, 4, like)
    torch.testing.assert_close(xy[0, 0], torch.tensor([-0.75, -0.25, 0.25, 0.75]))
    torch.testing.assert_close(xy[1, :, 0], torch.tensor([-0.5, 0.5]))
    pe = position_channels("pe", 2, 4, like, 3)
    assert pe.shape == (12, 2, 4)
    torch.testing.assert_close(pe[:6, 1, 2], positional_embedding(torch.tensor(0.25), 3))
    torch.testing.assert_close(pe[6:, 1, 2], positional_embedding(torch.tensor(0.5), 3))
    with pytest.raises(ValueError, match="kind"):
        position_channels("rgb", 2, 2, like)


@pytest.mark.parametrize("kind, extra", [("xy", 2), ("pe", 16)])
def test_decoder_position_input(kind, extra):
    dec = TransposedConvDecoder(96, width=8, num_upsample=1, norm="", position_input=kind).eval()
    assert dec.layers[0][0].in_channels == 96 + extra
    y = dec(maps(c=(48, 48)))
    assert y.shape == (2, 8, 10, 12)
    with pytest.raises(ValueError, match="position_input"):
        TransposedConvDecoder(96, position_input="rgb")


def test_rotary_head_rotates_own_position_code():
    """z = (1, 0) per harmonic gives the pixel's own position code; z = e^{i w_l (c - u)} gives
    the code of c at every pixel (paper Eq. 3), i.e. the rotary head can express every target."""
    from pe_panoptic.modeling.decoder import rotate_by_position
    from pe_panoptic.encoding import PositionalEncoding, grid_centers

    L, H, W = 4, 6, 8
    enc = PositionalEncoding(L)
    uv = torch.stack(torch.meshgrid(grid_centers(W), grid_centers(H), indexing="xy"), -1)  # H W 2
    z = torch.zeros(1, 4 * L, H, W)
    z[:, 0::2] = 1
    torch.testing.assert_close(rotate_by_position(z, L)[0].permute(1, 2, 0), enc.encode(uv))
    c = torch.tensor([0.3, -0.2])
    w = torch.pi * 2.0 ** torch.arange(L)
    ph = (c - uv)[..., None] * w  # H W 2 L
    z = torch.stack((ph.cos(), ph.sin()), -1).reshape(H, W, 4 * L).permute(2, 0, 1)[None]
    torch.testing.assert_close(rotate_by_position(z, L)[0].permute(1, 2, 0), enc.encode(c.expand(H, W, 2)),
                               rtol=0, atol=1e-5)
    assert rotate_by_position(torch.zeros(1, 4 * L, H, W), L).abs().max() == 0  # void code
    with pytest.raises(ValueError, match="channels"):
        rotate_by_position(torch.zeros(1, 5, 2, 2), L)


def test_heads_rotary_option():
    heads = PixelHeads(16, 5, 16, inst_position="rotary", num_harmonics=4)
    out = heads(torch.randn(2, 16, 6, 7))
    assert out["inst"].shape == (2, 16, 6, 7)
    with pytest.raises(ValueError, match="rotary"):
        PixelHeads(16, 5, 3, inst_position="rotary")
    with pytest.raises(ValueError, match="inst_position"):
        PixelHeads(16, 5, 16, inst_position="bogus")


def test_offset_head_gives_code_of_predicted_centroid():
    """(du, dv, r) = (c - u, c - v, r) at every pixel -> r * PE(c) (paper Eq. 3); r = 0 -> void."""
    from pe_panoptic.modeling.decoder import code_from_offset
    from pe_panoptic.encoding import pixel_centers
    from pe_panoptic.encoding import PositionalEncoding

    z = torch.zeros(1, 3, 6, 8)
    uv = pixel_centers(6, 8)
    c = torch.tensor([0.3, -0.2])
    z[:, :2] = c[None, :, None, None] - uv[None]
    z[:, 2] = 1.5
    code = code_from_offset(z, 4)[0].permute(1, 2, 0)
    torch.testing.assert_close(code, 1.5 * PositionalEncoding(4).encode(c.expand(6, 8, 2)), rtol=0, atol=1e-5)
    z[:, 2] = 0
    assert code_from_offset(z, 4).abs().max() == 0
    heads = PixelHeads(16, 5, 16, inst_position="offset", num_harmonics=4)
    assert heads.inst.out_channels == 3 and heads(torch.randn(1, 16, 4, 4))["inst"].shape == (1, 16, 4, 4)


def test_image_skip_sees_the_image_at_the_output_stride():
    """image_skip=C: the resized input image joins the last upsampled map before the final conv;
    the output then depends on the image, and a missing image is a clear error."""
    from pe_panoptic.modeling.decoder import TransposedConvDecoder

    torch.manual_seed(0)
    dec = TransposedConvDecoder(in_channels=8, width=16, num_upsample=3, image_skip=4).eval()
    assert dec.layers[-1][0].in_channels == 16 + 4 and dec.image_conv[0].in_channels == 3
    feats = {"a": torch.randn(2, 8, 3, 3)}
    img = torch.randn(2, 3, 42, 42)
    out = dec(feats, img)
    assert out.shape == (2, 16, 24, 24)
    img2 = img.clone()
    img2[1] += 1.0
    out2 = dec(feats, img2)
    torch.testing.assert_close(out2[0], out[0])  # image 0 unchanged -> same output
    assert (out2[1] - out[1]).abs().max() > 1e-3
    with pytest.raises(ValueError, match="image_skip=4\\) needs the input image"):
        dec(feats)
    with pytest.raises(ValueError, match="image_skip must be >= 0"):
        TransposedConvDecoder(in_channels=8, width=16, image_skip=-1)
    assert not hasattr(TransposedConvDecoder(in_channels=8, width=16), "image_conv")


def test_image_skip_through_model_and_exportable_network():
    """PixelCentroidHead passes the normalized input to an image_skip decoder; the exportable
    network computes the same outputs."""
    from pe_panoptic.modeling.backbone import DINOv2Backbone
    from pe_panoptic.modeling.decoder import TransposedConvDecoder
    from pe_panoptic.export.exporter import ExportableNetwork
    from pe_panoptic.modeling.meta_arch import PixelCentroidHead

    torch.manual_seed(0)
    model = PixelCentroidHead(
        backbone=DINOv2Backbone("vit_small_patch14_dinov2", (0, 1), img_size=56,
                                model_kwargs=dict(depth=2, embed_dim=48, num_heads=3)),
        decoder=TransposedConvDecoder(in_channels=96, width=16, image_skip=4), decoder_width=16,
        num_classes=3, thing_ids=[0], inst_position="offset").eval()
    x = torch.randn(1, 3, 56, 56)
    with torch.no_grad():
        ref = model.forward_features(x)
        got = ExportableNetwork(model)(x)
    assert set(ref) == {"sem_logits", "inst", "inst_offset"}
    torch.testing.assert_close(got[0], ref["sem_logits"])
    torch.testing.assert_close(got[1], ref["inst"])


def test_upsample_impl_switch_gives_the_same_decoder_output():
    """upsample_impl="convtranspose" (PyTorch's path, kept for the speed comparison) computes the
    same decoder output as the default matmul + pixel shuffle; a bad name is refused."""
    from pe_panoptic.modeling.decoder import TransposedConvDecoder

    torch.manual_seed(0)
    a = TransposedConvDecoder(in_channels=6, width=8, num_upsample=2).eval()
    b = TransposedConvDecoder(in_channels=6, width=8, num_upsample=2, upsample_impl="convtranspose").eval()
    b.load_state_dict(a.state_dict())
    assert a.layers[0][0].impl == "matmul" and b.layers[0][0].impl == "convtranspose"
    x = torch.randn(2, 6, 3, 4)
    torch.testing.assert_close(a(x), b(x), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="impl must be one of"):
        TransposedConvDecoder(in_channels=6, width=8, upsample_impl="fast")


def test_decoder_takes_the_image_always_and_ignores_it_without_image_skip():
    """One call for every caller (model, exporter, benchmark): ``decoder(features, image)``."""
    torch.manual_seed(0)
    dec = TransposedConvDecoder(in_channels=8, width=32, num_upsample=2, norm="GN").eval()
    feats = torch.randn(1, 8, 3, 3)
    image = torch.randn(1, 3, 42, 42)
    ref = dec(feats)
    assert torch.equal(dec(feats, image), ref) and torch.equal(dec(feats, torch.zeros_like(image)), ref)
    skip = TransposedConvDecoder(in_channels=8, width=32, num_upsample=2, norm="GN", image_skip=32).eval()
    assert not torch.equal(skip(feats, image), skip(feats, torch.zeros_like(image)))
    with pytest.raises(ValueError, match="needs the input image"):
        skip(feats)
