# paper_v1 Table 2, row 1: no EDS (all pixels weigh 1), void regions excluded from the instance
# loss.
# Paper: COCO PQ 44.91 (DINOv2 ViT-B, 420 x 420, 200 epochs; see ../vitb_ablation_420_v1_decoder.py).
from ..vitb_ablation_420_v1_decoder import dataloader, lr_multiplier, model, optimizer, train

dataloader.train.mapper.panoptic.use_eds = False
dataloader.train.mapper.panoptic.include_void = False
train.reference = dict(table="paper_v1 Table 2", row="EDS no, include void no", pq=44.91)
train.output_dir = "output/coco/ablations/v1_t2_no_eds_no_void"
