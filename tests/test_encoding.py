"""The instance encodings against the paper's formulas (Eq. 2-4, Appendix C)."""
import math

import pytest
import torch

from pe_panoptic.encoding import (
    BinEncoding,
    CentroidEncoding,
    PositionalEncoding,
    RGBEncoding,
    build_encoding,
    grid_centers,
    normalize_coords,
    positional_embedding,
)


def test_positional_embedding_matches_eq3_by_hand():
    p = torch.tensor([0.25])
    got = positional_embedding(p, 3)[0]
    # gamma(p) = (sin(2^l pi p), cos(2^l pi p)) for l = 0, 1, 2
    want = [math.sin(math.pi / 4), math.cos(math.pi / 4), math.sin(math.pi / 2), math.cos(math.pi / 2),
            math.sin(math.pi), math.cos(math.pi)]
    assert torch.allclose(got, torch.tensor(want), atol=1e-6)


def test_pe_code_norm_and_void_distance():
    enc = PositionalEncoding(4)
    uv = torch.rand(100, 2) * 2 - 1
    codes = enc.encode(uv)
    assert codes.shape == (100, 16)
    # each harmonic contributes sin^2 + cos^2 = 1, so every code has norm^2 = 2L and each block L
    assert torch.allclose((codes**2).sum(-1), torch.full((100,), 8.0), atol=1e-5)
    assert torch.equal(enc.void_code(), torch.zeros(16))


def test_grid_centers_and_normalization():
    assert torch.allclose(grid_centers(4), torch.tensor([-0.75, -0.25, 0.25, 0.75]))
    # pixel centers of a 4-px row map onto the same centers
    assert torch.allclose(normalize_coords(torch.arange(4.0), 4), grid_centers(4))


@pytest.mark.parametrize("L", [2, 3, 4, 5])
@pytest.mark.parametrize("grid", [(80, 80), (160, 320), (7, 13)])
def test_pe_grid_codes_decode_back_exactly(L, grid):
    """The PE of every grid centroid decodes back to its own cell (two small argmins)."""
    gh, gw = grid
    enc = PositionalEncoding(L)
    v, u = torch.meshgrid(grid_centers(gh), grid_centers(gw), indexing="ij")
    uv = torch.stack((u, v), 0)[None]  # 1 2 gh gw
    pred = enc.targets(uv, torch.ones(1, gh, gw, dtype=torch.bool))
    dec = enc.decode(pred, grid)
    iv, iu = torch.meshgrid(torch.arange(gh), torch.arange(gw), indexing="ij")
    assert torch.equal(dec.iu[0], iu) and torch.equal(dec.iv[0], iv)
    assert not dec.void.any()
    assert dec.dist.max() < 1e-2


def test_pe_decode_equals_full_search():
    """Splitting the squared distance into u and v terms gives the exact joint nearest code."""
    torch.manual_seed(0)
    enc = PositionalEncoding(4)
    gh, gw = 9, 11
    pred = torch.randn(2, 16, 5, 6)
    dec = enc.decode(pred, (gh, gw))
    v, u = torch.meshgrid(grid_centers(gh), grid_centers(gw), indexing="ij")
    codes = enc.encode(torch.stack((u, v), -1).reshape(-1, 2))  # gh*gw 16
    codes = torch.cat((codes, enc.void_code()[None]), 0)
    flat = pred.permute(0, 2, 3, 1).reshape(-1, 16)
    idx = torch.cdist(flat, codes).argmin(1).reshape(2, 5, 6)
    void = idx == gh * gw
    assert torch.equal(dec.void, void)
    assert torch.equal(dec.iv[~void], (idx // gw)[~void])
    assert torch.equal(dec.iu[~void], (idx % gw)[~void])


def test_pe_void_and_pixel_loss_by_hand():
    enc = PositionalEncoding(2)
    uv = torch.zeros(1, 2, 1, 2)
    valid = torch.tensor([[[True, False]]])
    tgt = enc.targets(uv, valid)
    # u = v = 0: gamma(0) = (0, 1, 0, 1); void pixel gets zeros
    assert torch.equal(tgt[0, :, 0, 0], torch.tensor([0.0, 1, 0, 1, 0, 1, 0, 1]))
    assert torch.equal(tgt[0, :, 0, 1], torch.zeros(8))
    pred = torch.zeros(1, 8, 1, 2)
    pred[0, 0, 0, 0] = 3.0  # u block differs by (3, -1, 0, -1): norm sqrt(11); v block by sqrt(2)
    loss = enc.pixel_loss(pred, uv, valid)
    assert torch.allclose(loss[0, 0, 0], torch.tensor(0.5 * (math.sqrt(11) + math.sqrt(2))))
    assert loss[0, 0, 1] == 0
    dec = enc.decode(torch.zeros(1, 8, 1, 1), (4, 4))
    assert dec.void.all()


def test_rgb_encoding_appendix_c():
    enc = RGBEncoding()
    uv = torch.tensor([[[[0.5]], [[-0.5]]]])  # u=0.5 -> r=0.75, v=-0.5 -> g=0.25
    tgt = enc.targets(uv, torch.ones(1, 1, 1, dtype=torch.bool))
    assert torch.allclose(tgt[0, :, 0, 0], torch.tensor([0.75, 0.25, 1.0]))
    assert torch.equal(enc.targets(uv, torch.zeros(1, 1, 1, dtype=torch.bool))[0, :, 0, 0], torch.zeros(3))
    dec = enc.decode(tgt, (4, 4))
    assert dec.iu.item() == 3 and dec.iv.item() == 1 and not dec.void.item()
    assert enc.pixel_loss(tgt + 0.1, uv, torch.ones(1, 1, 1, dtype=torch.bool)).item() == pytest.approx(0.3)


def test_bin_encoding_cross_entropy_and_decode():
    enc = BinEncoding(8)
    assert enc.num_channels == 18
    uv = torch.tensor([[[[0.3]], [[-0.9]]]])
    valid = torch.ones(1, 1, 1, dtype=torch.bool)
    cu, cv = enc.class_targets(uv, valid)
    assert cu.item() == 5 and cv.item() == 0  # (0.3+1)/2*8 = 5.2 -> 5 ; (0.1)/2*8 = 0.4 -> 0
    logits = torch.zeros(1, 18, 1, 1)
    # uniform logits: CE = log(9) for both coordinates
    assert enc.pixel_loss(logits, uv, valid).item() == pytest.approx(math.log(9), rel=1e-6)
    logits[0, 5] = 20
    logits[0, 9 + 0] = 20
    dec = enc.decode(logits, (8, 8))
    assert (dec.iu.item(), dec.iv.item(), dec.void.item()) == (5, 0, False)
    logits[0, 8] = 40  # void class of u wins
    assert enc.decode(logits, (8, 8)).void.item()


def test_build_encoding_errors():
    assert isinstance(build_encoding("pe", 3), PositionalEncoding)
    with pytest.raises(ValueError, match="unknown instance encoding"):
        build_encoding("polar")
    with pytest.raises(ValueError, match="num_harmonics"):
        PositionalEncoding(0)


# ------------------------------------------------------------------ behaviour owned by the encodings
ENCODINGS = [PositionalEncoding(3), RGBEncoding(), BinEncoding(6)]


@pytest.mark.parametrize("enc", ENCODINGS, ids=lambda e: e.name)
def test_spec_round_trip(enc):
    spec = enc.to_spec()
    back = CentroidEncoding.from_spec(spec)
    assert type(back) is type(enc) and back.to_spec() == spec and back.num_channels == enc.num_channels
    assert spec == {"pe": {"name": "pe", "num_harmonics": 3}, "rgb": {"name": "rgb"},
                    "bins": {"name": "bins", "num_bins": 6}}[enc.name]


def test_decode_scale_tv_norm_metric_and_axis_channels():
    pe, rgb, bins = ENCODINGS
    # the decode scale is the distance between the void code and any grid code
    grid_code = pe.encode(torch.tensor([[0.3, -0.7]]))[0]
    assert pe.decode_scale == pytest.approx(math.sqrt(6.0)) == pytest.approx(float(grid_code.norm()))
    assert rgb.decode_scale == 1.0 == bins.decode_scale
    assert (pe.tv_norm, rgb.tv_norm) == ("l2", "l1") and not bins.supports_tv
    assert (pe.metric_p, rgb.metric_p, bins.metric_p) == (2.0, 1.0, None)
    assert (pe.num_harmonics, rgb.num_harmonics, bins.num_harmonics) == (3, None, None)
    assert (pe.code_is_logits, rgb.code_is_logits, bins.code_is_logits) == (False, False, True)
    u = torch.tensor([0.25, -0.5])
    uv = torch.stack((u, torch.full_like(u, 0.9)), 1)
    assert torch.equal(pe.encode(uv)[:, pe.axis_channels()], positional_embedding(u, 3))
    assert torch.equal(rgb.encode(uv)[:, rgb.axis_channels()], ((u + 1) / 2)[:, None])
    with pytest.raises(TypeError, match="no per-axis code"):
        bins.axis_channels()


@pytest.mark.parametrize("enc", ENCODINGS, ids=lambda e: e.name)
def test_naive_decode_is_the_brute_force_of_decode(enc):
    g = torch.Generator().manual_seed(1)
    pred = torch.randn(2, enc.num_channels, 5, 4, generator=g)
    fast = enc.decode(pred, (7, 9))
    emb = pred.permute(0, 2, 3, 1).reshape(-1, enc.num_channels)
    iu, iv, void, dist, grid_dist = enc.naive_decode(emb, (7, 9), chunk=64)
    assert torch.equal(iu, fast.iu.reshape(-1)) and torch.equal(iv, fast.iv.reshape(-1))
    assert torch.equal(void, fast.void.reshape(-1))
    torch.testing.assert_close(dist, fast.dist.reshape(-1), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(grid_dist, fast.grid_dist.reshape(-1), rtol=1e-4, atol=1e-5)


def test_code_diagnostics_only_for_the_positional_code():
    pe, rgb, bins = ENCODINGS
    uv = torch.rand(1, 2, 3, 4) * 2 - 1
    valid = torch.ones(1, 3, 4, dtype=torch.bool)
    diag = pe.code_diagnostics(pe.targets(uv, valid), uv, valid)
    assert diag["norm"] == pytest.approx(math.sqrt(6.0), rel=1e-5)
    assert all(diag[f"cos_{a}{l}"] == pytest.approx(1.0, abs=1e-5) for a in "uv" for l in range(3))
    assert pe.code_diagnostics(pe.targets(uv, valid), uv, torch.zeros_like(valid)) == {}
    assert rgb.code_diagnostics(rgb.targets(uv, valid), uv, valid) == {} == bins.code_diagnostics(
        bins.targets(uv, valid), uv, valid)


def test_no_dispatch_on_encoding_type_or_name_outside_the_encoding_package():
    """Behaviour belongs on the encoding classes: nothing else branches on their type or name."""
    import pathlib
    import re

    root = pathlib.Path(__file__).resolve().parents[1]
    classes = r"(PositionalEncoding|RGBEncoding|BinEncoding)"
    bad = re.compile(rf"isinstance\([^)]*\b{classes}\b"  # isinstance(x, PositionalEncoding) / (..., BinEncoding)
                     rf"|\btype\([^)]*\)\s*(is|==)\s*{classes}"  # type(enc) is RGBEncoding
                     r"|\b\w*enc\w*\.name\s*(==|!=|\bin\b)"  # encoding.name == "rgb"
                     r"|\w*enc\w*\.name\s*\]"  # TABLE[encoding.name]
                     r"|getattr\(\s*\w*enc\w*\s*,")  # getattr(encoding, "L", 4)
    files = [p for d in ("pe_panoptic", "tools") for p in (root / d).rglob("*.py")
             if (root / "pe_panoptic" / "encoding") not in p.parents]
    offenders = [f"{p.relative_to(root)}:{text[:m.start()].count(chr(10)) + 1}: {m.group(0)}"
                 for p in sorted(files) for text in [p.read_text()] for m in bad.finditer(text)]
    assert not offenders, offenders


def test_squared_norm_switch_and_void_weight():
    """The void study's two switches: ``norm="squared"`` squares each block's error of Eq. 4, and
    ``void_weight`` scales the instance weight of void pixels (1 = the paper, 0 = paper_v1's no void)."""
    import numpy as np

    from pe_panoptic.data.targets import panoptic_targets
    from pe_panoptic.encoding import PositionalEncoding, build_encoding

    g = torch.Generator().manual_seed(0)
    pred, target = torch.randn(2, 16, 5, 6, generator=g), torch.randn(2, 16, 5, 6, generator=g)
    du = torch.linalg.vector_norm(pred[:, :8] - target[:, :8], dim=1)
    dv = torch.linalg.vector_norm(pred[:, 8:] - target[:, 8:], dim=1)
    torch.testing.assert_close(PositionalEncoding(4).code_loss(pred, target), 0.5 * (du + dv))
    sq = build_encoding("pe", 4, norm="squared")
    torch.testing.assert_close(sq.code_loss(pred, target), 0.5 * (du ** 2 + dv ** 2))
    assert sq.to_spec() == {"name": "pe", "num_harmonics": 4, "norm": "squared"}
    assert PositionalEncoding(4).to_spec() == {"name": "pe", "num_harmonics": 4}
    assert sq.from_spec(sq.to_spec()).norm == "squared"
    with pytest.raises(ValueError, match="norm must be one of"):
        PositionalEncoding(4, norm="l1")
    with pytest.raises(ValueError, match="applies to the 'pe' encoding only"):
        build_encoding("rgb", norm="squared")

    pan = np.zeros((8, 8), np.int64)
    pan[:, :4] = 1  # stuff
    pan[2:6, 5:7] = 2  # a thing; the rest is unlabeled void
    segs = [{"id": 1, "category_id": 3, "iscrowd": 0, "isthing": False},
            {"id": 2, "category_id": 0, "iscrowd": 0, "isthing": True}]
    kw = dict(input_hw=(8, 8), output_hw=(8, 8), use_eds=False)
    full = panoptic_targets(pan, segs, **kw)["inst_weight"]
    third = panoptic_targets(pan, segs, void_weight=0.3, **kw)["inst_weight"]
    none = panoptic_targets(pan, segs, include_void=False, **kw)["inst_weight"]
    thing = torch.from_numpy(pan == 2)
    assert torch.equal(full, torch.ones(8, 8))
    assert torch.equal(third[thing], full[thing]) and torch.allclose(third[~thing], torch.full_like(third[~thing], 0.3))
    assert torch.equal(none, thing.float())
    with pytest.raises(ValueError, match="void_weight must be >= 0"):
        panoptic_targets(pan, segs, void_weight=-1.0, **kw)
