# Linear warmup then cosine decay to min_lr. Paper: "linear warmup for 3 epochs, followed by cosine
# decreasing schedule" (paper_v1), "decayed through a cosine schedule after a linear warm up"
# (ICML); neither gives the final lr. min_lr 1e-6 comes from the same group's follow-up work, NOT
# from the paper (pe_panoptic/engine/recipes.py MIN_LR, README "Fidelity").
# warmup_length is a fraction of training: paper_v1 warms up 3 of 200 epochs.
from detectron2.config import LazyCall as L
from pe_panoptic.engine.recipes import MIN_LR
from pe_panoptic.engine.solver import warmup_cosine_multiplier

lr_multiplier = L(warmup_cosine_multiplier)(
    warmup_length=3 / 200,
    base_lr="${optimizer.lr}",
    min_lr=MIN_LR,  # 1e-6, follow-up work (not the paper)
)
