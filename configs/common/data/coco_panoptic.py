# COCO panoptic with detectron2's builtin registrations and metadata (133 contiguous classes):
# coco_2017_train_panoptic / coco_2017_val_panoptic under $DETECTRON2_DATASETS/coco (see
# datasets/README.md). Square inputs that are multiples of 14 (paper: 280, 336, 420, 518, 616,
# 1008); scale jitter + random crop (aggressive early: min_scale 0.1; light in the last stage,
# e.g. `dataloader.train.mapper.augmentations.min_scale=0.8`) and horizontal flip.
# Test: longest side resized to INPUT_SIZE, padded to a multiple of 14; the model maps its
# outputs back to the original image size. Evaluation: PQ (all/things/stuff, SQ, RQ) + mIoU.
#
# Relative-depth pseudo-labels (paper stage 2, DepthAnythingV2): in a config set
#   dataloader.train.mapper.depth = L(DepthTargets)(kind="disparity", dataset_name="coco_2017_train_panoptic")
# (pe_panoptic.data.depth_builder.DepthTargets; see configs/coco/vitl_stage2_depth.py)
# (labels read from $DETECTRON2_DATASETS/coco_2017_train_panoptic_depth_pseudo/<stem>.npy|.png).
from detectron2.config import LazyCall as L
from detectron2.data import build_detection_test_loader, build_detection_train_loader, get_detection_dataset_dicts
from pe_panoptic.data.mapper import (
    PanopticCentroidDatasetMapper,
    PanopticTargets,
    build_test_augmentations,
    build_train_augmentations,
)
from pe_panoptic.evaluation.build import build_evaluators

INPUT_SIZE = 336

dataloader = dict(
    train=L(build_detection_train_loader)(
        dataset=L(get_detection_dataset_dicts)(names="coco_2017_train_panoptic", filter_empty=False),
        mapper=L(PanopticCentroidDatasetMapper)(
            is_train=True,
            augmentations=L(build_train_augmentations)(size=INPUT_SIZE, min_scale=0.1, max_scale=2.0, flip=True),
            input_size=INPUT_SIZE,
            panoptic=L(PanopticTargets)(dataset_name="coco_2017_train_panoptic", eds_D=20.0, use_eds=True, include_void=True),
            depth=None,
            skip_invalid=False,
        ),
        total_batch_size=16,
        num_workers=4,
    ),
    test=L(build_detection_test_loader)(
        dataset=L(get_detection_dataset_dicts)(names="coco_2017_val_panoptic", filter_empty=False),
        mapper=L(PanopticCentroidDatasetMapper)(
            is_train=False,
            augmentations=L(build_test_augmentations)(size=INPUT_SIZE),
            panoptic=L(PanopticTargets)(dataset_name="coco_2017_val_panoptic"),  # targets only with with_targets=True
        ),
        num_workers=4,
    ),
    evaluator=L(build_evaluators)(dataset_name="coco_2017_val_panoptic", output_dir="${train.output_dir}"),
)
