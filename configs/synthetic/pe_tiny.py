# `make demo`: a small PixelCentroidHead trained on the synthetic dataset on CPU.
#
# The full method, with the paper's settings: PE centroid targets with L = 4, EDS (D = 20 input
# pixels), TV (0.1) and generalized DICE (1.0) losses, semantic + instance losses summed, nearest-grid
# post-processing. The encoder is a DINOv2-architecture ViT (6 blocks x 192 channels) trained FROM
# SCRATCH: no pretrained weights can be downloaded here. Two initialization choices for that:
# pos_embed_init="sincos" and LayerScale init 1.0 (DINOv2's 1e-5 leaves a random ViT an identity
# map for hundreds of steps). What this budget reaches is in the README ("The demo").
from pe_panoptic.engine.recipes import use_resumable_loader

from ..common.data.synthetic import dataloader
from ..common.models.pe_panoptic import model
from ..common.optim import AdamW as optimizer
from ..common.schedule import lr_multiplier
from ..common.train import train

model.backbone.model_name = "vit_small_patch14_dinov2"
model.backbone.model_kwargs = dict(embed_dim=192, depth=6, num_heads=3, init_values=1.0)
model.backbone.out_indices = (2, 3, 4, 5)
model.backbone.img_size = 168
model.backbone.drop_path_rate = 0.0
model.backbone.pos_embed_init = "sincos"
model.decoder.width = 64
model.dataset_name = "synthetic_panoptic_train"
model.postprocess = dict(decoder="nn", grid=(48, 48))

optimizer.lr = 1e-3
optimizer.weight_decay = 0.05
optimizer.params.layer_decay = 1.0  # from scratch: no reason to slow down early blocks
lr_multiplier.warmup_length = 0.05

use_resumable_loader(dataloader)

train.max_iter = 1000
train.eval_period = 0
train.checkpointer = dict(period=300, max_to_keep=2)
train.log_period = 20
train.output_dir = "output/demo"
train.seed = 0
