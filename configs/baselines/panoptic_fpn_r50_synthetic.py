# detectron2 model-zoo baseline: Panoptic FPN R50 (COCO-PanopticSegmentation/panoptic_fpn_R_50_1x.py)
# on the synthetic dataset, through the same tools/train_net.py, the same registered data and the
# same metrics as pe_panoptic (PQ with COCOPanopticEvaluator, mIoU with PanopticSemSegEvaluator).
#
# Changes to the model-zoo config, all forced by the setting (no download, CPU, 168 px images with
# 8-64 px objects):
# * trained from scratch (no ImageNet R-50.pkl): freeze_at=0, and GroupNorm instead of FrozenBN in
#   the ResNet (as detectron2's scratch configs, Misc/scratch_mask_rcnn_R_50_FPN_3x_gn);
# * data: synthetic_panoptic_{train,val}_separated (pe_panoptic.baselines.panoptic_fpn: instance masks from the
#   synthetic instances JSON + "things = 0, stuff = 1..3" semantic maps), native 168 px inputs
#   (scale jitter 0.8-1.25 and flip, like configs/synthetic/pe_tiny.py), anchors 8-128 px instead
#   of 32-512 px, fewer RPN proposals;
# * 4 thing classes, 3 stuff classes + "things"; SGD lr 0.01 for batch 8 (the model zoo's linear
#   scaling of 0.02 at batch 16), warmup then cosine (scale-free, so train.max_iter can change).
import detectron2.data.transforms as T
from detectron2.config import LazyCall as L
from detectron2.data import DatasetMapper, build_detection_test_loader, get_detection_dataset_dicts
from detectron2.model_zoo import get_config
from detectron2.solver import WarmupParamScheduler
from fvcore.common.param_scheduler import CosineParamScheduler
from pe_panoptic.baselines.panoptic_fpn import build_separated_evaluators
from pe_panoptic.data.resumable import build_resumable_train_loader

_zoo = get_config("COCO-PanopticSegmentation/panoptic_fpn_R_50_1x.py")
model = _zoo.model
optimizer = _zoo.optimizer
train = _zoo.train

model.backbone.bottom_up.freeze_at = 0
model.backbone.bottom_up.stem.norm = "GN"
model.backbone.bottom_up.stages.norm = "GN"
model.backbone.norm = "GN"
model.roi_heads.num_classes = 4
model.sem_seg_head.num_classes = 4
model.proposal_generator.anchor_generator.sizes = [[8], [16], [32], [64], [128]]
model.proposal_generator.pre_nms_topk = (1000, 500)
model.proposal_generator.post_nms_topk = (500, 200)
model.roi_heads.batch_size_per_image = 256

INPUT_SIZE = 168
dataloader = dict(
    train=L(build_resumable_train_loader)(
        dataset=L(get_detection_dataset_dicts)(names="synthetic_panoptic_train_separated", filter_empty=False),
        mapper=L(DatasetMapper)(
            is_train=True,
            augmentations=[
                L(T.ResizeScale)(min_scale=0.8, max_scale=1.25, target_height=INPUT_SIZE, target_width=INPUT_SIZE),
                L(T.FixedSizeCrop)(crop_size=(INPUT_SIZE, INPUT_SIZE), pad=False),
                L(T.RandomFlip)(horizontal=True),
            ],
            image_format="BGR",
            use_instance_mask=True,
            instance_mask_format="bitmask",
            recompute_boxes=True,
        ),
        total_batch_size=8,
        num_workers=1,
        seed="${train.seed}",
    ),
    test=L(build_detection_test_loader)(
        dataset=L(get_detection_dataset_dicts)(names="synthetic_panoptic_val_separated", filter_empty=False),
        mapper=L(DatasetMapper)(
            is_train=False,
            augmentations=[L(T.ResizeShortestEdge)(short_edge_length=INPUT_SIZE, max_size=INPUT_SIZE)],
            image_format="BGR",
        ),
        num_workers=1,
    ),
    evaluator=L(build_separated_evaluators)(dataset_name="synthetic_panoptic_val_separated",
                                            output_dir="${train.output_dir}"),
)

optimizer.lr = 0.01
lr_multiplier = L(WarmupParamScheduler)(
    scheduler=L(CosineParamScheduler)(start_value=1.0, end_value=0.01),
    warmup_length=0.05,
    warmup_factor=0.001,
)

train.init_checkpoint = ""
# keys that may differ from train.init_checkpoint, e.g. everything but the ResNet when starting from
# ImageNet weights: ["backbone.fpn", "proposal_generator", "roi_heads", "sem_seg_head"]
train.init_checkpoint_allow_mismatch = []
train.device = "auto"
train.amp = dict(enabled=False, dtype="bf16")
train.max_iter = 600
train.eval_period = 0
train.checkpointer = dict(period=300, max_to_keep=2)
train.log_period = 20
train.seed = 0
train.output_dir = "output/baselines/panoptic_fpn_r50_synthetic"
