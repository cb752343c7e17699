# ICML stage 3 WITH depth (Table 1 "Ours w/ depth", ViT-L, 54.5 PQ; Table 2: the same model on
# NYUv2): the final fine-tuning with large images (Sec. 5.1: 1008 x 1008, 50 epochs at effective
# batch 16, light or no cropping) on COCO panoptic (semantic + instance) plus NYUv2 metric depth
# (Sec. 3.4, Appendix A: stage 3 fine-tunes on the metric ground truth with the scale-invariant
# log loss, Eq. 9; depth = 10 m x sigmoid). Starts from stage 2 with depth
# (configs/coco/vitl_stage2_depth.py), which already has the depth head.
#
# Data: pe_panoptic.data.mixed.MixedTrainLoader, ONE dataset per effective batch, drawn from
# (train.seed, step): a COCO batch trains the semantic + instance tasks, a NYUv2 batch the depth
# task (model.tasks=("sem", "inst", "depth"); the batch's "tasks" tags select them). NYUv2 is the
# paper's ~47K-frame training split of the raw dump (Sec. 5: "a 47K split"), prepared with
# tools/prepare_nyuv2_raw.py into nyuv2_depth_train (README: "NYUv2 raw preparation").
# Our choices where the paper is silent:
#   * proportions: weights=None = proportional to the dataset sizes (118287 : ~47K, p(NYUv2) ~ 0.28),
#     i.e. every image about equally often, as when sampling from the concatenation (what
#     vitl_stage2_depth.py does for its pseudo-labels);
#   * schedule: 50 epochs of the combined set (118287 + 47000 images) at batch 16 = 516,522
#     iterations, so that COCO still gets ~50 epochs (vitl_stage3.py: 369,647 iterations);
#   * NYUv2 inputs: the stage's 1008 px (the 640 x 480 frames are resized to 1008 x 756, no
#     scale jitter: a zoom would change the apparent metric scale), horizontal flip;
#   * depth loss weight 1 (as the other task weights).
#
#   python tools/train_net.py --config-file configs/coco/vitl_stage3_depth.py --num-gpus 8
#
# Depth evaluation of the trained model (Table 2; Eigen crop, 0.001-10 m):
#   python tools/train_net.py --config-file configs/coco/vitl_stage3_depth.py --eval-only \
#       train.init_checkpoint=output/coco/vitl_stage3_depth/model_final.pth \
#       dataloader.test.dataset.names=nyuv2_depth_test dataloader.test.mapper.panoptic=None \
#       dataloader.evaluator.dataset_name=nyuv2_depth_test
# Void setting: the ICML one (void included), with the void-plateau diagnostic on; the decision and
# its numbers are in the base recipe's header and docs/experiments.md "Why the ICML void setting stalls".
from detectron2.config import LazyCall as L

from .vitl_stage3 import INPUT_SIZE, dataloader, lr_multiplier, model, optimizer, train
from pe_panoptic.data.depth_labels import DEFAULT_MAX_DEPTH, DEFAULT_MIN_DEPTH
from pe_panoptic.data.mapper import DepthTargets, PanopticCentroidDatasetMapper, build_train_augmentations
from pe_panoptic.data.mixed import build_mixed_train_loader, dataset_dicts_per_name
from pe_panoptic.engine.recipes import DATASET_SIZES, apply_recipe, make_recipe

NUM_GPUS = 8
BATCH_PER_GPU = 2
COCO_TRAIN = "coco_2017_train_panoptic"
NYU_TRAIN = "nyuv2_depth_train"
#: the paper's NYUv2 training split ("a 47K split"); only the schedule uses it, the loader's
#: proportions come from the prepared dataset's actual size
NYU_TRAIN_FRAMES = 47000

recipe = make_recipe(epochs=50, effective_batch=16, num_gpus=NUM_GPUS, max_batch_per_gpu=BATCH_PER_GPU,
                     dataset_size=DATASET_SIZES[COCO_TRAIN] + NYU_TRAIN_FRAMES, warmup_epochs=1)

coco = dataloader.train  # vitl_stage3.py's COCO loader: its mapper (1008 px, scale 0.8-1.25)
dataloader.train = L(build_mixed_train_loader)(
    datasets=L(dataset_dicts_per_name)(names=[COCO_TRAIN, NYU_TRAIN]),
    mappers=[
        coco.mapper,
        L(PanopticCentroidDatasetMapper)(
            is_train=True,
            augmentations=L(build_train_augmentations)(size=INPUT_SIZE, min_scale=1.0, max_scale=1.0, flip=True),
            input_size=INPUT_SIZE,
            output_stride=coco.mapper.output_stride,
            panoptic=None,
            depth=L(DepthTargets)(kind="metric", dataset_name=NYU_TRAIN, min_depth=DEFAULT_MIN_DEPTH,
                                  max_depth=DEFAULT_MAX_DEPTH),
        ),
    ],
    names=[COCO_TRAIN, NYU_TRAIN],
    tasks=[("sem", "inst"), ("depth",)],
    weights=None,  # proportional to the dataset sizes (see above)
    total_batch_size=16,
    effective_batch_size="${train.effective_batch_size}",  # one dataset per optimizer step
    num_workers=6,
    seed="${train.seed}",
)
apply_recipe(recipe, train=train, dataloader=dataloader, lr_multiplier=lr_multiplier)

model.depth = True
model.max_depth = DEFAULT_MAX_DEPTH
model.tasks = ("sem", "inst", "depth")
model.loss = dict(tv_weight=0.1, dice_weight=1.0, depth_weight=1.0, depth_loss="silog")

train.reference = dict(table="ICML Table 1", row="Ours w/ depth, ViT-L", pq=54.5)
train.init_checkpoint = "output/coco/vitl_stage2_depth/model_final.pth"
train.init_checkpoint_allow_mismatch = []  # same architecture as stage 2 with depth: every key must match
train.output_dir = "output/coco/vitl_stage3_depth"
train.checkpointer = dict(period=recipe.iters(2), max_to_keep=2)
train.eval_period = recipe.iters(10)
