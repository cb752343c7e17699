# ICML Table 4, row 3: EDS, direct centroid regression (RGB code, Appendix C).
# Paper: COCO PQ 41.61 (DINOv2 ViT-B, 420 x 420, 200 epochs; see ../vitb_ablation_420.py).
from ..vitb_ablation_420 import dataloader, lr_multiplier, model, optimizer, train

model.encoding = dict(name="rgb")
train.reference = dict(table="ICML Table 4", row="EDS, Direct regression", pq=41.61)
train.output_dir = "output/coco/ablations/icml_t4_direct_regression"
