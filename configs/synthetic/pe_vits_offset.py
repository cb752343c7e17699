# The offset instance head (ours, not the paper's), as the demo ran it before the demo moved to the
# paper's head: the head regresses (du, dv, r) and outputs r * PE(u + du, v + dv), plus a direct L1
# loss on (du, dv) beside Eq. 4 (Panoptic-DeepLab's offset loss); void included (the ICML setting),
# things from the code norm, one lr, 400 iterations. Measured: val PQ 67.7 / PQ_th 47.5
# (docs/experiments.md "Instance learning with real weights").
from .pe_vits import dataloader, lr_multiplier, model, optimizer, train  # noqa: F401

model.inst_position = "offset"  # ours: code = r * PE(u + du, v + dv)
model.loss.offset_weight = 1.0  # ours: direct L1 on the offset
dataloader.train.mapper.panoptic.include_void = True  # the ICML setting
model.postprocess = dict(decoder="vote", grid=(16, 16), void_source="instance")
optimizer.params.head_lr_multiplier = 1.0

train.max_iter = 400
train.checkpointer = dict(period=200, max_to_keep=2)
train.output_dir = "output/vits_offset"
