# Upstream Mask2Former's COCO panoptic recipe maskformer2_R50_bs16_50ep
# (facebookresearch/Mask2Former configs/coco/panoptic-segmentation/Base-COCO-PanopticSegmentation.yaml
# + maskformer2_R50_bs16_50ep.yaml; COCO val PQ 51.9 in upstream's model zoo) as a LazyConfig of
# upstream's own classes, installed by tools/install_mask2former.py.
#
# Recipe: ResNet-50 (torchvision ImageNet weights R-50.pkl, stride in 3x3, FrozenBN, nothing
# frozen), MSDeformAttn pixel decoder (6 encoder layers on res3-res5, GN, 256 dims, FFN 1024),
# masked-attention transformer decoder (9 layers + the supervised learnable queries, 100 queries,
# 8 heads, FFN 2048, no dropout), losses class 2 / mask 5 / dice 5, no-object 0.1, 12544 points;
# LSJ (scale 0.1-2.0, 1024 crop, flip), batch 16, AdamW lr 1e-4 (backbone x 0.1, wd 0.05, none on
# norms / queries), full-model gradient clipping 0.01, AMP, 368750 iterations (50 epochs) with lr
# x 0.1 at 327778 and 355092, warmup 10 iterations at factor 1.0 (i.e. none); inference on the
# shortest edge 800 (max 1333), overlap / object-mask thresholds 0.8.
#
# Evaluation through pe_panoptic's evaluators on detectron2's builtin coco_2017_val_panoptic (PQ
# and mIoU from the panoptic PNGs; upstream's coco_2017_val_panoptic_with_sem_seg needs
# prepare_coco_semantic_annos_from_panoptic_annos.py first):
#   python tools/train_net.py --config-file configs/baselines/mask2former_r50_coco.py --eval-only \
#       --trust-pickle train.init_checkpoint=model_final_94dc52.pkl
# (.pkl files are pickles, and unpickling runs code: --trust-pickle only for files you trust.)
import detectron2.data.transforms as T
from detectron2.config import LazyCall as L
from detectron2.data import (
    DatasetMapper,
    build_detection_test_loader,
    build_detection_train_loader,
    get_detection_dataset_dicts,
)
from detectron2.layers import ShapeSpec
from detectron2.modeling.backbone import BasicStem, ResNet
from detectron2.solver import WarmupParamScheduler
from fvcore.common.param_scheduler import MultiStepParamScheduler
from mask2former import COCOPanopticNewBaselineDatasetMapper, MaskFormer
from mask2former.modeling import MaskFormerHead, MSDeformAttnPixelDecoder
from mask2former.modeling.transformer_decoder import MultiScaleMaskedTransformerDecoder
from pe_panoptic.evaluation.build import build_evaluators
from pe_panoptic.baselines.mask2former import build_mask2former_criterion, mask2former_param_groups, panoptic_metadata
import torch

from ..common.train import train

NUM_CLASSES = 133
_res = {"res2": (256, 4), "res3": (512, 8), "res4": (1024, 16), "res5": (2048, 32)}

model = L(MaskFormer)(
    backbone=L(ResNet)(
        stem=L(BasicStem)(in_channels=3, out_channels=64, norm="FrozenBN"),
        stages=L(ResNet.make_default_stages)(depth=50, stride_in_1x1=False, norm="FrozenBN"),
        out_features=["res2", "res3", "res4", "res5"],
        freeze_at=0,
    ),
    sem_seg_head=L(MaskFormerHead)(
        input_shape={k: L(ShapeSpec)(channels=c, stride=s) for k, (c, s) in _res.items()},
        num_classes=NUM_CLASSES,
        pixel_decoder=L(MSDeformAttnPixelDecoder)(
            input_shape={k: L(ShapeSpec)(channels=c, stride=s) for k, (c, s) in _res.items()},
            transformer_dropout=0.0,
            transformer_nheads=8,
            transformer_dim_feedforward=1024,  # upstream's fixed value for the deformable encoder
            transformer_enc_layers=6,
            conv_dim=256,
            mask_dim=256,
            norm="GN",
            transformer_in_features=["res3", "res4", "res5"],
            common_stride=4,
        ),
        loss_weight=1.0,
        ignore_value=255,
        transformer_predictor=L(MultiScaleMaskedTransformerDecoder)(
            in_channels=256,
            mask_classification=True,
            num_classes="${..num_classes}",
            hidden_dim=256,
            num_queries=100,
            nheads=8,
            dim_feedforward=2048,
            dec_layers=9,  # upstream DEC_LAYERS 10 = 9 layers + the learnable queries
            pre_norm=False,
            mask_dim=256,
            enforce_input_project=False,
        ),
        transformer_in_feature="multi_scale_pixel_decoder",
    ),
    criterion=L(build_mask2former_criterion)(
        num_classes="${..sem_seg_head.num_classes}",
        class_weight=2.0,
        mask_weight=5.0,
        dice_weight=5.0,
        no_object_weight=0.1,
        decoder_layers="${..sem_seg_head.transformer_predictor.dec_layers}",
        deep_supervision=True,
        train_num_points=12544,
        oversample_ratio=3.0,
        importance_sample_ratio=0.75,
    ),
    num_queries="${.sem_seg_head.transformer_predictor.num_queries}",
    object_mask_threshold=0.8,
    overlap_threshold=0.8,
    metadata=L(panoptic_metadata)(name="coco_2017_train_panoptic"),
    size_divisibility=32,
    sem_seg_postprocess_before_inference=True,
    pixel_mean=[123.675, 116.280, 103.530],
    pixel_std=[58.395, 57.120, 57.375],
    semantic_on=True,
    instance_on=True,
    panoptic_on=True,
    test_topk_per_image=100,
)

IMAGE_SIZE = 1024
dataloader = dict(
    train=L(build_detection_train_loader)(
        dataset=L(get_detection_dataset_dicts)(names="coco_2017_train_panoptic", filter_empty=True),
        mapper=L(COCOPanopticNewBaselineDatasetMapper)(
            is_train=True,
            tfm_gens=[
                L(T.RandomFlip)(horizontal=True),
                L(T.ResizeScale)(min_scale=0.1, max_scale=2.0, target_height=IMAGE_SIZE, target_width=IMAGE_SIZE),
                L(T.FixedSizeCrop)(crop_size=(IMAGE_SIZE, IMAGE_SIZE)),
            ],
            image_format="RGB",
        ),
        total_batch_size=16,
        num_workers=4,
    ),
    test=L(build_detection_test_loader)(
        dataset=L(get_detection_dataset_dicts)(names="coco_2017_val_panoptic", filter_empty=False),
        mapper=L(DatasetMapper)(
            is_train=False,
            augmentations=[L(T.ResizeShortestEdge)(short_edge_length=800, max_size=1333)],
            image_format="RGB",
        ),
        num_workers=4,
    ),
    evaluator=L(build_evaluators)(dataset_name="coco_2017_val_panoptic", output_dir="${train.output_dir}"),
)

optimizer = L(torch.optim.AdamW)(
    params=L(mask2former_param_groups)(
        base_lr="${..lr}", weight_decay="${..weight_decay}", weight_decay_norm=0.0, weight_decay_embed=0.0,
        backbone_multiplier=0.1, backbone_prefix="backbone",
    ),
    lr=1e-4,
    weight_decay=0.05,
)
MAX_ITER = 368750
lr_multiplier = L(WarmupParamScheduler)(
    scheduler=L(MultiStepParamScheduler)(values=[1.0, 0.1, 0.01], milestones=[327778, 355092], num_updates=MAX_ITER),
    warmup_length=10 / MAX_ITER,
    warmup_factor=1.0,
)

# training starts from the ImageNet R-50.pkl (a pickle: tools/train_net.py needs --trust-pickle)
train.init_checkpoint = "detectron2://ImageNetPretrained/torchvision/R-50.pkl"
train.init_checkpoint_allow_mismatch = ["sem_seg_head", "criterion"]
train.max_iter = MAX_ITER
train.amp = dict(enabled=True, dtype="fp16")
train.clip_grad_norm = 0.01
train.checkpointer = dict(period=5000, max_to_keep=100)
train.eval_period = 5000
train.seed = 0
train.output_dir = "output/baselines/mask2former_r50_coco"
