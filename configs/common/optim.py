# AdamW with layer-wise lr decay over the DINOv2 blocks. Paper (both versions): AdamW, lr 5e-4,
# "layer decay to suppress the learning rate for the earlier layers", without a value.
# Provenance of the values the paper does not give (pe_panoptic/engine/recipes.py, README "Fidelity"):
#   layer_decay 0.6: from the same group's follow-up work, NOT from the paper;
#   weight_decay 0.05: our choice (neither paper states one).
import torch

from detectron2.config import LazyCall as L
from pe_panoptic.engine.recipes import LAYER_DECAY, WEIGHT_DECAY
from pe_panoptic.engine.solver import get_param_groups

AdamW = L(torch.optim.AdamW)(
    params=L(get_param_groups)(
        # model is set by tools/train_net.py
        base_lr="${..lr}",
        weight_decay="${..weight_decay}",
        layer_decay=LAYER_DECAY,  # 0.6, follow-up work (not the paper)
        weight_decay_norm=0.0,
        head_lr_multiplier=1.0,  # paper: one base lr for the decoder and heads
    ),
    lr=5e-4,  # paper: "learning rate of 5 x 10^-4"
    betas=(0.9, 0.999),
    weight_decay=WEIGHT_DECAY,  # 0.05, ours
)
