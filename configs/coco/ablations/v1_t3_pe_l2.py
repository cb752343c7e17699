# paper_v1 Table 3: sine-cosine positional embedding of the centroid with L = 2 harmonics (4L = 8
# channels), EDS and void included.
# Paper: COCO PQ 46.58 (DINOv2 ViT-B, 420 x 420, 200 epochs; see ../vitb_ablation_420_v1_decoder.py).
from ..vitb_ablation_420_v1_decoder import dataloader, lr_multiplier, model, optimizer, train

model.encoding = dict(name="pe", num_harmonics=2)
train.reference = dict(table="paper_v1 Table 3", row="Pos Embeds (L = 2)", pq=46.58)
train.output_dir = "output/coco/ablations/v1_t3_pe_l2"
