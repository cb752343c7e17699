"""DINOv2 backbone (pe_panoptic/modeling/backbone.py) and checkpoint loading (pe_panoptic/modeling/backbone_weights.py)."""
import math
import re

import pytest
import torch
import torch.nn.functional as F

from pe_panoptic.modeling.backbone import DINOv2Backbone, add_dinov2_config, build_dinov2_backbone
from pe_panoptic.modeling.backbone_weights import (
    convert_dinov2_official_to_timm,
    detect_layout,
    load_backbone_weights,
)

TINY = dict(depth=4, embed_dim=48, num_heads=3)


def tiny(seed=0, name="vit_small_patch14_dinov2", out_indices=(0, 1, 2, 3), **kw):
    torch.manual_seed(seed)
    kw.setdefault("model_kwargs", TINY)
    return DINOv2Backbone(name, out_indices, **kw).eval()


def randomize_(backbone, seed):
    """Perturb every tensor (layer scales start at 1e-5, tokens at ~0) so weight-loading bugs show."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in backbone.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    return backbone


def timm_to_official(sd, *, register=False, pos0=None, chunks=0, swiglu=False):
    """Test-only inverse of convert_dinov2_official_to_timm: timm state dict -> official layout."""
    out = {}
    depth = 1 + max(int(m.group(1)) for k in sd if (m := re.match(r"blocks\.(\d+)\.", k)))
    for k, v in sd.items():
        if swiglu:
            k = k.replace(".mlp.fc1.", ".mlp.w12.").replace(".mlp.fc2.", ".mlp.w3.")
        m = re.match(r"blocks\.(\d+)\.(.*)", k)
        if chunks and m:
            n = int(m.group(1))
            k = f"blocks.{n // (depth // chunks)}.{n}.{m.group(2)}"
        out[k] = v.clone()
    if register:
        out["register_tokens"] = out.pop("reg_token")
        out["cls_token"] = out["cls_token"] - pos0
        out["pos_embed"] = torch.cat([pos0, out["pos_embed"]], dim=1)
    out["mask_token"] = torch.zeros(1, out["cls_token"].shape[-1])
    return out


# ----------------------------------------------------------------------------- forward / shapes


def test_outputs_shapes_and_specs():
    b = tiny(out_indices=(1, 3))
    y = b(torch.randn(2, 3, 70, 84))
    assert list(y) == ["dino1", "dino2"]
    assert all(v.shape == (2, 48, 5, 6) for v in y.values())
    spec = b.output_shape()
    assert [(s.channels, s.stride) for s in spec.values()] == [(48, 14), (48, 14)]
    assert b.size_divisibility == 14
    # 518 px weights grid -> 37x37 position embedding (+1 class token row)
    assert b.vit.pos_embed.shape == (1, 1 + 37 * 37, 48)


def test_last_output_equals_normed_final_tokens():
    b = randomize_(tiny(), 3)
    x = torch.randn(1, 3, 42, 56)
    out = b(x)["dino4"]
    tokens = b.vit.forward_features(x)[:, b.vit.num_prefix_tokens :]  # final LayerNorm applied
    ref = tokens.reshape(1, 3, 4, 48).permute(0, 3, 1, 2)
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-6)


@pytest.mark.parametrize("size", [(57, 56), (56, 60)])
def test_size_not_multiple_of_14_raises(size):
    with pytest.raises(ValueError, match=f"{size[0]}x{size[1]}"):
        tiny()(torch.randn(1, 3, *size))


def test_bad_arguments():
    with pytest.raises(ValueError, match="out of range"):
        tiny(out_indices=(1, 4))
    with pytest.raises(ValueError, match="strictly increasing"):
        tiny(out_indices=(2, 1))
    with pytest.raises(ValueError, match="at least one"):
        tiny(out_indices=())
    with pytest.raises(ValueError, match="not a DINOv2 model"):
        DINOv2Backbone("vit_base_patch16_224", (0,))
    with pytest.raises(ValueError, match=r"\[B, 3, H, W\]"):
        tiny()(torch.randn(1, 1, 28, 28))


def test_pruning_and_every_param_gets_grad():
    b = tiny(out_indices=(0, 2), norm_outputs=False).train()
    assert b.num_layers == 3 and len(b.vit.blocks) == 3
    assert not any(n.startswith("vit.norm.") for n, _ in b.named_parameters())
    sum(v.sum() for v in b(torch.randn(1, 3, 28, 28)).values()).backward()
    no_grad = [n for n, p in b.named_parameters() if p.grad is None]
    assert no_grad == []


def test_sdpa_is_used(monkeypatch):
    b = randomize_(tiny(), 1)
    x = torch.randn(1, 3, 28, 42)
    calls = []
    orig = F.scaled_dot_product_attention

    def counting(*a, **k):
        calls.append(1)
        return orig(*a, **k)

    monkeypatch.setattr(F, "scaled_dot_product_attention", counting)
    y = b(x)["dino4"]
    assert len(calls) == 4  # one per block
    b_eager = tiny(fused_attn=False)
    b_eager.load_state_dict(b.state_dict())
    calls.clear()
    y_eager = b_eager(x)["dino4"]
    assert calls == []
    torch.testing.assert_close(y, y_eager, rtol=1e-4, atol=1e-4)


def test_grad_checkpointing_same_grads():
    grads = []
    for ckpt in (False, True):
        b = randomize_(tiny(grad_checkpointing=ckpt), 2).train()
        assert b.vit.grad_checkpointing is ckpt
        torch.manual_seed(5)
        sum((v**2).mean() for v in b(torch.randn(2, 3, 28, 28)).values()).backward()
        grads.append({n: p.grad.clone() for n, p in b.named_parameters()})
    for n in grads[0]:
        torch.testing.assert_close(grads[0][n], grads[1][n], rtol=1e-5, atol=1e-6)


def test_drop_path_schedule():
    b = tiny(drop_path_rate=0.3)
    # timm: linear schedule 0, 0.1, 0.2, 0.3 over the 4 blocks (block 0 has none)
    assert isinstance(b.vit.blocks[0].drop_path1, torch.nn.Identity)
    assert [round(blk.drop_path1.drop_prob, 6) for blk in b.vit.blocks[1:]] == [0.1, 0.2, 0.3]


def test_layer_ids():
    b = tiny(name="vit_small_patch14_reg4_dinov2")
    expect = {
        "vit.cls_token": 0,
        "vit.reg_token": 0,
        "vit.pos_embed": 0,
        "vit.patch_embed.proj.weight": 0,
        "vit.blocks.0.attn.qkv.weight": 1,
        "blocks.2.ls1.gamma": 3,
        "vit.blocks.3.mlp.fc2.bias": 4,
        "vit.norm.weight": 5,
    }
    assert {n: b.layer_id(n) for n in expect} == expect
    names = {n for n, _ in b.named_parameters()}
    assert {n for n in expect if n.startswith("vit.")} <= names
    assert all(0 <= b.layer_id(n) <= b.num_layers + 1 for n in names)
    with pytest.raises(ValueError, match="decoder.conv"):
        b.layer_id("decoder.conv.weight")


def test_vit_large_structure_on_meta():
    with torch.device("meta"):
        b = DINOv2Backbone("vit_large_patch14_dinov2", (4, 11, 17, 23))
    assert b.depth == 24 and b.num_layers == 24 and b.embed_dim == 1024
    assert sum(p.numel() for p in b.parameters()) == 304_367_616  # ViT-L/14 at 518 px: ~304.4M
    assert all(s.channels == 1024 and s.stride == 14 for s in b.output_shape().values())
    assert all(blk.attn.fused_attn for blk in b.vit.blocks)


def test_registry_builder():
    from detectron2.config import get_cfg
    from detectron2.modeling import BACKBONE_REGISTRY, build_backbone

    assert BACKBONE_REGISTRY.get("build_dinov2_backbone") is build_dinov2_backbone
    cfg = add_dinov2_config(get_cfg())
    cfg.MODEL.BACKBONE.NAME = "build_dinov2_backbone"
    cfg.MODEL.DINOV2.NAME = "vit_small_patch14_reg4_dinov2"
    cfg.MODEL.DINOV2.OUT_INDICES = [0, 1]
    cfg.MODEL.DINOV2.IMG_SIZE = 224
    cfg.MODEL.DINOV2.MODEL_KWARGS.depth = 2
    cfg.MODEL.DINOV2.MODEL_KWARGS.embed_dim = 48
    cfg.MODEL.DINOV2.MODEL_KWARGS.num_heads = 3
    b = build_backbone(cfg)
    assert isinstance(b, DINOv2Backbone) and b.num_layers == 2
    assert b.vit.pos_embed.shape == (1, 16 * 16, 48) and b.vit.reg_token.shape == (1, 4, 48)
    assert b(torch.randn(1, 3, 28, 28))["dino2"].shape == (1, 48, 2, 2)
    with pytest.raises(ValueError, match="add_dinov2_config"):
        build_dinov2_backbone(get_cfg(), None)


# ----------------------------------------------------------------------------- checkpoints


def test_official_and_timm_layouts_load_identically(tmp_path):
    src = randomize_(tiny(seed=0), 10)
    sd = src.vit.state_dict()
    official = timm_to_official(sd)
    assert detect_layout(official) == "official" and detect_layout(sd) == "timm"
    torch.save(official, tmp_path / "dinov2_official.pth")
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in sd.items()}, str(tmp_path / "timm.safetensors"))

    x = torch.randn(1, 3, 56, 42)
    ref = src(x)
    for f in ("dinov2_official.pth", "timm.safetensors"):
        dst = tiny(seed=1, weights=str(tmp_path / f))
        out = dst(x)
        assert all(torch.equal(out[k], ref[k]) for k in ref), f


def test_register_chunked_swiglu_official_layout(tmp_path):
    """Giant-style SwiGLU (mlp.w12/w3) + registers + block_chunks=2, inside a training
    checkpoint container {"teacher": {"backbone.*", "dino_head.*"}}."""
    name = "vit_giant_patch14_reg4_dinov2"
    src = randomize_(tiny(seed=0, name=name), 11)
    sd = src.vit.state_dict()
    pos0 = torch.randn(1, 1, 48)
    official = timm_to_official(sd, register=True, pos0=pos0, chunks=2, swiglu=True)
    assert "blocks.1.3.mlp.w12.weight" in official and "register_tokens" in official
    conv = convert_dinov2_official_to_timm(official)
    assert set(conv) == set(sd)
    torch.testing.assert_close(conv["cls_token"], sd["cls_token"], rtol=0, atol=1e-6)
    assert torch.equal(conv["pos_embed"], sd["pos_embed"]) and torch.equal(conv["reg_token"], sd["reg_token"])

    ckpt = {"teacher": {**{f"backbone.{k}": v for k, v in official.items()}, "dino_head.w": torch.zeros(3)}}
    torch.save(ckpt, tmp_path / "teacher_checkpoint.pth")
    dst = tiny(seed=1, name=name, weights=str(tmp_path / "teacher_checkpoint.pth"))
    x = torch.randn(1, 3, 42, 42)
    ref, out = src(x), dst(x)
    for k in ref:
        torch.testing.assert_close(out[k], ref[k], rtol=1e-5, atol=1e-5)


def test_pos_embed_resampled_to_model_grid(tmp_path):
    src = randomize_(tiny(seed=0), 12)  # 37x37 grid
    torch.save(timm_to_official(src.vit.state_dict()), tmp_path / "w.pth")
    x = torch.randn(1, 3, 56, 56)
    for mode in ("timm", "dinov2", "hf"):
        src.pos_embed_interp = mode
        if mode == "timm":
            vars(src.vit).pop("_pos_embed", None)  # timm's own method
        else:
            src.vit._pos_embed = src._pos_embed
        dst = tiny(seed=1, img_size=56, weights=str(tmp_path / "w.pth"), pos_embed_interp=mode)  # 4x4 grid
        assert dst.vit.pos_embed.shape == (1, 1 + 16, 48)
        torch.testing.assert_close(dst.vit.pos_embed[:, 0], src.vit.pos_embed[:, 0], rtol=0, atol=0)
        # load-time resampling == the same convention's run-time resampling of the 37x37 embedding
        torch.testing.assert_close(dst(x)["dino4"], src(x)["dino4"], rtol=1e-5, atol=1e-5)


def test_missing_unexpected_and_shape_errors(tmp_path):
    sd = randomize_(tiny(), 13).vit.state_dict()
    official = timm_to_official(sd)
    official["blocks.0.attn.extra_bias"] = torch.zeros(3)
    del official["blocks.1.mlp.fc2.bias"]
    torch.save(official, tmp_path / "bad.pth")
    with pytest.raises(ValueError) as e:
        tiny(weights=str(tmp_path / "bad.pth"))
    msg = str(e.value)
    assert "bad.pth" in msg and "'blocks.1.mlp.fc2.bias'" in msg and "'blocks.0.attn.extra_bias'" in msg

    sd2 = dict(sd)
    sd2["blocks.2.norm1.weight"] = torch.zeros(50)
    torch.save(sd2, tmp_path / "shape.pth")
    with pytest.raises(ValueError, match=r"blocks\.2\.norm1\.weight: \(50,\) vs \(48,\)"):
        load_backbone_weights(tiny().vit, str(tmp_path / "shape.pth"))

    with pytest.raises(FileNotFoundError, match="nope.pth"):
        load_backbone_weights(tiny().vit, str(tmp_path / "nope.pth"))


def test_sincos_pos_embed_init():
    from pe_panoptic.modeling.backbone import DINOv2Backbone, sincos_2d

    emb = sincos_2d(2, 3, 8)
    assert emb.shape == (6, 8)
    # position (row 1, col 2): x = 2, y = 1; omega = (1, 1/100) for dim 8
    want = torch.tensor([math.sin(2), math.sin(0.02), math.cos(2), math.cos(0.02),
                         math.sin(1), math.sin(0.01), math.cos(1), math.cos(0.01)])
    assert torch.allclose(emb[5], want, atol=1e-6)
    bb = DINOv2Backbone("vit_small_patch14_dinov2", out_indices=(0,), img_size=56, pos_embed_init="sincos",
                        model_kwargs=dict(embed_dim=48, depth=1, num_heads=2))
    pe = bb.vit.pos_embed[0]
    assert torch.allclose(pe[1:], sincos_2d(4, 4, 48)) and torch.all(pe[0] == 0)
    with pytest.raises(ValueError, match="pos_embed_init"):
        DINOv2Backbone("vit_small_patch14_dinov2", out_indices=(0,), img_size=56, pos_embed_init="rope",
                       model_kwargs=dict(embed_dim=48, depth=1, num_heads=2))


def test_freeze_at_like_detectron2_resnet():
    """freeze_at=k: embeddings and blocks 0..k-2 get no gradient, the rest train; outputs unchanged."""
    x = torch.randn(2, 3, 28, 28)
    ref = tiny(seed=1)
    b = tiny(seed=1, freeze_at=3).train()
    frozen = sorted({n.split(".")[1] if not n.startswith("vit.blocks") else ".".join(n.split(".")[1:3])
                     for n, p in b.named_parameters() if not p.requires_grad})
    assert frozen == ["blocks.0", "blocks.1", "cls_token", "patch_embed", "pos_embed"]
    out = b(x)
    sum(v.sum() for v in out.values()).backward()
    assert all((p.grad is None) == (not p.requires_grad) for p in b.parameters())
    with torch.no_grad():
        for k, v in ref(x).items():
            torch.testing.assert_close(b.eval()(x)[k], v)
    assert all(p.requires_grad for p in tiny(freeze_at=0).parameters())
    with pytest.raises(ValueError, match=r"freeze_at must be in \[0, 5\]"):
        tiny(freeze_at=6)
