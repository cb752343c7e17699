# Upstream EoMT-L COCO panoptic recipe (tue-mps/eomt, MIT: configs/dinov2/coco/panoptic/
# eomt_large_640.yaml, models/eomt.py, training/lightning_module.py; paper: Kerssies et al.,
# "Your ViT is Secretly an Image Segmentation Model", CVPR 2025, COCO val PQ 56.0 at 640 px) as a
# LazyConfig of pe_panoptic.baselines.eomt.EoMT, evaluated by pe_panoptic's evaluators on
# detectron2's builtin coco_2017_{train,val}_panoptic.
#
# Weights: DINOv2 ViT-L/14 with 4 registers (official dinov2_vitl14_reg4_pretrain.pth or timm's
# vit_large_patch14_reg4_dinov2.lvd142m file), rebuilt at patch 16 as upstream (kernel resampled,
# pe_panoptic.baselines.eomt_weights.load_dinov2_for_eomt):
#   python tools/train_net.py --config-file configs/baselines/eomt_vitl_coco.py \
#       model.backbone_weights=weights/dinov2_vitl14_reg4_pretrain.pth
# A published EoMT checkpoint (hub / transformers layout or tue-mps/eomt's Lightning layout)
# converts with pe_panoptic.baselines.eomt_weights.load_eomt_checkpoint (docs/eomt.md).
#
# Not reproduced: upstream's two-stage warm-up (heads for 500 iterations with the ViT frozen,
# then the ViT warmed up over 1000): here one linear warm-up of 1500 iterations for everything,
# then poly 0.9 (upstream's decay).
import detectron2.data.transforms as T
from detectron2.config import LazyCall as L
from detectron2.data import DatasetMapper, build_detection_test_loader, build_detection_train_loader, get_detection_dataset_dicts
from detectron2.solver import WarmupParamScheduler
from fvcore.common.param_scheduler import PolynomialDecayParamScheduler
from mask2former import COCOPanopticNewBaselineDatasetMapper
from pe_panoptic.baselines.eomt import EoMT
from pe_panoptic.baselines.eomt_annealing import MaskAnnealingHook
from pe_panoptic.baselines.mask2former import build_mask2former_criterion, panoptic_metadata
from pe_panoptic.engine.solver import get_param_groups
from pe_panoptic.evaluation.build import build_evaluators
from pe_panoptic.modeling.backbone import DINOv2Backbone
import torch

from ..common.train import train

IMAGE_SIZE = 640  # upstream img_size 640 (eomt_large_640.yaml)
NUM_BLOCKS = 4  # upstream num_blocks: 3 for S/B, 4 for L, 5 for g
BATCH = 16  # upstream: batch 16 (4 GPUs x 4)
# 12 epochs of COCO train2017 (118287 images) at batch 16 (upstream max_epochs 12 for L)
MAX_ITER = 12 * 118287 // BATCH

model = L(EoMT)(
    backbone=L(DINOv2Backbone)(
        model_name="vit_large_patch14_reg4_dinov2",  # upstream backbone_name
        out_indices=[23],  # all 24 blocks
        img_size=IMAGE_SIZE,  # upstream: timm model built at img_size 640 ...
        model_kwargs=dict(patch_size=16),  # ... and patch_size 16 (40 x 40 patches)
        weights=None,  # loaded with kernel resampling through model.backbone_weights
        drop_path_rate=0.0,
        pos_embed_interp="timm",
    ),
    backbone_weights="",
    num_classes=133,  # COCO panoptic: 80 things + 53 stuff
    num_queries=200,  # upstream num_q 200
    num_blocks=NUM_BLOCKS,
    num_upscale_blocks=None,  # upstream max(1, log2(16) - 2) = 2 ScaleBlocks
    criterion=L(build_mask2former_criterion)(
        num_classes="${..num_classes}",
        class_weight=2.0,  # upstream class_coefficient 2.0
        mask_weight=5.0,  # upstream mask_coefficient 5.0
        dice_weight=5.0,  # upstream dice_coefficient 5.0
        no_object_weight=0.1,  # upstream no_object_coefficient 0.1
        decoder_layers="${..num_blocks}",  # upstream: loss on every block's prediction
        deep_supervision=True,
        train_num_points=12544,  # upstream num_points 12544
        oversample_ratio=3.0,  # upstream oversample_ratio 3.0
        importance_sample_ratio=0.75,  # upstream importance_sample_ratio 0.75
    ),
    metadata=L(panoptic_metadata)(name="coco_2017_train_panoptic"),
    input_size=IMAGE_SIZE,  # upstream inference: long side 640, then pad to 640 x 640
    object_mask_threshold=0.8,  # upstream: keep a query if its score > 0.8
    overlap_threshold=0.8,  # upstream: keep a segment if its area ratio >= 0.8 (Mask2Former's)
    mask_threshold=0.5,
)

dataloader = dict(
    train=L(build_detection_train_loader)(
        dataset=L(get_detection_dataset_dicts)(names="coco_2017_train_panoptic", filter_empty=True),
        mapper=L(COCOPanopticNewBaselineDatasetMapper)(
            is_train=True,
            tfm_gens=[  # upstream: large-scale jitter 0.1-2.0 at 640, 640 crop, flip
                L(T.RandomFlip)(horizontal=True),
                L(T.ResizeScale)(min_scale=0.1, max_scale=2.0, target_height=IMAGE_SIZE, target_width=IMAGE_SIZE),
                L(T.FixedSizeCrop)(crop_size=(IMAGE_SIZE, IMAGE_SIZE)),
            ],
            image_format="RGB",
        ),
        total_batch_size=BATCH,
        num_workers=4,
    ),
    test=L(build_detection_test_loader)(
        dataset=L(get_detection_dataset_dicts)(names="coco_2017_val_panoptic", filter_empty=False),
        mapper=L(DatasetMapper)(
            is_train=False,
            # upstream: long side to 640 (ResizeShortestEdge's max_size caps the long side)
            augmentations=[L(T.ResizeShortestEdge)(short_edge_length=IMAGE_SIZE, max_size=IMAGE_SIZE)],
            image_format="RGB",
        ),
        num_workers=4,
    ),
    evaluator=L(build_evaluators)(dataset_name="coco_2017_val_panoptic", output_dir="${train.output_dir}"),
)

optimizer = L(torch.optim.AdamW)(
    # upstream: AdamW lr 1e-4, weight decay 0.05, layer-wise lr decay 0.8 over the ViT
    params=L(get_param_groups)(model=None, base_lr="${..lr}", weight_decay="${..weight_decay}", layer_decay=0.8),
    lr=1e-4,
    betas=(0.9, 0.999),
    weight_decay=0.05,
)
lr_multiplier = L(WarmupParamScheduler)(
    scheduler=L(PolynomialDecayParamScheduler)(base_value=1.0, power=0.9),  # upstream poly_power 0.9
    warmup_length=1500 / MAX_ITER,  # upstream: 500 (heads) + 1000 (ViT) warm-up iterations
    warmup_factor=0.0,
)

train.init_checkpoint = ""
train.max_iter = MAX_ITER
# upstream attn_mask_annealing_start_steps / end_steps for EoMT-L
train.hooks = [L(MaskAnnealingHook)(windows=[(14782, 29564), (29564, 44346), (44346, 59128), (59128, 73910)],
                                    power=0.9)]
train.clip_grad_norm = 0.01  # upstream gradient_clip_val 0.01
train.amp = dict(enabled=True, dtype="bf16")  # mixed precision (ours: bf16 on GPU; set enabled=False on CPU)
train.checkpointer = dict(period=5000, max_to_keep=10)
train.eval_period = 5000
train.seed = 0
train.output_dir = "output/baselines/eomt_vitl_coco"
