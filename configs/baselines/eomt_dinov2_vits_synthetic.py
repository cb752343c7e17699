# EoMT (pe_panoptic.baselines.eomt, docs/eomt.md) on the synthetic dataset, on the same DINOv2
# ViT-S/14 and weights file as our method's demo and the Mask2Former ViT-S baseline
# (weights/dinov2_vits14_pretrain.pth, the official DINOv2 position resampling, the first 6 blocks
# as configs/synthetic/pe_vits.py and mask2former_dinov2_vits_synthetic.py), with the data,
# evaluators and schedule of configs/baselines/mask2former_r50_synthetic.py (168 px, batch 8,
# warmup + cosine, 600 iterations) through the same tools/train_net.py.
#
# Differences from upstream EoMT-S (configs/dinov2/coco/panoptic/eomt_small_640.yaml):
# * backbone: plain ViT-S/14 without registers (vit_small_patch14_dinov2, 6 of its 12 blocks kept)
#   instead of vit_small_patch14_reg4_dinov2 rebuilt at patch 16; at patch 14 upstream's rule
#   max(1, int(log2(14)) - 2) gives 1 ScaleBlock, so masks come at stride 7 (the stride of the
#   Mask2Former ViT-S baseline's mask features) instead of 4;
# * N = 3 query blocks (upstream S/B: 3): the queries join before block 3 of the 6 kept;
# * 50 queries instead of 200: a synthetic image has at most a dozen segments (the Mask2Former
#   baselines use 50 for the same reason);
# * mask annealing: upstream's staggered rule on this length (pe_panoptic.baselines.eomt_annealing.
#   staggered_windows): with T = train.max_iter and s = T // (N + 2), block k anneals over
#   [(k + 1) s, (k + 2) s): at 600 iterations 120-240, 240-360, 360-480, then 120 iterations
#   without masked attention (evaluation runs unmasked once every p is 0);
# * 168 px inputs padded to 168 x 168 (upstream: long side 640, padded to 640 x 640);
# * optimizer: upstream's AdamW lr 1e-4, wd 0.05, layer decay 0.8 over the ViT, with the
#   warmup + cosine of the synthetic baselines instead of upstream's two-stage warm-up and poly 0.9
#   (too long for 600 iterations); gradient clipping 0.01 as upstream; no AMP (CPU).
# Losses and inference thresholds are upstream's (class 2, mask 5, dice 5, no-object 0.1, 12544
# points; score > 0.8, overlap 0.8).
import os

from detectron2.config import LazyCall as L
from pe_panoptic.baselines.eomt import EoMT
from pe_panoptic.baselines.eomt_annealing import MaskAnnealingHook
from pe_panoptic.baselines.mask2former import build_mask2former_criterion, panoptic_metadata
from pe_panoptic.engine.solver import get_param_groups
from pe_panoptic.modeling.backbone import DINOv2Backbone
import torch

from .mask2former_r50_synthetic import dataloader, lr_multiplier, train

WEIGHTS = os.path.join(os.environ.get("PE_PANOPTIC_WEIGHTS") or os.path.join(os.path.dirname(__file__), "../../weights"),
                       "dinov2_vits14_pretrain.pth")
NUM_BLOCKS = 3

model = L(EoMT)(
    backbone=L(DINOv2Backbone)(
        model_name="vit_small_patch14_dinov2",
        out_indices=[5],
        img_size=518,
        weights=os.path.normpath(WEIGHTS),
        drop_path_rate=0.0,
        pos_embed_interp="dinov2",
        freeze_at=0,
    ),
    num_classes=7,
    num_queries=50,
    num_blocks=NUM_BLOCKS,
    criterion=L(build_mask2former_criterion)(
        num_classes="${..num_classes}",
        class_weight=2.0,
        mask_weight=5.0,
        dice_weight=5.0,
        no_object_weight=0.1,
        decoder_layers="${..num_blocks}",
        deep_supervision=True,
        train_num_points=12544,
        oversample_ratio=3.0,
        importance_sample_ratio=0.75,
    ),
    metadata=L(panoptic_metadata)(name="synthetic_panoptic_train"),
    input_size=168,
    object_mask_threshold=0.8,
    overlap_threshold=0.8,
)

optimizer = L(torch.optim.AdamW)(
    params=L(get_param_groups)(model=None, base_lr="${..lr}", weight_decay="${..weight_decay}", layer_decay=0.8),
    lr=1e-4,
    betas=(0.9, 0.999),
    weight_decay=0.05,
)

train.clip_grad_norm = 0.01
train.hooks = [L(MaskAnnealingHook)(windows=None, power=0.9)]
train.output_dir = "output/baselines/eomt_dinov2_vits_synthetic"
