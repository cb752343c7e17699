# ICML Table 4, row 2: no EDS, PE with L = 4.
# Paper: COCO PQ 44.86 (DINOv2 ViT-B, 420 x 420, 200 epochs; see ../vitb_ablation_420.py).
from ..vitb_ablation_420 import dataloader, lr_multiplier, model, optimizer, train

# ICML Table 4's rows without EDS match paper_v1 Table 2's baseline (PE L = 4 without EDS: 44.86 vs
# 44.91 with void excluded, 46.74 with void included): "without EDS" is read as the paper_v1
# baseline, i.e. no EDS and void regions excluded.
dataloader.train.mapper.panoptic.use_eds = False
dataloader.train.mapper.panoptic.include_void = False
model.encoding = dict(name="pe", num_harmonics=4)
train.reference = dict(table="ICML Table 4", row="no EDS, PE L=4", pq=44.86)
train.output_dir = "output/coco/ablations/icml_t4_no_eds_pe_l4"
