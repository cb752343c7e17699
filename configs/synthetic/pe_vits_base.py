# The base recipe of the instance-learning experiments (configs/synthetic/learning_experiments.py,
# README "Instance learning with real weights"): the method fine-tuned from REAL DINOv2 ViT-S/14
# weights on the synthetic dataset, with the CPU-budget choices below; every experiment changes one
# factor from here. The demo recipe (configs/synthetic/pe_vits.py) adds what the experiments showed.
#
# Paper settings: PE centroid targets (L = 4), EDS (D = 20 input pixels, void included), DICE 1.0,
# semantic + instance losses summed, nearest-grid post-processing, AdamW with layer decay, warm-up
# + cosine. The official DINOv2 forward (pos_embed_interp="dinov2", 37x37 grid kept).
# CPU-budget choices and deviations: the first 6 of the 12 pretrained blocks (outputs of blocks
# 2, 4, 6), TV off (it stalls instance learning at this length) and the named switch
# inst_position="offset" (not in the paper).
import os

from pe_panoptic.engine.recipes import use_resumable_loader

from ..common.data.synthetic import dataloader
from ..common.models.pe_panoptic import model
from ..common.optim import AdamW as optimizer
from ..common.schedule import lr_multiplier
from ..common.train import train

WEIGHTS = os.path.join(os.environ.get("PE_PANOPTIC_WEIGHTS") or os.path.join(os.path.dirname(__file__), "../../weights"),
                       "dinov2_vits14_pretrain.pth")

model.backbone.model_name = "vit_small_patch14_dinov2"
model.backbone.weights = os.path.normpath(WEIGHTS)
model.backbone.img_size = 518
model.backbone.out_indices = (1, 3, 5)
model.backbone.drop_path_rate = 0.0
model.backbone.pos_embed_interp = "dinov2"
model.decoder.width = 64
model.decoder.image_skip = 0  # paper; 16: README "Instance learning"
model.backbone.freeze_at = 0  # paper: every block trains
model.dataset_name = "synthetic_panoptic_train"
model.postprocess = dict(decoder="nn", grid=(48, 48))  # the paper's decoding
model.loss = dict(tv_weight=0.0, dice_weight=1.0, offset_weight=0.0)
model.inst_position = "offset"

optimizer.lr = 5e-4
optimizer.weight_decay = 0.05
optimizer.params.layer_decay = 0.75

use_resumable_loader(dataloader)

train.max_iter = 600
train.eval_period = 0
train.checkpointer = dict(period=300, max_to_keep=2)
train.log_period = 20
train.output_dir = "output/vits_base"
train.seed = 0
