# paper_v1 Table 2, row 2: no EDS (all pixels weigh 1), void regions included (regressed to the void
# code).
# Paper: COCO PQ 46.74 (DINOv2 ViT-B, 420 x 420, 200 epochs; see ../vitb_ablation_420_v1_decoder.py).
from ..vitb_ablation_420_v1_decoder import dataloader, lr_multiplier, model, optimizer, train

dataloader.train.mapper.panoptic.use_eds = False
dataloader.train.mapper.panoptic.include_void = True
train.reference = dict(table="paper_v1 Table 2", row="EDS no, include void yes", pq=46.74)
train.output_dir = "output/coco/ablations/v1_t2_no_eds_void"
