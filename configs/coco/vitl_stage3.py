# ICML stage 3 (Sec. 5.1): the final fine-tuning with large images: 1008 x 1008, 50 epochs at
# effective batch 16 (= 369647 iterations), 1 warmup epoch, light scale jitter ("less or no cropping"), starting
# from the stage-2 model. ViT-L at 1008 px (5184 tokens) needs bf16 autocast, SDPA attention and
# gradient checkpointing (per block) to train with >= 1 image per 80 GB GPU; torch.compile is
# optional (train.compile=True).
#
#   python tools/train_net.py --config-file configs/coco/vitl_stage3.py --num-gpus 8 \
#       model.backbone.weights=''   # (weights come from train.init_checkpoint)
#
# Batch: 8 GPUs x 2 images, no accumulation; on 4 GPUs: dataloader.train.total_batch_size=8
# (accumulate_steps becomes 2); on 1 GPU with 1 image: dataloader.train.total_batch_size=1.
# Void setting: the ICML one (void included), with the void-plateau diagnostic on; the decision and
# its numbers are in the base recipe's header and docs/experiments.md "Why the ICML void setting stalls".
from .vitl_stage2 import dataloader, lr_multiplier, model, optimizer, train
from pe_panoptic.engine.recipes import apply_recipe, make_recipe, set_input_size

NUM_GPUS = 8
BATCH_PER_GPU = 2
INPUT_SIZE = 1008

recipe = make_recipe(epochs=50, effective_batch=16, num_gpus=NUM_GPUS, max_batch_per_gpu=BATCH_PER_GPU,
                     dataset="coco_2017_train_panoptic", warmup_epochs=1)
apply_recipe(recipe, train=train, dataloader=dataloader, lr_multiplier=lr_multiplier)
set_input_size(dataloader, INPUT_SIZE)
dataloader.train.mapper.augmentations.min_scale = 0.8
dataloader.train.mapper.augmentations.max_scale = 1.25
dataloader.train.num_workers = 6

model.backbone.grad_checkpointing = True

train.init_checkpoint = "output/coco/vitl_stage2/model_final.pth"
train.output_dir = "output/coco/vitl_stage3"
train.checkpointer = dict(period=recipe.iters(2), max_to_keep=2)
train.eval_period = recipe.iters(10)
