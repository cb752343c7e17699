# `make demo`: a small PixelCentroidHead (DINOv2-architecture ViT, 6 blocks x 192 channels, random
# init: no pretrained weights can be downloaded here) trained on the synthetic dataset on CPU.
# Full method: PE (L = 4) targets, EDS (D = 20 input pixels), TV and generalized DICE losses.
from ..common.data.synthetic import dataloader
from ..common.models.pe_panoptic import model
from ..common.optim import AdamW as optimizer
from ..common.schedule import lr_multiplier
from ..common.train import train

model.backbone.model_name = "vit_small_patch14_dinov2"
model.backbone.model_kwargs = dict(embed_dim=192, depth=6, num_heads=3)
model.backbone.out_indices = (2, 3, 4, 5)
model.backbone.img_size = 168
model.backbone.drop_path_rate = 0.0
model.decoder.in_channels = 4 * 192
model.decoder.width = 64
model.dataset_name = "synthetic_panoptic_train"
model.postprocess = dict(decoder="nn", grid=(48, 48))

optimizer.lr = 1e-3
optimizer.weight_decay = 0.05
optimizer.params.layer_decay = 1.0  # from scratch: no reason to slow down early blocks
lr_multiplier.warmup_length = 0.05

train.max_iter = 600
train.eval_period = 0
train.checkpointer = dict(period=300, max_to_keep=2)
train.log_period = 20
train.output_dir = "output/demo"
train.seed = 0
