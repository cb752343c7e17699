# The learning probe (configs/synthetic/pe_vits_probe.py: the paper's head, 2 pretrained blocks) on
# the COCO-scale synthetic variant synthetic_panoptic_large (224 px, things of 1-10 patches;
# `python datasets/prepare_synthetic.py --variant large`), grid 16. Base of configs/synthetic/void_study_large.py.
from .pe_vits_probe import dataloader, lr_multiplier, model, optimizer, train  # noqa: F401

SIZE = 224

model.dataset_name = "synthetic_panoptic_large_train"
model.postprocess = dict(decoder="vote", grid=(16, 16), void_source="semantic")

dataloader.train.dataset.names = "synthetic_panoptic_large_train"
dataloader.train.mapper.panoptic.dataset_name = "synthetic_panoptic_large_train"
dataloader.train.mapper.input_size = SIZE
dataloader.train.mapper.augmentations.size = SIZE
dataloader.test.dataset.names = "synthetic_panoptic_large_val"
dataloader.test.mapper.panoptic.dataset_name = "synthetic_panoptic_large_val"
dataloader.test.mapper.augmentations.size = SIZE
dataloader.evaluator.dataset_name = "synthetic_panoptic_large_val"

train.output_dir = "output/vits_probe_large"
