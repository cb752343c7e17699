# ICML Table 4, row 4: EDS, centroid classification with cross-entropy over 80 bins per coordinate.
# Paper: COCO PQ 39.87 (DINOv2 ViT-B, 420 x 420, 200 epochs; see ../vitb_ablation_420.py).
from ..vitb_ablation_420 import dataloader, lr_multiplier, model, optimizer, train

model.encoding = dict(name="bins", num_bins=80)
train.reference = dict(table="ICML Table 4", row="EDS, Cross-entropy", pq=39.87)
train.output_dir = "output/coco/ablations/icml_t4_cross_entropy"
