# The learning probe (configs/synthetic/pe_vits_probe.py) with the offset instance head of
# configs/synthetic/pe_vits_offset.py (ours, not the paper's): tests/test_learning_real_weights.py
# keeps this switch learning too.
from .pe_vits_probe import dataloader, lr_multiplier, model, optimizer, train  # noqa: F401

model.inst_position = "offset"
model.loss.offset_weight = 1.0
dataloader.train.mapper.panoptic.include_void = True
model.postprocess = dict(decoder="vote", grid=(12, 12), void_source="instance")
optimizer.params.head_lr_multiplier = 1.0
train.output_dir = "output/vits_probe_offset"
