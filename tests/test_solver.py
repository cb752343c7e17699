"""Layer-wise lr decay parameter groups and the warmup + cosine multiplier (pe_panoptic/engine/solver.py)."""
import pytest
import torch
from torch import nn

from pe_panoptic.modeling.backbone import DINOv2Backbone
from pe_panoptic.modeling.decoder import PixelHeads, TransposedConvDecoder
from pe_panoptic.engine.solver import get_param_groups, layer_decay_factor, warmup_cosine_multiplier

BASE_LR = 1e-3


class Toy(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.backbone = DINOv2Backbone(
            "vit_small_patch14_dinov2", (0, 1, 2, 3), model_kwargs=dict(depth=4, embed_dim=48, num_heads=3)
        )
        self.decoder = TransposedConvDecoder(4 * 48, width=32, num_upsample=1, norm="BN")
        self.heads = PixelHeads(32, num_classes=3, inst_channels=16)


@pytest.fixture(scope="module")
def toy():
    return Toy()


def settings(groups):
    """name-independent view: id(param) -> (lr, weight_decay)."""
    out = {}
    for g in groups:
        for p in g["params"]:
            assert id(p) not in out, "parameter in two groups"
            out[id(p)] = (g["lr"], g["weight_decay"])
    return out


def test_layer_decay_lrs_by_hand(toy):
    groups = get_param_groups(toy, base_lr=BASE_LR, weight_decay=0.05, layer_decay=0.6)
    s = settings(groups)
    P = dict(toy.named_parameters())
    # num_layers = 4: lr = 1e-3 * 0.6 ** (5 - layer_id)
    expect = {
        "backbone.vit.pos_embed": (7.776e-5, 0.0),  # layer 0: 0.6^5
        "backbone.vit.cls_token": (7.776e-5, 0.0),
        "backbone.vit.patch_embed.proj.weight": (7.776e-5, 0.05),
        "backbone.vit.patch_embed.proj.bias": (7.776e-5, 0.0),
        "backbone.vit.blocks.0.attn.qkv.weight": (1.296e-4, 0.05),  # block 0 -> layer 1: 0.6^4
        "backbone.vit.blocks.0.attn.qkv.bias": (1.296e-4, 0.0),
        "backbone.vit.blocks.0.norm1.weight": (1.296e-4, 0.0),
        "backbone.vit.blocks.0.ls1.gamma": (1.296e-4, 0.0),
        "backbone.vit.blocks.1.mlp.fc1.weight": (2.16e-4, 0.05),  # 0.6^3
        "backbone.vit.blocks.3.mlp.fc2.weight": (6e-4, 0.05),  # last block: 0.6^1
        "backbone.vit.norm.weight": (1e-3, 0.0),  # final norm: 0.6^0
        "decoder.layers.0.0.weight": (1e-3, 0.05),
        "decoder.layers.0.1.weight": (1e-3, 0.0),  # BatchNorm
        "heads.inst.weight": (1e-3, 0.05),
        "heads.inst.bias": (1e-3, 0.0),
    }
    for name, (lr, wd) in expect.items():
        got = s[id(P[name])]
        assert got[0] == pytest.approx(lr, rel=1e-9) and got[1] == wd, name
    # 6 distinct lrs (layers 0..5, heads share layer 5's) x {0.05, 0}; all params covered once
    assert len(groups) == 12
    assert len(s) == len(P)
    assert all(g["lr"] == pytest.approx(BASE_LR * g["lr_factor"]) for g in groups)


def test_weight_decay_norm_and_no_decay_keys(toy):
    groups = get_param_groups(toy, base_lr=BASE_LR, weight_decay=0.05, layer_decay=0.6, weight_decay_norm=0.01)
    s, P = settings(groups), dict(toy.named_parameters())
    assert s[id(P["backbone.vit.blocks.2.norm2.bias"])][1] == 0.01
    assert s[id(P["backbone.vit.blocks.2.attn.proj.bias"])][1] == 0.01  # biases follow norms
    assert s[id(P["backbone.vit.blocks.2.ls2.gamma"])][1] == 0.0  # no-decay key
    assert s[id(P["backbone.vit.pos_embed"])][1] == 0.0
    assert s[id(P["decoder.layers.1.1.bias"])][1] == 0.01
    # layer 0: {0.05, 0.01, 0}; blocks: 3 each; top (norm + decoder + heads): {0.05, 0.01}
    assert len(groups) == 3 + 4 * 3 + 2
    g2 = get_param_groups(toy, base_lr=BASE_LR, weight_decay=0.05, no_decay_keys=("pos_embed", "cls_token"))
    s2 = settings(g2)
    assert s2[id(P["backbone.vit.blocks.2.ls2.gamma"])] == (BASE_LR, 0.05)
    assert len(g2) == 2  # no layer decay: {base_lr} x {0.05, 0}


def test_frozen_and_shared_params():
    m = nn.Module()
    m.a = nn.Linear(3, 3)
    m.b = nn.Linear(3, 3)
    m.b.weight = m.a.weight  # shared
    m.c = nn.Linear(3, 3).requires_grad_(False)
    groups = get_param_groups(m, base_lr=0.1, weight_decay=0.1)
    ids = [id(p) for g in groups for p in g["params"]]
    assert sorted(ids) == sorted({id(m.a.weight), id(m.a.bias), id(m.b.bias)})
    with pytest.raises(ValueError, match="layer_id"):
        get_param_groups(m, base_lr=0.1, weight_decay=0.1, layer_decay=0.5)
    with pytest.raises(ValueError, match="model is None"):
        get_param_groups(None, base_lr=0.1, weight_decay=0.1)
    with pytest.raises(ValueError, match="layer_decay"):
        get_param_groups(m, base_lr=0.1, weight_decay=0.1, layer_decay=1.5)


def test_lazyconfig_instantiate(toy):
    from detectron2.config import LazyCall as L
    from detectron2.config import instantiate

    cfg = L(torch.optim.AdamW)(
        params=L(get_param_groups)(model=None, base_lr=BASE_LR, weight_decay=0.05, layer_decay=0.6),
        lr=BASE_LR,
        betas=(0.9, 0.999),
        weight_decay=0.05,
    )
    cfg.params.model = toy
    opt = instantiate(cfg)
    lrs = sorted({round(g["lr"], 12) for g in opt.param_groups})
    assert lrs == pytest.approx([7.776e-5, 1.296e-4, 2.16e-4, 3.6e-4, 6e-4, 1e-3])


def test_layer_decay_factor():
    assert layer_decay_factor(0, 12, 0.5) == 0.5**13
    assert layer_decay_factor(13, 12, 0.5) == 1.0
    with pytest.raises(ValueError):
        layer_decay_factor(14, 12, 0.5)


def test_warmup_cosine_values():
    f = warmup_cosine_multiplier(warmup_length=0.1, base_lr=1e-3, min_lr=1e-6, warmup_factor=0.001)
    # warmup: 0.001 -> 1 linearly over [0, 0.1]; cosine 1 -> 1e-3 over [0.1, 1]
    assert f(0.0) == pytest.approx(0.001)
    assert f(0.05) == pytest.approx(0.5005)
    assert f(0.1) == pytest.approx(1.0)
    assert f(0.55) == pytest.approx(0.5005)  # cosine half-way: (1 + 1e-3) / 2
    assert f(0.775) == pytest.approx(0.14730016279731956)  # 1e-3 + 0.4995 (1 + cos(3 pi / 4))
    assert f(1.0) == pytest.approx(1e-3)
    g = warmup_cosine_multiplier(warmup_length=0.0, base_lr=1.0, min_lr=0.0)
    assert g(0.0) == 1.0 and g(0.5) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="warmup_length"):
        warmup_cosine_multiplier(warmup_length=1.0, base_lr=1.0)
    with pytest.raises(ValueError, match="min_lr"):
        warmup_cosine_multiplier(warmup_length=0.1, base_lr=1e-4, min_lr=1e-3)


def test_lr_multiplier_with_param_groups():
    from detectron2.solver import LRMultiplier

    a, b = nn.Parameter(torch.zeros(1)), nn.Parameter(torch.zeros(1))
    opt = torch.optim.AdamW([{"params": [a], "lr": 1e-3}, {"params": [b], "lr": 6e-4}], lr=1e-3)
    sched = LRMultiplier(opt, warmup_cosine_multiplier(warmup_length=0.1, base_lr=1e-3), max_iter=100)
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([1e-6, 6e-7])
    for _ in range(55):
        opt.step()
        sched.step()
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([1e-3 * 0.5005, 6e-4 * 0.5005])


def test_head_lr_multiplier(toy):
    """head_lr_multiplier scales the decoder and heads only; the backbone keeps its layer decay."""
    groups = get_param_groups(toy, base_lr=BASE_LR, weight_decay=0.05, layer_decay=0.6, head_lr_multiplier=4.0)
    s = settings(groups)
    P = dict(toy.named_parameters())
    assert s[id(P["heads.inst.weight"])][0] == pytest.approx(4e-3)
    assert s[id(P["decoder.layers.0.0.weight"])][0] == pytest.approx(4e-3)
    assert s[id(P["backbone.vit.norm.weight"])][0] == pytest.approx(1e-3)  # top backbone layer: unchanged
    assert s[id(P["backbone.vit.blocks.0.attn.qkv.weight"])][0] == pytest.approx(1.296e-4)
    assert all(g["lr"] == pytest.approx(BASE_LR * g["lr_factor"]) for g in groups)
    with pytest.raises(ValueError, match="head_lr_multiplier must be > 0"):
        get_param_groups(toy, base_lr=BASE_LR, weight_decay=0.05, head_lr_multiplier=0.0)
