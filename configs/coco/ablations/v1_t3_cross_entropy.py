# paper_v1 Table 3: centroid classification with cross-entropy over 80 bins per coordinate (+ a void
# bin; Appendix B), EDS and void included.
# Paper: COCO PQ 39.87 (DINOv2 ViT-B, 420 x 420, 200 epochs; see ../vitb_ablation_420_v1_decoder.py).
from ..vitb_ablation_420_v1_decoder import dataloader, lr_multiplier, model, optimizer, train

model.encoding = dict(name="bins", num_bins=80)
train.reference = dict(table="paper_v1 Table 3", row="Cross Entropy", pq=39.87)
train.output_dir = "output/coco/ablations/v1_t3_cross_entropy"
