# Experiments behind the demo recipe's move to the paper's instance head (issue 18), run by
# tools/learning_experiments.py --spec configs/synthetic/paper_head_experiments.py. Every variant is
# the demo network (configs/synthetic/pe_vits.py: real DINOv2 ViT-S/14, first 6 blocks, freeze_at=3,
# image skip 16, TV off, vote on a 16 grid) with the PAPER's head: a conv outputs the code, Eq. 4
# acts on it, no offset parametrization and no direct offset loss. The variants change the
# schedule, the lr and the void handling. Results: docs/experiments.md ("The paper's head").
BASE = "configs/synthetic/pe_vits.py"
ITERS = 600
EVAL_PERIOD = 200
POSTPROCESS = {}

PAPER_HEAD = ["model.inst_position=none", "model.loss.offset_weight=0.0"]
# paper_v1 Table 2 "no void": void pixels carry no instance loss; things then come from the
# semantic head's void (thing classes) rather than the instance code's norm
NO_VOID = ["dataloader.train.mapper.panoptic.include_void=False", "+model.postprocess.void_source=semantic"]

EXPERIMENTS = {
    "paper_void": PAPER_HEAD,
    "paper_novoid": PAPER_HEAD + NO_VOID,
    "paper_novoid_hlr4": PAPER_HEAD + NO_VOID + ["optimizer.params.head_lr_multiplier=4.0"],
    "paper_novoid_lr1e-3": PAPER_HEAD + NO_VOID + ["optimizer.lr=1e-3"],
    "paper_novoid_hlr4_freeze4": PAPER_HEAD + NO_VOID + ["optimizer.params.head_lr_multiplier=4.0",
                                                         "model.backbone.freeze_at=4"],
}
