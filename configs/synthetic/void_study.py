# Why the paper's head stalls in the ICML void setting, and what lifts it (issue: "find out why
# the ICML void setting stalls"). Controlled experiments, run by
#   python tools/learning_experiments.py --spec configs/synthetic/void_study.py --output output/void_study
# Every variant is the learning probe (configs/synthetic/pe_vits_probe.py: the paper's head on real
# DINOv2 ViT-S/14 weights, 2 blocks, 112 px, the small synthetic variant) for ITERS iterations, with
# things read from the SEMANTIC head (void_source="semantic") in every variant, so that PQ_th measures
# how well the instance code separates things, not where the code norm puts void. One factor
# changes per variant. Results and the reading: docs/experiments.md ("Why the ICML void setting stalls").
# The same on the COCO-scale variant (things of 1-10 patches): configs/synthetic/void_study_large.py.
BASE = "configs/synthetic/pe_vits_probe.py"
ITERS = 300
EVAL_PERIOD = 100
POSTPROCESS = {}

SEM = ["+model.postprocess.void_source=semantic"]
VOID = ["dataloader.train.mapper.panoptic.include_void=True"]  # the ICML setting: zero code on void
NO_VOID = ["dataloader.train.mapper.panoptic.include_void=False"]  # paper_v1 Table 2 "no void"

EXPERIMENTS = {
    "icml_void": VOID + SEM,
    "no_void": NO_VOID + SEM,
    # the void weight (1 = ICML, 0 = no void): EDS's weight on void pixels scaled down
    "void_w0.3": VOID + SEM + ["dataloader.train.mapper.panoptic.void_weight=0.3"],
    "void_w0.1": VOID + SEM + ["dataloader.train.mapper.panoptic.void_weight=0.1"],
    # the squared norm of the follow-up work, void included
    "squared_void": VOID + SEM + ["model.encoding.norm=squared"],
    # a longer schedule of the ICML setting (3x)
    "icml_void_x3": VOID + SEM + ["train.max_iter=900", "train.eval_period=300"],
    # no-void warm-up (= no_void's weights), then the ICML setting for ITERS more
    "no_void_then_void": {"overrides": VOID + SEM, "init_from": "no_void"},
    # the paper's protocol: stage 1 instance-only (ICML void), then both tasks from its weights
    "stage1_inst_only": VOID + SEM + ["model.tasks=[inst]"],
    "stage1_then_both": {"overrides": VOID + SEM, "init_from": "stage1_inst_only"},
    # the paper's Table 3/4 comparators at equal settings (ICML void): u/v bins + CE, RGB regression
    "bins_ce_void": VOID + SEM + ["model.encoding.name=bins"],
    "rgb_void": VOID + SEM + ["model.encoding.name=rgb"],
}

# added after the first results (the ICML setting learned on this probe): is it the head lr?
# and what do things from the code norm (the paper's decoding, void_source="instance") score?
EXPERIMENTS.update({
    "icml_void_hlr1": VOID + SEM + ["optimizer.params.head_lr_multiplier=1.0"],
    "no_void_hlr1": NO_VOID + SEM + ["optimizer.params.head_lr_multiplier=1.0"],
    "icml_void_instance_void": VOID + ["+model.postprocess.void_source=instance"],
})
