# paper_v1 Table 3: direct centroid regression, RGB code (R = u, G = v in [0, 1], B = 1 on
# instances; void = black; L1 loss; Appendix B), EDS and void included.
# Paper: COCO PQ 41.61 (DINOv2 ViT-B, 420 x 420, 200 epochs; see ../vitb_ablation_420_v1_decoder.py).
from ..vitb_ablation_420_v1_decoder import dataloader, lr_multiplier, model, optimizer, train

model.encoding = dict(name="rgb")
train.reference = dict(table="paper_v1 Table 3", row="Direct centroid regression", pq=41.61)
train.output_dir = "output/coco/ablations/v1_t3_direct_regression"
