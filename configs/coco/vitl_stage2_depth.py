# ICML stage 2 with the optional depth task (Sec. 3.4 and 5.1; Appendix A): the stage-2 recipe plus
# a depth head trained on relative depth (disparity pseudo-labels of DepthAnythingV2) with the
# affine-invariant loss (Eq. 6-8); semantic + instance + depth losses summed on every batch.
# Pseudo-labels: $DETECTRON2_DATASETS/coco_2017_train_panoptic_depth_pseudo/<image stem>.npy|.png
# (see configs/common/data/coco_panoptic.py and datasets/README.md).
# The paper also mixes NYUv2 (pseudo-labels) into this stage; that needs batches mixing
# panoptic-only and depth-only samples, so this config trains on COCO alone (NYUv2 metric
# fine-tuning: configs/nyu/vitl_depth_finetune.py).
from .vitl_stage2 import dataloader, lr_multiplier, model, optimizer, train

model.depth = True
model.max_depth = 10.0
model.tasks = ("sem", "inst", "depth")
model.loss = dict(tv_weight=0.1, dice_weight=1.0, depth_weight=1.0, depth_loss="affine_invariant")
dataloader.train.mapper.depth = "disparity"

train.output_dir = "output/coco/vitl_stage2_depth"
