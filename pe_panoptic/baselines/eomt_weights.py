"""Key maps from published EoMT checkpoints to :class:`pe_panoptic.baselines.eomt.EoMT`, and DINOv2
weights at another patch size (upstream's ViTs are DINOv2 reg4 rebuilt at patch 16).

Layouts recognized by :func:`convert_eomt_state_dict` (:func:`detect_eomt_layout`):

* ``"hf"``: transformers' ``EomtForUniversalSegmentation`` (the hub's ``tue-mps/*_eomt_*``
  repositories): ``embeddings.{cls_token, register_tokens, patch_embeddings.projection,
  position_embeddings}``, ``layers.N.{norm1, attention.{q,k,v,out}_proj, layer_scale1.lambda1,
  norm2, mlp.fc1, mlp.fc2, layer_scale2.lambda1}``, ``layernorm``, ``query``,
  ``upscale_block.block.N.{conv1, conv2, layernorm2d}``, ``mask_head.fc{1,2,3}``,
  ``class_predictor``, ``attn_mask_probs``, ``criterion.empty_weight`` (the names of
  transformers' own modules, ``modeling_eomt.py``; its conversion script ``convert_eomt_to_hf.py``
  is not in the installed wheel).
* ``"official"``: tue-mps/eomt's Lightning checkpoints: ``network.`` + the module names of
  ``models/eomt.py`` (``encoder.backbone.<timm ViT>``, ``q``, ``class_head``,
  ``mask_head.{0,2,4}``, ``upscale.N.{conv1, conv2, norm}``, ``attn_mask_probs``) and
  ``encoder.pixel_mean`` / ``pixel_std`` buffers (dropped: the normalization is the model's),
  plus ``criterion.empty_weight``.

Ours: ``backbone.vit.<timm ViT>``, ``query``, ``class_head``, ``mask_head.{0,2,4}``,
``upscale.N.{conv1, conv2, norm}``, ``attn_mask_probs``, ``criterion.empty_weight``.

transformers keeps no position row for the class token; a timm ViT without registers
(``vit_*_patch14_dinov2``, ours) has one: it is set to 0, which adds nothing to the class token,
so the forward is unchanged. timm's register variants have no such row, as transformers.
"""
from __future__ import annotations

import logging
import re
from typing import Dict, Mapping

import torch
from torch import nn

__all__ = ["detect_eomt_layout", "convert_eomt_state_dict", "load_eomt_checkpoint", "load_dinov2_for_eomt"]

logger = logging.getLogger(__name__)

StateDict = Dict[str, torch.Tensor]

_HF_LAYER = {
    "norm1": "norm1", "norm2": "norm2", "attention.out_proj": "attn.proj", "mlp.fc1": "mlp.fc1",
    "mlp.fc2": "mlp.fc2",
}
_HF_SCALE = {"layer_scale1.lambda1": "ls1.gamma", "layer_scale2.lambda1": "ls2.gamma"}
_HF_HEADS = {"layernorm": "backbone.vit.norm", "query": "query", "class_predictor": "class_head",
             "mask_head.fc1": "mask_head.0", "mask_head.fc2": "mask_head.2", "mask_head.fc3": "mask_head.4",
             "embeddings.patch_embeddings.projection": "backbone.vit.patch_embed.proj"}
_HF_KEY = re.compile(r"^layers\.(\d+)\.(.+)\.(weight|bias|lambda1)$")
_HF_UPSCALE = re.compile(r"^upscale_block\.block\.(\d+)\.(conv1|conv2|layernorm2d)\.(weight|bias)$")


def detect_eomt_layout(sd: Mapping[str, torch.Tensor]) -> str:
    """``"hf"``, ``"official"`` or ``"ours"``; ValueError for anything else."""
    if "embeddings.patch_embeddings.projection.weight" in sd:
        return "hf"
    if any(k.startswith(("network.encoder.backbone.", "encoder.backbone.")) for k in sd):
        return "official"
    if "backbone.vit.patch_embed.proj.weight" in sd and "query.weight" in sd:
        return "ours"
    raise ValueError("EoMT checkpoint: unknown layout (neither transformers' EomtForUniversalSegmentation, "
                     f"tue-mps/eomt's nor pe_panoptic's); first keys: {sorted(sd)[:8]}")


def _from_hf(sd: Mapping[str, torch.Tensor], class_pos_row: bool) -> StateDict:
    out: StateDict = {}
    qkv: Dict[int, Dict[str, Dict[str, torch.Tensor]]] = {}
    for k, v in sd.items():
        m = _HF_KEY.match(k)
        if m:
            i, name, kind = int(m.group(1)), m.group(2), m.group(3)
            if name.startswith("attention.") and name[len("attention."):] in ("q_proj", "k_proj", "v_proj"):
                qkv.setdefault(i, {}).setdefault(kind, {})[name[len("attention."):]] = v
            elif f"{name}.{kind}" in _HF_SCALE:
                out[f"backbone.vit.blocks.{i}.{_HF_SCALE[f'{name}.{kind}']}"] = v
            elif name in _HF_LAYER:
                out[f"backbone.vit.blocks.{i}.{_HF_LAYER[name]}.{kind}"] = v
            else:
                raise ValueError(f"EoMT checkpoint (transformers layout): unknown key {k!r}")
            continue
        m = _HF_UPSCALE.match(k)
        if m:
            part = {"layernorm2d": "norm"}.get(m.group(2), m.group(2))
            out[f"upscale.{m.group(1)}.{part}.{m.group(3)}"] = v
            continue
        head, _, kind = k.rpartition(".")
        if head in _HF_HEADS:
            out[f"{_HF_HEADS[head]}.{kind}"] = v
        elif k == "embeddings.cls_token":
            out["backbone.vit.cls_token"] = v
        elif k == "embeddings.register_tokens":
            if v.shape[1]:
                out["backbone.vit.reg_token"] = v
        elif k == "embeddings.position_embeddings.weight":
            pos = v[None]
            out["backbone.vit.pos_embed"] = torch.cat([pos.new_zeros(1, 1, v.shape[-1]), pos], 1) if class_pos_row else pos
        elif k in ("attn_mask_probs", "criterion.empty_weight"):
            out[k] = v
        elif k != "embeddings.position_ids":
            raise ValueError(f"EoMT checkpoint (transformers layout): unknown key {k!r}")
    for i, kinds in qkv.items():
        for kind, parts in kinds.items():
            if set(parts) != {"q_proj", "k_proj", "v_proj"}:
                raise ValueError(f"EoMT checkpoint (transformers layout): layer {i} has {sorted(parts)} {kind}s, "
                                 "needs q_proj, k_proj and v_proj")
            out[f"backbone.vit.blocks.{i}.attn.qkv.{kind}"] = torch.cat(
                [parts["q_proj"], parts["k_proj"], parts["v_proj"]], 0)
    return out


def _from_official(sd: Mapping[str, torch.Tensor]) -> StateDict:
    out: StateDict = {}
    for k, v in sd.items():
        if k.startswith("network."):
            k = k[len("network."):]
        if k in ("encoder.pixel_mean", "encoder.pixel_std"):
            continue
        if k.startswith("encoder.backbone."):
            out["backbone.vit." + k[len("encoder.backbone."):]] = v
        elif k.startswith("q."):
            out["query." + k[2:]] = v
        elif k.split(".")[0] in ("class_head", "mask_head", "upscale", "attn_mask_probs", "criterion"):
            out[k] = v
        else:
            raise ValueError(f"EoMT checkpoint (tue-mps/eomt layout): unknown key {k!r}")
    return out


def convert_eomt_state_dict(sd: Mapping[str, torch.Tensor], model: nn.Module) -> StateDict:
    """A published EoMT state dict (any layout of the module doc) -> ``model``'s key names."""
    layout = detect_eomt_layout(sd)
    if layout == "hf":
        return _from_hf(sd, class_pos_row=not model.backbone.vit.no_embed_class)
    if layout == "official":
        return _from_official(sd)
    return dict(sd)


def load_eomt_checkpoint(model: nn.Module, path_or_state: object) -> str:
    """Load an EoMT checkpoint (file or state dict; ``{"model": ...}`` / ``{"state_dict": ...}``
    containers unwrapped) into ``model`` strictly; returns the layout. A criterion without
    ``empty_weight`` in the checkpoint keeps the model's (it is the no-object weight, a constant)."""
    obj = path_or_state
    if isinstance(obj, str):
        from pe_panoptic.modeling.backbone_weights import read_state_dict

        obj = read_state_dict(obj)
    for key in ("state_dict", "model"):
        if isinstance(obj, Mapping) and isinstance(obj.get(key), Mapping):
            obj = obj[key]
    layout = detect_eomt_layout(obj)
    sd = convert_eomt_state_dict(obj, model)
    expected = model.state_dict()
    if "criterion.empty_weight" in expected and "criterion.empty_weight" not in sd:
        sd["criterion.empty_weight"] = expected["criterion.empty_weight"]
    missing, unexpected = sorted(set(expected) - set(sd)), sorted(set(sd) - set(expected))
    wrong = [f"{k}: {tuple(v.shape)} vs {tuple(expected[k].shape)}" for k, v in sd.items()
             if k in expected and v.shape != expected[k].shape]
    if missing or unexpected or wrong:
        raise ValueError(f"EoMT checkpoint ({layout} layout) does not fit the model: missing {missing}, "
                         f"unexpected {unexpected}, shape mismatches (checkpoint vs model) {wrong}")
    model.load_state_dict(sd, strict=True)
    return layout


def load_dinov2_for_eomt(backbone: nn.Module, path: str) -> None:
    """DINOv2 weights (official or timm layout, e.g. ``dinov2_vitl14_reg4_pretrain.pth``) into a
    :class:`~pe_panoptic.modeling.backbone.DINOv2Backbone` built at another patch size (upstream
    EoMT: patch 16, 640 px): the patch-embedding kernel is resampled with timm's
    ``resample_patch_embed`` (FlexiViT's pseudo-inverse resize, what timm does when upstream
    builds ``vit_*_patch14_reg4_dinov2`` with ``patch_size=16``), the position grid by
    :func:`~pe_panoptic.modeling.backbone_weights.load_backbone_state_dict`; blocks the
    backbone pruned are skipped."""
    from timm.layers import resample_patch_embed

    from pe_panoptic.modeling.backbone_weights import (
        convert_dinov2_official_to_timm,
        detect_layout,
        extract_vit_state_dict,
        load_backbone_state_dict,
        read_state_dict,
    )

    vit = backbone.vit
    sd = extract_vit_state_dict(read_state_dict(path), path)
    if detect_layout(sd) == "official":
        sd = convert_dinov2_official_to_timm(sd)
    kept = len(vit.blocks)
    sd = {k: v for k, v in sd.items() if not (k.startswith("blocks.") and int(k.split(".")[1]) >= kept)}
    if not backbone.norm_outputs:
        sd = {k: v for k, v in sd.items() if not k.startswith("norm.")}
    w = sd.get("patch_embed.proj.weight")
    target = vit.patch_embed.proj.weight
    if w is not None and w.shape[-2:] != target.shape[-2:]:
        logger.info("Resampling the patch embedding of %s from %s to %s", path, tuple(w.shape[-2:]),
                    tuple(target.shape[-2:]))
        sd["patch_embed.proj.weight"] = resample_patch_embed(w.float(), list(target.shape[-2:])).to(w.dtype)
    load_backbone_state_dict(vit, sd, source=path, pos_embed_interp=backbone.pos_embed_interp)
