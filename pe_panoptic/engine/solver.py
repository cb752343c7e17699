"""Optimizer parameter groups with layer-wise lr decay, and the warmup + cosine lr multiplier
(paper Sec. 5.1: AdamW, lr 5e-4, "decayed through a cosine schedule after a linear warm up";
the backbone is fine-tuned with "layer decay to suppress the learning rate for the earlier
layers"). Neither paper gives the layer-decay factor or the final learning rate: the configs'
0.6 and 1e-6 (:data:`pe_panoptic.engine.recipes.LAYER_DECAY`, :data:`~pe_panoptic.engine.recipes.MIN_LR`) come
from the same group's follow-up work, not from the paper.

Layer-wise decay (as in BEiT / ViTDet): a backbone parameter of layer id ``i`` (see
:meth:`pe_panoptic.modeling.backbone.DINOv2Backbone.layer_id`; embeddings 0, block ``k`` -> ``k + 1``,
final norm ``L + 1``) gets ``lr = base_lr * layer_decay ** (L + 1 - i)`` with ``L`` the
backbone's ``num_layers``; every other parameter (decoder, heads) gets ``base_lr``.

LazyConfig use (detectron2's ``tools/lazyconfig_train_net.py`` sets
``cfg.optimizer.params.model = model`` before instantiating)::

    optimizer = L(torch.optim.AdamW)(
        params=L(get_param_groups)(model=None, base_lr=5e-4, weight_decay=0.05, layer_decay=0.8),
        lr=5e-4, betas=(0.9, 0.999), weight_decay=0.05)
    lr_multiplier = L(warmup_cosine_multiplier)(warmup_length=0.015, base_lr=5e-4, min_lr=1e-6)
"""
from __future__ import annotations

from typing import Dict, List, Sequence, Tuple

from fvcore.common.param_scheduler import (
    CompositeParamScheduler,
    CosineParamScheduler,
    LinearParamScheduler,
    ParamScheduler,
)
from torch import nn

__all__ = [
    "DEFAULT_NO_DECAY_KEYS",
    "NORM_TYPES",
    "layer_decay_factor",
    "get_param_groups",
    "warmup_cosine_multiplier",
]

#: parameter names (last name component(s)) that never get weight decay: tokens / position
#: embeddings, and the layer-scale ``gamma`` (1-D, like norms and biases, as in BEiT / MAE).
DEFAULT_NO_DECAY_KEYS: Tuple[str, ...] = ("pos_embed", "cls_token", "reg_token", "mask_token", "gamma")


def _norm_types() -> tuple:
    from detectron2.layers import FrozenBatchNorm2d

    types = [
        nn.modules.batchnorm._BatchNorm,
        nn.modules.instancenorm._InstanceNorm,
        nn.GroupNorm,
        nn.LayerNorm,
        nn.LocalResponseNorm,
        FrozenBatchNorm2d,
    ]
    if hasattr(nn, "RMSNorm"):
        types.append(nn.RMSNorm)
    return tuple(types)


#: module types whose parameters get ``weight_decay_norm`` (timm ``LayerNorm2d`` etc. subclass these)
NORM_TYPES = _norm_types()


def layer_decay_factor(layer_id: int, num_layers: int, layer_decay: float) -> float:
    """``layer_decay ** (num_layers + 1 - layer_id)``: 1 for the top layer (``num_layers + 1``)."""
    if not 0 <= layer_id <= num_layers + 1:
        raise ValueError(f"layer_id {layer_id} outside [0, {num_layers + 1}]")
    return float(layer_decay) ** (num_layers + 1 - layer_id)


def _matches(name: str, keys: Sequence[str]) -> bool:
    return any(name == k or name.endswith("." + k) for k in keys)


def get_param_groups(
    model: nn.Module,
    *,
    base_lr: float,
    weight_decay: float,
    layer_decay: float = 1.0,
    weight_decay_norm: float = 0.0,
    no_decay_keys: Sequence[str] = DEFAULT_NO_DECAY_KEYS,
    backbone_prefix: str = "backbone.",
    head_lr_multiplier: float = 1.0,
) -> List[Dict]:
    """Parameter groups for a torch optimizer.

    * lr: backbone parameters (names starting with ``backbone_prefix``; the submodule must have
      ``layer_id(name)`` and ``num_layers``) get ``base_lr * layer_decay ** (num_layers + 1 - i)``,
      all others ``base_lr * head_lr_multiplier`` (1 = the paper: one base lr; not in the paper
      otherwise, a named experiment switch).
    * weight decay: parameters of norm layers (:data:`NORM_TYPES`) and biases get
      ``weight_decay_norm``; names matching ``no_decay_keys`` (exactly or as a dotted suffix) get 0;
      everything else ``weight_decay``.
    * Frozen (``requires_grad=False``) and duplicate (shared) parameters are skipped; groups with
      equal (lr, weight decay) are merged.

    Each group: ``{"params", "lr", "weight_decay", "lr_factor"}``.
    """
    if model is None:
        raise ValueError("get_param_groups: model is None (set optimizer.params.model = model before instantiate)")
    if not base_lr > 0:
        raise ValueError(f"get_param_groups: base_lr must be > 0, got {base_lr}")
    if not 0 < layer_decay <= 1:
        raise ValueError(f"get_param_groups: layer_decay must be in (0, 1], got {layer_decay}")
    if weight_decay < 0 or weight_decay_norm < 0:
        raise ValueError(f"get_param_groups: weight decays must be >= 0, got {weight_decay}, {weight_decay_norm}")
    if not head_lr_multiplier > 0:
        raise ValueError(f"get_param_groups: head_lr_multiplier must be > 0, got {head_lr_multiplier}")
    if isinstance(no_decay_keys, str):
        no_decay_keys = (no_decay_keys,)

    backbone = None
    if backbone_prefix:
        try:
            backbone = model.get_submodule(backbone_prefix.rstrip("."))
        except AttributeError:
            backbone = None
    use_decay = layer_decay != 1.0
    if use_decay and (backbone is None or not hasattr(backbone, "layer_id") or not hasattr(backbone, "num_layers")):
        raise ValueError(
            f"get_param_groups: layer_decay={layer_decay} needs a submodule {backbone_prefix!r} with "
            "layer_id() and num_layers (e.g. DINOv2Backbone)"
        )

    norm_params = {id(p) for m in model.modules() if isinstance(m, NORM_TYPES) for p in m.parameters(recurse=False)}
    groups: Dict[Tuple[float, float], Dict] = {}
    seen = set()
    for name, p in model.named_parameters():
        if not p.requires_grad or id(p) in seen:
            continue
        seen.add(id(p))
        factor = 1.0 if name.startswith(backbone_prefix) else float(head_lr_multiplier)
        if use_decay and name.startswith(backbone_prefix):
            factor = layer_decay_factor(backbone.layer_id(name[len(backbone_prefix):]), backbone.num_layers, layer_decay)
        if id(p) in norm_params or name.endswith(".bias") or name == "bias":
            wd = weight_decay_norm
        elif _matches(name, no_decay_keys):
            wd = 0.0
        else:
            wd = weight_decay
        key = (factor, float(wd))
        if key not in groups:
            groups[key] = {"params": [], "lr": base_lr * factor, "weight_decay": float(wd), "lr_factor": factor}
        groups[key]["params"].append(p)
    return list(groups.values())


def warmup_cosine_multiplier(
    *, warmup_length: float, base_lr: float, min_lr: float = 1e-6, warmup_factor: float = 0.001
) -> ParamScheduler:
    """LR multiplier (fvcore scheduler over training progress ``where`` in [0, 1], as used by
    detectron2's ``LRMultiplier``): linear from ``warmup_factor`` to 1 over the first
    ``warmup_length`` of training, then a cosine from 1 to ``min_lr / base_lr`` over the rest.

    Unlike detectron2's ``WarmupParamScheduler`` (whose cosine runs over the whole [0, 1] and
    is only overridden during warmup), the cosine here is rescaled to the post-warmup interval,
    so it starts at exactly 1 and ends at exactly ``min_lr / base_lr``.
    """
    if not 0 <= warmup_length < 1:
        raise ValueError(f"warmup_cosine_multiplier: warmup_length must be in [0, 1), got {warmup_length}")
    if not base_lr > 0 or not 0 <= min_lr <= base_lr:
        raise ValueError(f"warmup_cosine_multiplier: need 0 <= min_lr <= base_lr, base_lr > 0; got {min_lr}, {base_lr}")
    if not 0 < warmup_factor <= 1:
        raise ValueError(f"warmup_cosine_multiplier: warmup_factor must be in (0, 1], got {warmup_factor}")
    cosine = CosineParamScheduler(1.0, min_lr / base_lr)
    if warmup_length == 0:
        return cosine
    return CompositeParamScheduler(
        [LinearParamScheduler(warmup_factor, 1.0), cosine],
        interval_scaling=["rescaled", "rescaled"],
        lengths=[warmup_length, 1.0 - warmup_length],
    )
