# NYUv2 metric depth (paper Sec. 5, Table 2): nyuv2_depth_train / nyuv2_depth_test registered by
# pe_panoptic from $DETECTRON2_DATASETS/nyuv2 (layout and preparation: datasets/README.md).
# Depth-only dicts: the mapper builds `depth` / `depth_valid` targets (metres, valid 0.001-10 m)
# and no panoptic targets. The model needs the depth head (model.depth=True, model.max_depth=10.0;
# tasks containing "depth"; loss depth_loss="silog" for metric depth, paper Eq. 9).
# Evaluation: DepthEvaluator (RMSE, AbsRel, log10, delta1/2/3, ...) inside the Eigen crop.
# Relative-depth pre-training on pseudo-labels (paper stage 2): set
#   dataloader.train.mapper.depth.kind="disparity"
# (labels from $DETECTRON2_DATASETS/nyuv2_depth_train_depth_pseudo/<stem>.npy|.png, else 1/depth
# of the ground truth).
from detectron2.config import LazyCall as L
from detectron2.data import build_detection_test_loader, build_detection_train_loader, get_detection_dataset_dicts
from pe_panoptic.data.mapper import (
    DepthTargets,
    PanopticCentroidDatasetMapper,
    build_test_augmentations,
    build_train_augmentations,
)
from pe_panoptic.evaluation.build import build_evaluators

INPUT_SIZE = 518

dataloader = dict(
    train=L(build_detection_train_loader)(
        dataset=L(get_detection_dataset_dicts)(names="nyuv2_depth_train", filter_empty=False),
        mapper=L(PanopticCentroidDatasetMapper)(
            is_train=True,
            # metric depth: resize to fit INPUT_SIZE without scale jitter (a zoom would change the
            # apparent metric scale), random horizontal flip
            augmentations=L(build_train_augmentations)(size=INPUT_SIZE, min_scale=1.0, max_scale=1.0, flip=True),
            input_size=INPUT_SIZE,
            panoptic=None,
            depth=L(DepthTargets)(kind="metric", dataset_name="nyuv2_depth_train", min_depth=1e-3, max_depth=10.0),
        ),
        total_batch_size=16,
        num_workers=4,
    ),
    test=L(build_detection_test_loader)(
        dataset=L(get_detection_dataset_dicts)(names="nyuv2_depth_test", filter_empty=False),
        mapper=L(PanopticCentroidDatasetMapper)(
            is_train=False,
            augmentations=L(build_test_augmentations)(size=INPUT_SIZE),
            panoptic=None,
        ),
        num_workers=4,
    ),
    evaluator=L(build_evaluators)(dataset_name="nyuv2_depth_test", output_dir="${train.output_dir}"),
)
