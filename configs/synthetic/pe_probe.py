# From-scratch learning probe: does a randomly initialized model learn to separate instances, and
# does that generalize? A small PixelCentroidHead (ViT 4 blocks x 96 channels, 112 px) trained on
# the 32 images of synthetic_panoptic_small_train, without augmentation, evaluated on its 16
# unseen val images; evaluate the training images too with
#   python tools/eval_postprocess.py --config-file configs/synthetic/pe_probe.py \
#       --checkpoint output/probe/model_final.pth \
#       dataloader.test.dataset.names=synthetic_panoptic_small_train \
#       dataloader.evaluator.dataset_name=synthetic_panoptic_small_train
# Generate the data first: python datasets/prepare_synthetic.py --variant small
#
# Method as in pe_tiny.py (PE L = 4, EDS, DICE, nearest-grid decoding) except the TV loss, which
# is off: at 0.1 it stalls early from-scratch learning (README "The demo"). What it measures is in
# docs/experiments.md ("What a from-scratch model learns about instances").
from pe_panoptic.engine.recipes import use_resumable_loader

from ..common.data.synthetic import dataloader
from ..common.models.pe_panoptic import model
from ..common.optim import AdamW as optimizer
from ..common.schedule import lr_multiplier
from ..common.train import train

SIZE = 112

model.backbone.model_name = "vit_small_patch14_dinov2"
model.backbone.model_kwargs = dict(embed_dim=96, depth=4, num_heads=3, init_values=1.0)
model.backbone.out_indices = (1, 2, 3)
model.backbone.img_size = SIZE
model.backbone.drop_path_rate = 0.0
model.backbone.pos_embed_init = "sincos"
model.decoder.width = 32
model.dataset_name = "synthetic_panoptic_small_train"
model.loss = dict(tv_weight=0.0, dice_weight=1.0)
model.postprocess = dict(decoder="nn", grid=(32, 32))

dataloader.train.dataset.names = "synthetic_panoptic_small_train"
dataloader.train.mapper.panoptic.dataset_name = "synthetic_panoptic_small_train"
dataloader.train.mapper.input_size = SIZE
# no augmentation: the probe separates memorizing the training images from generalizing
dataloader.train.mapper.augmentations.size = SIZE
dataloader.train.mapper.augmentations.min_scale = 1.0
dataloader.train.mapper.augmentations.max_scale = 1.0
dataloader.train.mapper.augmentations.flip = False
dataloader.train.total_batch_size = 8
dataloader.test.dataset.names = "synthetic_panoptic_small_val"
dataloader.test.mapper.panoptic.dataset_name = "${...dataset.names}"
dataloader.test.mapper.augmentations.size = SIZE
dataloader.evaluator.dataset_name = "synthetic_panoptic_small_val"

optimizer.lr = 1e-3
optimizer.weight_decay = 0.0
optimizer.params.layer_decay = 1.0
lr_multiplier.warmup_length = 0.05
lr_multiplier.min_lr = 0.0

use_resumable_loader(dataloader)

train.max_iter = 5000
train.eval_period = 0
train.checkpointer = dict(period=1000, max_to_keep=2)
train.log_period = 50
train.output_dir = "output/probe"
train.seed = 0
