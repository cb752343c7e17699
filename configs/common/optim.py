# AdamW with layer-wise lr decay over the DINOv2 blocks (paper: AdamW, lr 5e-4, layer decay).
import torch

from detectron2.config import LazyCall as L
from pe_panoptic.solver import get_param_groups

AdamW = L(torch.optim.AdamW)(
    params=L(get_param_groups)(
        # model is set by tools/train_net.py
        base_lr="${..lr}",
        weight_decay="${..weight_decay}",
        layer_decay=0.6,
        weight_decay_norm=0.0,
        head_lr_multiplier=1.0,  # paper: one base lr for the decoder and heads
    ),
    lr=5e-4,
    betas=(0.9, 0.999),
    weight_decay=0.05,
)
