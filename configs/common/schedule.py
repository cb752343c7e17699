# Linear warmup then cosine decay to min_lr (paper: cosine after linear warmup; min lr 1e-6).
# warmup_length is a fraction of training: paper_v1 warms up 3 of 200 epochs.
from detectron2.config import LazyCall as L
from pe_panoptic.solver import warmup_cosine_multiplier

lr_multiplier = L(warmup_cosine_multiplier)(
    warmup_length=3 / 200,
    base_lr="${optimizer.lr}",
    min_lr=1e-6,
)
