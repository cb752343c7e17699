# ICML stage 2 (Sec. 5.1): all panoptic tasks (semantic + instances), 336 x 336, 200 epochs at
# effective batch 512 (= 46206 iterations), starting from the stage-1 model. Multi-task training:
# both tasks on every batch with summed losses (no dataloader.train.task_probs; the ICML text says
# "multi-tasking setup" without per-batch task sampling, which was paper_v1's scheme).
# Batch: 8 GPUs x 64 images, no accumulation; see vitl_stage1.py for other hardware.
# Void setting: the ICML one (void included), with the void-plateau diagnostic on; the decision and
# its numbers are in the base recipe's header and docs/experiments.md "Why the ICML void setting stalls".
from .vitl_stage1 import dataloader, lr_multiplier, model, optimizer, train
from pe_panoptic.engine.recipes import apply_recipe, make_recipe, set_input_size

NUM_GPUS = 8
BATCH_PER_GPU = 64
INPUT_SIZE = 336

recipe = make_recipe(epochs=200, effective_batch=512, num_gpus=NUM_GPUS, max_batch_per_gpu=BATCH_PER_GPU,
                     dataset="coco_2017_train_panoptic", warmup_epochs=3)
apply_recipe(recipe, train=train, dataloader=dataloader, lr_multiplier=lr_multiplier)
set_input_size(dataloader, INPUT_SIZE)

model.tasks = ("sem", "inst")

train.init_checkpoint = "output/coco/vitl_stage1/model_final.pth"
train.output_dir = "output/coco/vitl_stage2"
train.checkpointer = dict(period=recipe.iters(10), max_to_keep=2)
train.eval_period = recipe.iters(50)
