# Data for the built-in synthetic panoptic dataset (python datasets/prepare_synthetic.py).
# The same mapper and evaluators run for COCO (see common/data/coco_panoptic.py).
from detectron2.config import LazyCall as L
from detectron2.data import build_detection_test_loader, build_detection_train_loader, get_detection_dataset_dicts
from pe_panoptic.data.mapper import (
    PanopticCentroidDatasetMapper,
    PanopticTargets,
    build_test_augmentations,
    build_train_augmentations,
)
from pe_panoptic.evaluation.build import build_evaluators

INPUT_SIZE = 168

dataloader = dict(
    train=L(build_detection_train_loader)(
        dataset=L(get_detection_dataset_dicts)(names="synthetic_panoptic_train", filter_empty=False),
        mapper=L(PanopticCentroidDatasetMapper)(
            is_train=True,
            augmentations=L(build_train_augmentations)(size=INPUT_SIZE, min_scale=0.8, max_scale=1.25, flip=True),
            input_size=INPUT_SIZE,
            panoptic=L(PanopticTargets)(dataset_name="synthetic_panoptic_train", eds_D=20.0, use_eds=True, include_void=True),
        ),
        total_batch_size=8,
        num_workers=1,
    ),
    test=L(build_detection_test_loader)(
        dataset=L(get_detection_dataset_dicts)(names="synthetic_panoptic_val", filter_empty=False),
        mapper=L(PanopticCentroidDatasetMapper)(
            is_train=False,
            augmentations=L(build_test_augmentations)(size=INPUT_SIZE),
            panoptic=L(PanopticTargets)(dataset_name="synthetic_panoptic_val"),  # targets only with with_targets=True
        ),
        num_workers=1,
    ),
    evaluator=L(build_evaluators)(dataset_name="synthetic_panoptic_val", output_dir="${train.output_dir}"),
)
