# Cityscapes panoptic with detectron2's builtin registrations (cityscapes_fine_panoptic_train /
# _val under $DETECTRON2_DATASETS/cityscapes, prepared with cityscapesScripts, see
# datasets/README.md). Paper Sec. 5.2: 784 x 1568 inputs (crops after scale jitter), test images
# resized to 784 x 1568 (longest side 1568). The dicts have no `isthing`: the mapper takes the
# thing classes from the metadata (dataset_name).
# The model side: model.dataset_name = "cityscapes_fine_panoptic_train" and the 160 x 320 grid of
# possible centroids, model.postprocess = dict(decoder="nn", grid=MODEL_GRID).
# Evaluation: PQ with detectron2's COCOPanopticEvaluator AND cityscapesScripts' official panoptic
# evaluation, semantic mIoU.
from detectron2.config import LazyCall as L
from detectron2.data import build_detection_test_loader, build_detection_train_loader, get_detection_dataset_dicts
from pe_panoptic.data.mapper import (
    PanopticCentroidDatasetMapper,
    PanopticTargets,
    build_test_augmentations,
    build_train_augmentations,
)
from pe_panoptic.evaluation.build import build_evaluators

INPUT_SIZE = (784, 1568)
MODEL_GRID = (160, 320)

dataloader = dict(
    train=L(build_detection_train_loader)(
        dataset=L(get_detection_dataset_dicts)(names="cityscapes_fine_panoptic_train", filter_empty=False),
        mapper=L(PanopticCentroidDatasetMapper)(
            is_train=True,
            augmentations=L(build_train_augmentations)(size=INPUT_SIZE, min_scale=0.5, max_scale=2.0, flip=True),
            input_size=INPUT_SIZE,
            panoptic=L(PanopticTargets)(dataset_name="cityscapes_fine_panoptic_train", eds_D=20.0, use_eds=True, include_void=True),
        ),
        total_batch_size=8,
        num_workers=4,
    ),
    test=L(build_detection_test_loader)(
        dataset=L(get_detection_dataset_dicts)(names="cityscapes_fine_panoptic_val", filter_empty=False),
        mapper=L(PanopticCentroidDatasetMapper)(
            is_train=False,
            augmentations=L(build_test_augmentations)(size=max(INPUT_SIZE)),
            panoptic=L(PanopticTargets)(dataset_name="cityscapes_fine_panoptic_val"),  # targets only with with_targets=True
        ),
        num_workers=4,
    ),
    evaluator=L(build_evaluators)(dataset_name="cityscapes_fine_panoptic_val", output_dir="${train.output_dir}"),
)
