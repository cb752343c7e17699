# Experiments behind the demo recipe's move to the paper's instance head, run by
#   python tools/learning_experiments.py --spec configs/synthetic/paper_head_experiments.py [--only NAME ...]
# BASE is the demo recipe itself (configs/synthetic/pe_vits.py: the paper's head, paper_v1's no-void
# switch, the semantic void source, head lr 4x, 600 iterations); each variant moves one factor back.
# Results: docs/experiments.md ("The paper's head in the demo"). Measured so far: "demo" (PQ 72.3 /
# PQ_th 54.4); the 1x-head-lr and ICML-void rows of that table come from 1000-iteration runs of the
# previous round (`--iters 1000`).
BASE = "configs/synthetic/pe_vits.py"
ITERS = 600
EVAL_PERIOD = 200
POSTPROCESS = {}

EXPERIMENTS = {
    "demo": [],
    # one lr for everything (the paper)
    "head_lr1": ["optimizer.params.head_lr_multiplier=1.0"],
    # the ICML setting: zero code on void pixels, things from the code norm
    "icml_void": ["dataloader.train.mapper.panoptic.include_void=True", "model.postprocess.void_source=instance"],
    # the ICML setting, things from the semantic head (isolates the code's separation)
    "icml_void_sem": ["dataloader.train.mapper.panoptic.include_void=True"],
    "lr1e-3": ["optimizer.lr=1e-3"],
    "freeze4": ["model.backbone.freeze_at=4"],
}
