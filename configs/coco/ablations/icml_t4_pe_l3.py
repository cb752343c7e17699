# ICML Table 4: EDS, PE with L = 3 harmonics.
# Paper: COCO PQ 47.38 (DINOv2 ViT-B, 420 x 420, 200 epochs; see ../vitb_ablation_420.py).
from ..vitb_ablation_420 import dataloader, lr_multiplier, model, optimizer, train

model.encoding = dict(name="pe", num_harmonics=3)
train.reference = dict(table="ICML Table 4", row="EDS, PE L=3", pq=47.38)
train.output_dir = "output/coco/ablations/icml_t4_pe_l3"
