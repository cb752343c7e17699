# Real-weights learning probe behind tests/test_learning_real_weights.py: does fine-tuning from the
# REAL DINOv2 ViT-S/14 weights (`make weights`) separate instances on UNSEEN images, within a
# test-suite budget? The recipe of pe_vits.py (offset instance head + direct offset loss, EDS,
# DICE, TV off, image skip, vote decoder) on the small variant (synthetic_panoptic_small: 32 train /
# 16 val at 112 px; `python datasets/prepare_synthetic.py --variant small`), with only the first 2
# pretrained blocks (the first frozen), 200 iterations and a 12 x 12 grid. Measured on this CPU:
# PQ_th 12.1, PQ_st 94.1 on the 16 unseen val images, 92 s of training (docs/experiments.md "The learning test").
from .pe_vits import dataloader, lr_multiplier, model, optimizer, train  # noqa: F401

SIZE = 112

model.backbone.out_indices = (0, 1)
model.dataset_name = "synthetic_panoptic_small_train"
model.backbone.freeze_at = 2  # embeddings + block 1 frozen, block 2 trains
model.postprocess = dict(decoder="vote", grid=(12, 12), void_source="semantic")

dataloader.train.dataset.names = "synthetic_panoptic_small_train"
dataloader.train.mapper.panoptic.dataset_name = "synthetic_panoptic_small_train"
dataloader.train.mapper.input_size = SIZE
dataloader.train.mapper.augmentations.size = SIZE
dataloader.test.dataset.names = "synthetic_panoptic_small_val"
dataloader.test.mapper.panoptic.dataset_name = "synthetic_panoptic_small_val"
dataloader.test.mapper.augmentations.size = SIZE
dataloader.evaluator.dataset_name = "synthetic_panoptic_small_val"

train.max_iter = 200
train.checkpointer = dict(period=100000, max_to_keep=1)
train.output_dir = "output/vits_probe"
