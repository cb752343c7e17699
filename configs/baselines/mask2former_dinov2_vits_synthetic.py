# Mask2Former on the same DINOv2 ViT-S/14, with the same pretrained weights, as our method
# (configs/synthetic/pe_vits.py: weights/dinov2_vits14_pretrain.pth from `make weights`, the
# official DINOv2 forward, its first 6 blocks), so that a comparison on the synthetic dataset
# isolates the head. The ViT feeds Mask2Former through a ViTDet-style simple feature pyramid built
# from the last kept block's output (pe_panoptic.baselines.mask2former.DINOv2SimplePyramid: strides
# 7 / 14 / 28 / 56, 256 channels, channel LayerNorm); the head is upstream's (MSDeformAttn pixel
# decoder on strides 14 / 28 / 56 with mask features at stride 7, masked-attention decoder) with
# the changes of configs/baselines/mask2former_r50_synthetic.py (7 classes, 50 queries, 168 px).
# Optimizer: upstream's AdamW lr 1e-4 with the pretrained ViT at x 0.1 (backbone.net); the new
# pyramid trains at the full learning rate. Inputs are padded to multiples of 56 (4 patches).
# Use all 12 blocks with model.backbone.net.out_indices=[11]; model.backbone.net.freeze_at=3 freezes
# what the demo recipe (pe_vits.py) freezes (embeddings + blocks 1-2; here they train at lr x 0.1).
import os

from detectron2.config import LazyCall as L
from detectron2.layers import ShapeSpec
from pe_panoptic.modeling.backbone import DINOv2Backbone
from pe_panoptic.baselines.mask2former import DINOv2SimplePyramid

from .mask2former_r50_synthetic import dataloader, lr_multiplier, model, optimizer, train

WEIGHTS = os.path.join(os.environ.get("PE_PANOPTIC_WEIGHTS") or os.path.join(os.path.dirname(__file__), "../../weights"),
                       "dinov2_vits14_pretrain.pth")

model.backbone = L(DINOv2SimplePyramid)(
    net=L(DINOv2Backbone)(
        model_name="vit_small_patch14_dinov2",
        out_indices=[5],
        img_size=518,
        weights=os.path.normpath(WEIGHTS),
        drop_path_rate=0.0,
        pos_embed_interp="dinov2",
    ),
    out_channels=256,
    norm="LN",
)
_sfp = {f"sfp{s}": L(ShapeSpec)(channels=256, stride=s) for s in (7, 14, 28, 56)}
model.sem_seg_head.input_shape = _sfp
model.sem_seg_head.pixel_decoder.input_shape = _sfp
model.sem_seg_head.pixel_decoder.transformer_in_features = ["sfp14", "sfp28", "sfp56"]
model.sem_seg_head.pixel_decoder.common_stride = 7
model.size_divisibility = 56

optimizer.params.backbone_prefix = "backbone.net"
optimizer.params.backbone_multiplier = 0.1

train.output_dir = "output/baselines/mask2former_dinov2_vits_synthetic"
