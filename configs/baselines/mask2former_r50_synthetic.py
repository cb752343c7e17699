# Mask2Former R50 (upstream's maskformer2_R50_bs16_50ep, configs/baselines/mask2former_r50_coco.py)
# on the synthetic dataset, through the same tools/train_net.py, registered data and evaluators as
# pe_panoptic (PQ with COCOPanopticEvaluator, mIoU with PanopticSemSegEvaluator).
#
# Changes to the COCO recipe, all forced by the setting (no download, CPU, 168 px images with
# 8-64 px objects and at most a dozen segments), as in configs/baselines/panoptic_fpn_r50_synthetic.py:
# * trained from scratch (no ImageNet R-50.pkl): GroupNorm instead of FrozenBN in the ResNet, and
#   the backbone at the full learning rate (upstream: x 0.1 for a pretrained backbone);
# * 7 classes (4 things, 3 stuff); 50 queries instead of 100 (documented reduction: a synthetic
#   image has far fewer segments than 50); everything else of the head is upstream's (6 deformable
#   encoder layers, 9 decoder layers, losses, 12544 points, thresholds 0.8);
# * data: native 168 px inputs (scale jitter 0.8-1.25, 168 crop, flip; upstream: LSJ 0.1-2.0 at
#   1024), batch 8, test at 168 px; warmup then cosine (scale-free, so train.max_iter can change);
#   no AMP (CPU).
import detectron2.data.transforms as T
from detectron2.config import LazyCall as L
from detectron2.data import DatasetMapper, build_detection_test_loader, build_detection_train_loader, get_detection_dataset_dicts
from detectron2.solver import WarmupParamScheduler
from fvcore.common.param_scheduler import CosineParamScheduler
from mask2former import COCOPanopticNewBaselineDatasetMapper
from pe_panoptic.evaluation.build import build_evaluators
from pe_panoptic.engine.recipes import use_resumable_loader

from .mask2former_r50_coco import model, optimizer, train

model.backbone.stem.norm = "GN"
model.backbone.stages.norm = "GN"
model.sem_seg_head.num_classes = 7
model.sem_seg_head.transformer_predictor.num_queries = 50
model.metadata.name = "synthetic_panoptic_train"
model.instance_on = False  # our evaluators use panoptic_seg and sem_seg only

INPUT_SIZE = 168
dataloader = dict(
    train=L(build_detection_train_loader)(
        dataset=L(get_detection_dataset_dicts)(names="synthetic_panoptic_train", filter_empty=False),
        mapper=L(COCOPanopticNewBaselineDatasetMapper)(
            is_train=True,
            tfm_gens=[
                L(T.RandomFlip)(horizontal=True),
                L(T.ResizeScale)(min_scale=0.8, max_scale=1.25, target_height=INPUT_SIZE, target_width=INPUT_SIZE),
                L(T.FixedSizeCrop)(crop_size=(INPUT_SIZE, INPUT_SIZE)),
            ],
            image_format="RGB",
        ),
        total_batch_size=8,
        num_workers=1,
    ),
    test=L(build_detection_test_loader)(
        dataset=L(get_detection_dataset_dicts)(names="synthetic_panoptic_val", filter_empty=False),
        mapper=L(DatasetMapper)(
            is_train=False,
            augmentations=[L(T.ResizeShortestEdge)(short_edge_length=INPUT_SIZE, max_size=INPUT_SIZE)],
            image_format="RGB",
        ),
        num_workers=1,
    ),
    evaluator=L(build_evaluators)(dataset_name="synthetic_panoptic_val", output_dir="${train.output_dir}"),
)
use_resumable_loader(dataloader)

optimizer.params.backbone_multiplier = 1.0
lr_multiplier = L(WarmupParamScheduler)(
    scheduler=L(CosineParamScheduler)(start_value=1.0, end_value=0.01),
    warmup_length=0.05,
    warmup_factor=0.001,
)

train.init_checkpoint = ""
train.init_checkpoint_allow_mismatch = []
train.amp = dict(enabled=False, dtype="bf16")
train.max_iter = 600
train.eval_period = 0
train.checkpointer = dict(period=300, max_to_keep=2)
train.log_period = 20
train.output_dir = "output/baselines/mask2former_r50_synthetic"
