# ICML stage 2 with the optional depth task (Sec. 3.4 and 5.1; Appendix A): the stage-2 recipe plus
# a depth head trained on relative depth (disparity pseudo-labels of DepthAnythingV2) with the
# affine-invariant loss (Eq. 6-8), on "the MS-COCO and NYUv2 datasets with pseudo labels": the
# training set is COCO + the NYUv2 training images (concatenated; NYUv2 images are depth-only:
# mapper panoptic.optional=True, and the model fills their panoptic targets with ignore / zero weight).
# Semantic + instance + depth losses summed on every batch. 200 epochs of the combined set
# (118287 + 795 images) at effective batch 512 = 46517 iterations.
# Pseudo-labels: $DETECTRON2_DATASETS/<dataset>_depth_pseudo/<image stem>.npy|.png for
# coco_2017_train_panoptic and nyuv2_depth_train (NYUv2 falls back to 1 / ground-truth depth;
# see configs/common/data/coco_panoptic.py, nyu_depth.py and datasets/README.md).
# Void setting: the ICML one (void included), with the void-plateau diagnostic on; the decision and
# its numbers are in the base recipe's header and docs/experiments.md "Why the ICML void setting stalls".
from detectron2.config import LazyCall as L

from .vitl_stage2 import dataloader, lr_multiplier, model, optimizer, train
from pe_panoptic.data.depth_builder import DepthTargets
from pe_panoptic.data.depth_labels import default_pseudo_depth_root
from pe_panoptic.engine.recipes import DATASET_SIZES, apply_recipe, make_recipe

NUM_GPUS = 8
BATCH_PER_GPU = 64
TRAIN_SETS = ("coco_2017_train_panoptic", "nyuv2_depth_train")

recipe = make_recipe(epochs=200, effective_batch=512, num_gpus=NUM_GPUS, max_batch_per_gpu=BATCH_PER_GPU,
                     dataset_size=sum(DATASET_SIZES[n] for n in TRAIN_SETS), warmup_epochs=3)
apply_recipe(recipe, train=train, dataloader=dataloader, lr_multiplier=lr_multiplier)

dataloader.train.dataset.names = TRAIN_SETS
dataloader.train.mapper.panoptic.optional = True  # NYUv2 dicts have no panoptic PNG
dataloader.train.mapper.depth = L(DepthTargets)(kind="disparity", root=[default_pseudo_depth_root(n) for n in TRAIN_SETS])

model.depth = True
model.max_depth = 10.0
model.tasks = ("sem", "inst", "depth")
model.loss = dict(tv_weight=0.1, dice_weight=1.0, depth_weight=1.0, depth_loss="affine_invariant",
                  normalize="batch")

train.checkpointer = dict(period=recipe.iters(10), max_to_keep=2)
train.eval_period = recipe.iters(50)
train.output_dir = "output/coco/vitl_stage2_depth"
# starts from stage 1 (train.init_checkpoint of vitl_stage2.py), which has no depth head
train.init_checkpoint_allow_mismatch = ["heads.depth."]
