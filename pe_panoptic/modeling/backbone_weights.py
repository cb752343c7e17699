"""Loading DINOv2 encoder weights (paper Sec. 5.1: the encoder is a pretrained DINOv2 ViT that
is fine-tuned) from a local file into a timm ``VisionTransformer``.

Two checkpoint layouts are recognized automatically:

* **official** (``facebookresearch/dinov2``, e.g. ``dinov2_vitl14_pretrain.pth``): keys
  ``cls_token``, ``pos_embed`` ``(1, 1 + 37*37, C)`` (its first row is the class token's
  position), ``mask_token``, ``register_tokens`` (``_reg4`` variants), ``patch_embed.proj.*``,
  ``blocks.N.{norm1,attn.qkv,attn.proj,ls1.gamma,norm2,mlp.fc1,mlp.fc2,ls2.gamma}.*`` (giant:
  SwiGLU ``mlp.w12`` / ``mlp.w3``), ``norm.*``. Training checkpoints built with
  ``block_chunks > 0`` store blocks as ``blocks.<chunk>.<N>.*`` where ``N`` is already the
  global block index; this chunked layout is flattened.
* **timm**: the ``state_dict()`` of the timm model itself (``.pth`` or ``.safetensors``), e.g.
  ``timm/vit_large_patch14_dinov2.lvd142m``.

Conversion official -> timm (:func:`convert_dinov2_official_to_timm`):

* ``mask_token`` is **dropped**: it is only used by DINOv2's masked-image-modelling
  pretraining; timm's DINOv2 models have no such parameter and fine-tuning never uses it.
* ``register_tokens`` -> ``reg_token``. timm builds the register variants with
  ``no_embed_class=True`` (no position embedding row for prefix tokens), whereas the official
  model adds ``pos_embed[:, 0]`` to the class token. So ``cls_token += pos_embed[:, 0]`` and
  ``pos_embed = pos_embed[:, 1:]`` (the same folding timm does in its own converter).
* ``mlp.w12`` / ``mlp.w3`` -> ``mlp.fc1`` / ``mlp.fc2`` (timm ``SwiGLUPacked`` has the same
  ``[x1; x2]`` packing and ``silu(x1) * x2`` gating).
* Layer-scale names are identical in both layouts (``ls1.gamma`` / ``ls2.gamma``).

A ``pos_embed`` trained on another grid (37x37 for the 518 px official weights) is resampled
to the model's grid with timm's ``resample_abs_pos_embed`` (bicubic, antialiased: the same
function timm uses at run time for ``dynamic_img_size``). A classifier ``head.*`` present in a
timm checkpoint is ignored when the model has no classifier. Any other missing or unexpected
key, or a shape that cannot be reconciled, raises ``ValueError`` listing the key names.
"""
from __future__ import annotations

import logging
import math
import os
import re
from typing import Dict, Mapping

import torch
from torch import nn

__all__ = [
    "read_state_dict",
    "extract_vit_state_dict",
    "detect_layout",
    "convert_dinov2_official_to_timm",
    "resample_pos_embed_for",
    "load_backbone_state_dict",
    "load_backbone_weights",
]

logger = logging.getLogger(__name__)

StateDict = Dict[str, torch.Tensor]

_CHUNKED_BLOCK = re.compile(r"^blocks\.(\d+)\.(\d+)\.(.*)$")
_SWIGLU = re.compile(r"^(blocks\.\d+\.mlp\.)(w12|w3)\.(weight|bias)$")
_ANCHOR = "patch_embed.proj.weight"
# containers used by common training frameworks around the actual state dict
_CONTAINER_KEYS = ("model", "state_dict", "teacher", "module")


def read_state_dict(path: str) -> StateDict:
    """Read a checkpoint file (``.safetensors`` or anything ``torch.load`` reads) on the CPU.

    ``path`` may be anything detectron2's ``PathManager`` resolves (local path, URL)."""
    from detectron2.utils.file_io import PathManager

    if not isinstance(path, (str, os.PathLike)) or not str(path):
        raise ValueError(f"weights: expected a checkpoint path, got {path!r}")
    path = str(path)
    local = PathManager.get_local_path(path)
    if not os.path.isfile(local):
        raise FileNotFoundError(f"weights: checkpoint file not found: {path}")
    if local.endswith(".safetensors"):
        from safetensors.torch import load_file

        return load_file(local, device="cpu")
    try:
        obj = torch.load(local, map_location="cpu", weights_only=True)
    except Exception as e:  # pickle / format errors: name the file
        raise ValueError(f"weights: cannot read checkpoint {path}: {e}") from e
    if not isinstance(obj, Mapping):
        raise ValueError(f"weights: {path} does not contain a state dict (got {type(obj).__name__})")
    return dict(obj)


def extract_vit_state_dict(obj: Mapping, source: str = "<state_dict>") -> StateDict:
    """The ViT's own tensors from a checkpoint object.

    Unwraps container dicts (``{"model": ...}``, ``{"teacher": ...}``, ...) and strips the
    prefix in front of the (unique) ``patch_embed.proj.weight`` key (``module.``, ``backbone.``,
    ``vit.``, ...), keeping only the keys under that prefix."""
    sd = obj
    for _ in range(4):  # nested containers, e.g. {"model": {"teacher": ...}}
        if any(k.endswith(_ANCHOR) for k in sd):
            break
        inner = next((sd[k] for k in _CONTAINER_KEYS if isinstance(sd.get(k), Mapping)), None)
        if inner is None:
            break
        sd = inner
    anchors = [k for k in sd if isinstance(k, str) and k.endswith(_ANCHOR)]
    if len(anchors) != 1:
        raise ValueError(
            f"weights: {source} must contain exactly one '*{_ANCHOR}' key to locate the ViT, "
            f"found {anchors or 'none'} (top-level keys: {sorted(map(str, obj))[:10]})"
        )
    prefix = anchors[0][: -len(_ANCHOR)]
    out = {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}
    bad = [k for k, v in out.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise ValueError(f"weights: {source} has non-tensor entries {bad}")
    return out


def detect_layout(sd: Mapping[str, torch.Tensor]) -> str:
    """``"official"`` if any official-only key is present (``mask_token``,
    ``register_tokens``, ``mlp.w12``/``w3``, chunked ``blocks.C.N.*``), else ``"timm"``.

    (An official non-register checkpoint without ``mask_token`` is key-for-key identical to the
    timm layout, so calling it "timm" is exact.)"""
    for k in sd:
        if k in ("mask_token", "register_tokens") or _SWIGLU.match(k) or _CHUNKED_BLOCK.match(k):
            return "official"
    return "timm"


def _unchunk_blocks(sd: StateDict) -> StateDict:
    """``blocks.<chunk>.<N>.rest`` -> ``blocks.<N>.rest`` (DINOv2 ``BlockChunk`` layout, whose
    inner index is already global because chunks are padded with ``Identity``)."""
    out: StateDict = {}
    for k, v in sd.items():
        m = _CHUNKED_BLOCK.match(k)
        nk = f"blocks.{m.group(2)}.{m.group(3)}" if m else k
        if nk in out:
            raise ValueError(f"weights: chunked block key {k!r} collides with {nk!r}")
        out[nk] = v
    return out


def convert_dinov2_official_to_timm(state_dict: Mapping[str, torch.Tensor]) -> StateDict:
    """Official DINOv2 state dict -> timm ``VisionTransformer`` state dict (pure function; the
    input is not modified). See the module docstring for the rules."""
    sd = _unchunk_blocks(dict(state_dict))
    sd.pop("mask_token", None)
    out: StateDict = {}
    if "register_tokens" in sd:
        if "cls_token" not in sd or "pos_embed" not in sd:
            raise ValueError("weights: official register checkpoint lacks cls_token or pos_embed")
        pos = sd.pop("pos_embed")
        out["reg_token"] = sd.pop("register_tokens")
        out["cls_token"] = sd.pop("cls_token") + pos[:, :1]
        out["pos_embed"] = pos[:, 1:]
    for k, v in sd.items():
        m = _SWIGLU.match(k)
        if m:
            k = f"{m.group(1)}{'fc1' if m.group(2) == 'w12' else 'fc2'}.{m.group(3)}"
        out[k] = v
    return out


def _square_grid(num_tokens: int, what: str) -> int:
    side = math.isqrt(num_tokens)
    if side * side != num_tokens:
        raise ValueError(f"weights: {what} has {num_tokens} patch positions, not a square grid")
    return side


def resample_pos_embed_for(pos_embed: torch.Tensor, model: nn.Module, mode: str = "timm") -> torch.Tensor:
    """Resample a checkpoint ``pos_embed`` (square grid) to ``model.patch_embed.grid_size``,
    keeping the prefix-token rows, with the backbone's ``pos_embed_interp`` convention
    (:mod:`pe_panoptic.modeling.pos_embed`): ``"timm"`` = timm ``resample_abs_pos_embed`` (bicubic +
    antialias); ``"dinov2"`` / ``"hf"`` = the official / Hugging Face resampling, so that a model
    built at that grid computes what the official model computes at that input size."""
    from timm.layers import resample_abs_pos_embed

    from pe_panoptic.modeling.pos_embed import resample_grid

    target = model.pos_embed
    if pos_embed.shape == target.shape:
        return pos_embed
    num_prefix = 0 if getattr(model, "no_embed_class", False) else int(model.num_prefix_tokens)
    if pos_embed.dim() != 3 or pos_embed.shape[0] != 1 or pos_embed.shape[2] != target.shape[2]:
        raise ValueError(
            f"weights: pos_embed has shape {tuple(pos_embed.shape)}, model expects "
            f"{tuple(target.shape)} (embedding dims must agree)"
        )
    side = _square_grid(pos_embed.shape[1] - num_prefix, "pos_embed")
    new_size = tuple(model.patch_embed.grid_size)
    logger.info("Resampling pos_embed from %dx%d to %dx%d (%s)", side, side, *new_size, mode)
    if mode in ("dinov2", "hf"):
        grid = resample_grid(pos_embed[:, num_prefix:].float().reshape(1, side, side, -1), new_size, mode)
        return torch.cat((pos_embed[:, :num_prefix].float(), grid.reshape(1, -1, grid.shape[-1])), 1).to(pos_embed.dtype)
    return resample_abs_pos_embed(
        pos_embed.float(), new_size=list(new_size), old_size=[side, side], num_prefix_tokens=num_prefix
    ).to(pos_embed.dtype)


def load_backbone_state_dict(model: nn.Module, state_dict: Mapping, source: str = "<state_dict>",
                             pos_embed_interp: str = "timm") -> str:
    """Load a DINOv2 checkpoint object (either layout) into the timm ``model``; strict.

    Returns the detected layout. Raises ``ValueError`` listing missing / unexpected keys and
    shape mismatches."""
    sd = extract_vit_state_dict(state_dict, source)
    layout = detect_layout(sd)
    if layout == "official":
        sd = convert_dinov2_official_to_timm(sd)
    expected = model.state_dict()
    if "pos_embed" in sd and "pos_embed" in expected:
        sd["pos_embed"] = resample_pos_embed_for(sd["pos_embed"], model, pos_embed_interp)
    if not any(k.startswith("head.") for k in expected):  # backbone without classifier
        sd = {k: v for k, v in sd.items() if not k.startswith("head.")}
    missing = sorted(set(expected) - set(sd))
    unexpected = sorted(set(sd) - set(expected))
    if missing or unexpected:
        raise ValueError(
            f"weights: {source} ({layout} layout) does not match the model: "
            f"missing keys {missing}, unexpected keys {unexpected}"
        )
    wrong = [f"{k}: {tuple(sd[k].shape)} vs {tuple(v.shape)}" for k, v in expected.items() if sd[k].shape != v.shape]
    if wrong:
        raise ValueError(f"weights: {source} ({layout} layout) has shape mismatches (checkpoint vs model): {wrong}")
    model.load_state_dict(sd, strict=True)
    logger.info("Loaded %d tensors (%s layout) from %s", len(sd), layout, source)
    return layout


def load_backbone_weights(timm_model: nn.Module, path: str, pos_embed_interp: str = "timm") -> None:
    """Load the DINOv2 checkpoint file ``path`` into ``timm_model`` (layout auto-detected;
    ``.safetensors`` or a ``torch.save`` file)."""
    load_backbone_state_dict(timm_model, read_state_dict(path), source=str(path), pos_embed_interp=pos_embed_interp)
