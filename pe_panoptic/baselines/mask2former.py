"""Mask2Former (upstream code, installed by ``tools/install_mask2former.py``) in pe_panoptic's harness.

Used by ``configs/baselines/mask2former_*.py``. The model classes are upstream's own
(``MaskFormer``, ``MaskFormerHead``, ``MSDeformAttnPixelDecoder``,
``MultiScaleMaskedTransformerDecoder``, ``SetCriterion``, ``HungarianMatcher``); this module only
adds what a LazyConfig needs to build them without a yacs ``CfgNode``, with upstream's semantics:

* :func:`build_mask2former_criterion`: the criterion and matcher exactly as
  ``MaskFormer.from_config`` builds them (loss weights, deep supervision);
* :func:`mask2former_param_groups`: the parameter groups of upstream ``train_net.py``'s
  ``build_optimizer`` (backbone lr multiplier, no weight decay on norms / embeddings);
* :class:`DINOv2SimplePyramid`: a ViTDet-style simple feature pyramid (Li et al. 2022, Fig. 2c)
  on the last block output of pe_panoptic's :class:`~pe_panoptic.modeling.backbone.DINOv2Backbone`, so
  Mask2Former runs on the same DINOv2 as our method (detectron2 0.6 predates ViTDet);
* :func:`upstream_r50_coco_cfg`: the ``maskformer2_R50_bs16_50ep`` recipe as a yacs ``CfgNode``
  (upstream's ``configs/coco/panoptic-segmentation/{Base-COCO-PanopticSegmentation,
  maskformer2_R50_bs16_50ep}.yaml``), for upstream's own build path (``build_model``);
* :func:`panoptic_metadata`: the dataset metadata ``MaskFormer`` takes (thing ids for panoptic
  inference), as a LazyCall-able function.
"""
from __future__ import annotations

from typing import Any, Dict, List, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from detectron2.config import CfgNode
from detectron2.data import MetadataCatalog
from detectron2.layers import Conv2d, ShapeSpec, get_norm
from detectron2.modeling import Backbone

try:
    import mask2former  # noqa: F401  (registers MaskFormer, MaskFormerHead, the pixel decoders, ...)
    from mask2former.modeling.criterion import SetCriterion
    from mask2former.modeling.matcher import HungarianMatcher
except ImportError as e:  # pragma: no cover - exercised only on an incomplete install
    raise ImportError(
        f"pe_panoptic.baselines.mask2former needs upstream Mask2Former ({e}). Install it with "
        "`python tools/install_mask2former.py` (run by `make venv`), or put an upstream checkout of "
        "https://github.com/facebookresearch/Mask2Former on PYTHONPATH (docs/install.md)."
    ) from e

from pe_panoptic.modeling.backbone import DINOv2Backbone
from pe_panoptic.data.validation import install_validation

# importing mask2former registered its COCO "*_panoptic_with_sem_seg" datasets after pe_panoptic's
# import-time validation: check them too when they are loaded
install_validation()

__all__ = [
    "build_mask2former_criterion",
    "mask2former_param_groups",
    "DINOv2SimplePyramid",
    "upstream_r50_coco_cfg",
    "panoptic_metadata",
]


def panoptic_metadata(name: str):
    """``MetadataCatalog.get(name)`` (upstream passes ``MetadataCatalog.get(cfg.DATASETS.TRAIN[0])``)."""
    return MetadataCatalog.get(name)


def build_mask2former_criterion(num_classes: int, *, class_weight: float = 2.0, mask_weight: float = 5.0,
                                dice_weight: float = 5.0, no_object_weight: float = 0.1, decoder_layers: int = 9,
                                deep_supervision: bool = True, train_num_points: int = 12544,
                                oversample_ratio: float = 3.0, importance_sample_ratio: float = 0.75) -> SetCriterion:
    """``SetCriterion`` + ``HungarianMatcher`` as upstream ``MaskFormer.from_config`` builds them.

    ``decoder_layers``: the transformer decoder's layers (its ``dec_layers``; upstream's
    ``MASK_FORMER.DEC_LAYERS`` is one more, as the learnable queries are supervised too): with
    deep supervision, ``decoder_layers + 1`` predictions get the losses."""
    if decoder_layers < 0:
        raise ValueError(f"build_mask2former_criterion: decoder_layers must be >= 0, got {decoder_layers}")
    dec_layers = decoder_layers + 1  # upstream's MASK_FORMER.DEC_LAYERS
    matcher = HungarianMatcher(cost_class=class_weight, cost_mask=mask_weight, cost_dice=dice_weight,
                               num_points=train_num_points)
    weight_dict = {"loss_ce": class_weight, "loss_mask": mask_weight, "loss_dice": dice_weight}
    if deep_supervision:
        aux = {}
        for i in range(dec_layers - 1):
            aux.update({f"{k}_{i}": v for k, v in weight_dict.items()})
        weight_dict.update(aux)
    return SetCriterion(num_classes, matcher=matcher, weight_dict=weight_dict, eos_coef=no_object_weight,
                        losses=["labels", "masks"], num_points=train_num_points, oversample_ratio=oversample_ratio,
                        importance_sample_ratio=importance_sample_ratio)


_NORM_TYPES = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm, nn.GroupNorm, nn.InstanceNorm1d,
               nn.InstanceNorm2d, nn.InstanceNorm3d, nn.LayerNorm, nn.LocalResponseNorm)


def mask2former_param_groups(model: nn.Module, *, base_lr: float, weight_decay: float, weight_decay_norm: float = 0.0,
                             weight_decay_embed: float = 0.0, backbone_multiplier: float = 0.1,
                             backbone_prefix: str = "backbone") -> List[Dict[str, Any]]:
    """Parameter groups of upstream ``train_net.py`` ``build_optimizer``: one group per parameter;
    lr x ``backbone_multiplier`` for modules whose name starts with ``backbone_prefix`` (upstream:
    any module name containing "backbone"), weight decay ``weight_decay_norm`` for normalization
    layers and ``weight_decay_embed`` for ``nn.Embedding`` (the queries), 0 for Swin's
    ``relative_position_bias_table`` / ``absolute_pos_embed``. Frozen parameters are skipped.

    Pass ``backbone_prefix="backbone.net"`` to keep a new feature pyramid inside the backbone at
    the full learning rate (:class:`DINOv2SimplePyramid`)."""
    groups: List[Dict[str, Any]] = []
    seen = set()
    for mname, module in model.named_modules():
        for pname, p in module.named_parameters(recurse=False):
            if not p.requires_grad or p in seen:
                continue
            seen.add(p)
            g = {"lr": base_lr, "weight_decay": weight_decay}
            if mname == backbone_prefix or mname.startswith(backbone_prefix + "."):
                g["lr"] = base_lr * backbone_multiplier
            if "relative_position_bias_table" in pname or "absolute_pos_embed" in pname:
                g["weight_decay"] = 0.0
            if isinstance(module, _NORM_TYPES):
                g["weight_decay"] = weight_decay_norm
            if isinstance(module, nn.Embedding):
                g["weight_decay"] = weight_decay_embed
            groups.append({"params": [p], **g})
    if not groups:
        raise ValueError("mask2former_param_groups: the model has no trainable parameters")
    return groups


class _ChannelLayerNorm(nn.Module):
    """LayerNorm over the channels of an ``[N, C, H, W]`` map (ViTDet's "LN"; detectron2 0.6's
    ``get_norm`` has no "LN")."""

    def __init__(self, channels: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x):
        u = x.mean(1, keepdim=True)
        s = (x - u).pow(2).mean(1, keepdim=True)
        x = (x - u) / torch.sqrt(s + self.eps)
        return self.weight[:, None, None] * x + self.bias[:, None, None]


def _norm(norm: str, channels: int):
    return _ChannelLayerNorm(channels) if norm == "LN" else get_norm(norm, channels)


class _LastLevelMaxPool(nn.Module):
    """One more level: stride-2 subsampling of the coarsest output (detectron2's ``LastLevelMaxPool``,
    ViTDet's ``top_block``)."""

    def forward(self, x):
        return F.max_pool2d(x, kernel_size=1, stride=2, padding=0)


class DINOv2SimplePyramid(Backbone):
    """ViTDet's simple feature pyramid on a DINOv2 ViT: from the output of the ViT's last block
    (stride ``p = 14``), scale factors ``(2, 1, 0.5)`` (one stride-2 transposed conv / identity /
    2x2 max-pool, each followed by a 1x1 and a 3x3 conv with ``norm``) plus a stride-2 max-pool of
    the coarsest map: outputs ``sfp7``, ``sfp14``, ``sfp28``, ``sfp56`` at strides 7, 14, 28, 56
    (ViTDet: 4/8/16/32 from stride 16; with ``p = 14`` the upsampling levels are 2x instead of
    4x so that every stride is an integer, as Mask2Former's pixel decoder needs).

    Args:
        net: a :class:`~pe_panoptic.modeling.backbone.DINOv2Backbone` with exactly one output (its
            ``out_indices`` = the last block kept, e.g. ``(11,)`` for all of ViT-S/14).
        out_channels: channels of every pyramid level (ViTDet: 256).
        norm: norm of the pyramid convs: ``"LN"`` (ViTDet's channel LayerNorm) or a detectron2
            ``get_norm`` name (``"GN"``, ``"BN"``, ...).

    ``size_divisibility`` is ``4 p`` = 56, so that every level has an exact size.
    """

    def __init__(self, net: DINOv2Backbone, *, out_channels: int = 256, norm: str = "LN"):
        super().__init__()
        if not isinstance(net, DINOv2Backbone):
            raise TypeError(f"DINOv2SimplePyramid: net must be a pe_panoptic DINOv2Backbone, got {type(net).__name__}")
        if len(net.out_indices) != 1:
            raise ValueError(f"DINOv2SimplePyramid uses the last block's output only: give the DINOv2Backbone one "
                             f"out_indices entry (the last block kept), got {net.out_indices}")
        self.net = net
        p, dim = net.patch_size, net.embed_dim
        self.stages = nn.ModuleList()
        for scale in (2.0, 1.0, 0.5):
            if scale == 2.0:
                layers, c = [nn.ConvTranspose2d(dim, dim // 2, kernel_size=2, stride=2)], dim // 2
            elif scale == 1.0:
                layers, c = [], dim
            else:
                layers, c = [nn.MaxPool2d(kernel_size=2, stride=2)], dim
            layers += [
                Conv2d(c, out_channels, kernel_size=1, bias=False, norm=_norm(norm, out_channels)),
                Conv2d(out_channels, out_channels, kernel_size=3, padding=1, bias=False,
                       norm=_norm(norm, out_channels)),
            ]
            self.stages.append(nn.Sequential(*layers))
        self.top_block = _LastLevelMaxPool()
        strides = (p // 2, p, 2 * p, 4 * p)
        self._out_features = [f"sfp{s}" for s in strides]
        self._out_feature_strides = {n: s for n, s in zip(self._out_features, strides)}
        self._out_feature_channels = {n: out_channels for n in self._out_features}
        self._size_divisibility = 4 * p

    @property
    def size_divisibility(self) -> int:
        return self._size_divisibility

    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        (last,) = self.net(x).values()
        outs = [stage(last) for stage in self.stages]
        outs.append(self.top_block(outs[-1]))
        return dict(zip(self._out_features, outs))


def pyramid_shapes(strides: Sequence[int] = (7, 14, 28, 56), channels: int = 256) -> Dict[str, ShapeSpec]:
    """``{"sfp<s>": ShapeSpec}`` of :class:`DINOv2SimplePyramid`'s outputs (for the head's input_shape)."""
    return {f"sfp{s}": ShapeSpec(channels=channels, stride=s) for s in strides}


def upstream_r50_coco_cfg(*, num_classes: int = 133, train_dataset: str = "coco_2017_train_panoptic") -> CfgNode:
    """Upstream's ``maskformer2_R50_bs16_50ep`` COCO panoptic recipe as a yacs config, built the
    upstream way (``get_cfg`` + ``add_deeplab_config`` + ``add_maskformer2_config`` + the values of
    the two YAML files); ``detectron2.modeling.build_model(cfg)`` builds upstream's model."""
    from detectron2.config import get_cfg
    from detectron2.projects.deeplab import add_deeplab_config
    from mask2former import add_maskformer2_config

    cfg = get_cfg()
    add_deeplab_config(cfg)
    add_maskformer2_config(cfg)
    # Base-COCO-PanopticSegmentation.yaml
    m = cfg.MODEL
    m.BACKBONE.FREEZE_AT = 0
    m.BACKBONE.NAME = "build_resnet_backbone"
    m.WEIGHTS = "detectron2://ImageNetPretrained/torchvision/R-50.pkl"
    m.PIXEL_MEAN = [123.675, 116.280, 103.530]
    m.PIXEL_STD = [58.395, 57.120, 57.375]
    m.RESNETS.DEPTH = 50
    m.RESNETS.STEM_TYPE = "basic"
    m.RESNETS.STEM_OUT_CHANNELS = 64
    m.RESNETS.STRIDE_IN_1X1 = False
    m.RESNETS.OUT_FEATURES = ["res2", "res3", "res4", "res5"]
    m.RESNETS.RES5_MULTI_GRID = [1, 1, 1]
    cfg.DATASETS.TRAIN = (train_dataset,)
    cfg.DATASETS.TEST = ("coco_2017_val_panoptic_with_sem_seg",)
    s = cfg.SOLVER
    s.IMS_PER_BATCH, s.BASE_LR, s.STEPS, s.MAX_ITER = 16, 0.0001, (327778, 355092), 368750
    s.WARMUP_FACTOR, s.WARMUP_ITERS, s.WEIGHT_DECAY, s.OPTIMIZER = 1.0, 10, 0.05, "ADAMW"
    s.BACKBONE_MULTIPLIER = 0.1
    s.CLIP_GRADIENTS.ENABLED, s.CLIP_GRADIENTS.CLIP_TYPE = True, "full_model"
    s.CLIP_GRADIENTS.CLIP_VALUE, s.CLIP_GRADIENTS.NORM_TYPE = 0.01, 2.0
    s.AMP.ENABLED = True
    cfg.INPUT.IMAGE_SIZE, cfg.INPUT.MIN_SCALE, cfg.INPUT.MAX_SCALE = 1024, 0.1, 2.0
    cfg.INPUT.FORMAT, cfg.INPUT.DATASET_MAPPER_NAME = "RGB", "coco_panoptic_lsj"
    cfg.TEST.EVAL_PERIOD = 5000
    cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS, cfg.DATALOADER.NUM_WORKERS = True, 4
    # maskformer2_R50_bs16_50ep.yaml
    m.META_ARCHITECTURE = "MaskFormer"
    h = m.SEM_SEG_HEAD
    h.NAME, h.IN_FEATURES, h.IGNORE_VALUE, h.NUM_CLASSES = "MaskFormerHead", ["res2", "res3", "res4", "res5"], 255, num_classes
    h.LOSS_WEIGHT, h.CONVS_DIM, h.MASK_DIM, h.NORM = 1.0, 256, 256, "GN"
    h.PIXEL_DECODER_NAME = "MSDeformAttnPixelDecoder"
    h.DEFORMABLE_TRANSFORMER_ENCODER_IN_FEATURES = ["res3", "res4", "res5"]
    h.COMMON_STRIDE, h.TRANSFORMER_ENC_LAYERS = 4, 6
    f = m.MASK_FORMER
    f.TRANSFORMER_DECODER_NAME, f.TRANSFORMER_IN_FEATURE = "MultiScaleMaskedTransformerDecoder", "multi_scale_pixel_decoder"
    f.DEEP_SUPERVISION, f.NO_OBJECT_WEIGHT, f.CLASS_WEIGHT, f.MASK_WEIGHT, f.DICE_WEIGHT = True, 0.1, 2.0, 5.0, 5.0
    f.HIDDEN_DIM, f.NUM_OBJECT_QUERIES, f.NHEADS, f.DROPOUT, f.DIM_FEEDFORWARD = 256, 100, 8, 0.0, 2048
    f.ENC_LAYERS, f.PRE_NORM, f.ENFORCE_INPUT_PROJ, f.SIZE_DIVISIBILITY = 0, False, False, 32
    f.DEC_LAYERS = 10  # 9 decoder layers, + 1 for the loss on the learnable queries
    f.TRAIN_NUM_POINTS, f.OVERSAMPLE_RATIO, f.IMPORTANCE_SAMPLE_RATIO = 12544, 3.0, 0.75
    f.TEST.SEMANTIC_ON, f.TEST.INSTANCE_ON, f.TEST.PANOPTIC_ON = True, True, True
    f.TEST.OVERLAP_THRESHOLD, f.TEST.OBJECT_MASK_THRESHOLD = 0.8, 0.8
    cfg.MODEL.DEVICE = "cpu"
    return cfg
