# NYUv2 metric-depth fine-tuning (ICML Sec. 3.4, Appendix A, Table 2): the ViT-L model of
# configs/coco/vitl_stage2_depth.py (relative depth on pseudo-labels) fine-tuned on the metric
# ground truth of NYUv2 with the scale-invariant log loss (Eq. 9); depth = 10 m x sigmoid(.).
# Only the depth task is trained (model.tasks=("depth",)); the panoptic heads are kept (COCO
# classes) so that the checkpoint loads completely. Evaluation: DepthEvaluator (Eigen crop).
# Not stated in the paper (our choices): 518 x 518 inputs (the NYUv2 data config's size for
# 640 x 480 frames), 50 epochs of the 795 labeled training images at effective batch 16
# (= 2485 iterations), 1 warmup epoch. nyuv2_depth_train is whichever training list was prepared:
# the 795 labeled images (datasets/prepare_nyuv2.py --mat) or the raw dump's ~47K frames
# (tools/prepare_nyuv2_raw.py); the iteration count above assumes the 795.
from ..coco.vitl_stage2_depth import lr_multiplier, model, optimizer, train
from ..common.data.nyu_depth import dataloader
from pe_panoptic.engine.recipes import apply_recipe, make_recipe, use_resumable_loader

NUM_GPUS = 8
BATCH_PER_GPU = 2

recipe = make_recipe(epochs=50, effective_batch=16, num_gpus=NUM_GPUS, max_batch_per_gpu=BATCH_PER_GPU,
                     dataset="nyuv2_depth_train", warmup_epochs=1)
apply_recipe(recipe, train=train, dataloader=dataloader, lr_multiplier=lr_multiplier)
use_resumable_loader(dataloader)

model.depth = True
model.max_depth = 10.0
model.tasks = ("depth",)
model.loss = dict(tv_weight=0.1, dice_weight=1.0, depth_weight=1.0, depth_loss="silog")

train.init_checkpoint = "output/coco/vitl_stage2_depth/model_final.pth"
train.init_checkpoint_allow_mismatch = []  # same architecture as stage 2 with depth: every key must match
train.output_dir = "output/nyu/vitl_depth_finetune"
train.checkpointer = dict(period=recipe.iters(10), max_to_keep=2)
train.eval_period = recipe.iters(10)
