# The void study (configs/synthetic/void_study.py) on the COCO-scale synthetic variant
# synthetic_panoptic_large (things of 14-140 px = 1-10 ViT patches, as most COCO things at 1008 px;
# most things of the default variant are under one patch): does the stall depend on thing size?
#   python tools/learning_experiments.py --spec configs/synthetic/void_study_large.py --output output/void_study_large
# Base: configs/synthetic/pe_vits_probe_large.py (the probe at 224 px on that variant).
BASE = "configs/synthetic/pe_vits_probe_large.py"
ITERS = 200
EVAL_PERIOD = 100
POSTPROCESS = {}

SEM = ["+model.postprocess.void_source=semantic"]
VOID = ["dataloader.train.mapper.panoptic.include_void=True"]
NO_VOID = ["dataloader.train.mapper.panoptic.include_void=False"]

EXPERIMENTS = {
    "icml_void": VOID + SEM,
    "no_void": NO_VOID + SEM,
    "squared_void": VOID + SEM + ["model.encoding.norm=squared"],
}
