# ICML Table 4: EDS, PE with L = 5 harmonics.
# Paper: COCO PQ 48.12 (DINOv2 ViT-B, 420 x 420, 200 epochs; see ../vitb_ablation_420.py).
from ..vitb_ablation_420 import dataloader, lr_multiplier, model, optimizer, train

model.encoding = dict(name="pe", num_harmonics=5)
train.reference = dict(table="ICML Table 4", row="EDS, PE L=5", pq=48.12)
train.output_dir = "output/coco/ablations/icml_t4_pe_l5"
