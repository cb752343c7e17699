# Controlled instance-learning experiments (README "Instance learning with real weights
# (measured)": what held the model on the void plateau), run by tools/learning_experiments.py. Every variant is the base config plus the
# overrides listed here, one factor changed at a time from the base recipe (configs/synthetic/pe_vits_base.py:
# real DINOv2 ViT-S/14, first 6 blocks, official forward, EDS, DICE, TV off, offset instance head).
#
#   python tools/learning_experiments.py --only paper_head rotary       # a subset
#   python tools/learning_experiments.py                                # all of them
#   python tools/learning_experiments.py --iters 300                    # shorter schedule for all
#
# Results (val PQ / PQ_th / PQ_st, final instance-code diagnostics, s/iteration) go to
# output/learning_experiments/results.json and a Markdown table on stdout.
BASE = "configs/synthetic/pe_vits_base.py"
ITERS = 600
EVAL_PERIOD = 200
# Post-processing variants scored on each final checkpoint (tools/eval_postprocess.py, instance
# void): {label: overrides}; the table gets a "PQ_th <decoder> <label>" column per decoder.
POSTPROCESS = {"g24": ["model.postprocess.grid=[24,24]"]}
POSTPROCESS_DECODERS = ["nn", "vote"]

EXPERIMENTS = {
    # the recipe of pe_vits.py: the head regresses the offset to the centroid and a magnitude,
    # code = r * PE(u + du, v + dv)
    "offset": [],
    # the head rotates the pixel's own position code by a predicted complex factor per harmonic
    "rotary": ["model.inst_position=rotary"],
    # the paper's instance head (a conv outputs the code), everything else equal
    "paper_head": ["model.inst_position=none"],
    # CoordConv: normalized x, y / their PE concatenated to the decoder input, paper head
    "paper_head+coord_xy": ["model.inst_position=none", "model.decoder.position_input=xy"],
    "paper_head+coord_pe": ["model.inst_position=none", "model.decoder.position_input=pe"],
    # direct L1 loss on the predicted centroid offset (Panoptic-DeepLab's offset loss) added to
    # the paper's losses; and the decoder / heads at 4x the base lr
    "offset+offset_l1": ["model.loss.offset_weight=1.0"],
    "offset+head_lr4": ["optimizer.params.head_lr_multiplier=4.0"],
    # the input image (resized to the output) joins the decoder before its final conv: edges at
    # the output stride for things smaller than a 14 px patch
    "offset+offset_l1+image_skip": ["model.loss.offset_weight=1.0", "model.decoder.image_skip=16"],
    "offset+offset_l1+image_skip+head_lr4": ["model.loss.offset_weight=1.0", "model.decoder.image_skip=16",
                                             "optimizer.params.head_lr_multiplier=4.0"],
    "offset+offset_l1+image_skip+freeze3": ["model.loss.offset_weight=1.0", "model.decoder.image_skip=16",
                                            "model.backbone.freeze_at=3"],
    # CPU budget: no backward through the embeddings and the first 2 blocks
    "offset+offset_l1+freeze3": ["model.loss.offset_weight=1.0", "model.backbone.freeze_at=3"],
    # losses
    "offset+tv0.1": ["model.loss.tv_weight=0.1"],
    "offset-dice": ["model.loss.dice_weight=0.0"],
    "offset-eds": ["dataloader.train.mapper.panoptic.use_eds=False"],
    "offset+L2": ["model.encoding.num_harmonics=2"],
    # encoder: the full 12 pretrained blocks (paper's out_indices for ViT-S), frozen
    "offset+12blocks": ["model.backbone.out_indices=[2,5,8,11]"],
    "paper_head+12blocks": ["model.inst_position=none", "model.backbone.out_indices=[2,5,8,11]"],
}
