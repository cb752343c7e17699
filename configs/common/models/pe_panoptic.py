# The paper's model: DINOv2 encoder -> 4 block outputs concatenated -> 3 transposed convs (2x) +
# 1 conv (output at 8/14 of the input) -> one 3x3 conv per task head.
# Defaults: ViT-B with blocks 3/6/9/12 (1-indexed), decoder width 256, PE with L = 4, EDS D = 20.
from detectron2.config import LazyCall as L
from pe_panoptic.modeling.backbone import DINOv2Backbone
from pe_panoptic.modeling.decoder_factory import transposed_conv_decoder
from pe_panoptic.modeling.meta_arch import PixelCentroidHead

model = L(PixelCentroidHead)(
    backbone=L(DINOv2Backbone)(
        model_name="vit_base_patch14_dinov2",
        out_indices=(2, 5, 8, 11),
        weights=None,  # path to dinov2_vitb14_pretrain.pth (official layout) or a timm checkpoint
        drop_path_rate=0.1,
        grad_checkpointing=False,
    ),
    # input channels = the backbone's (len(out_indices) x embed_dim): the model builds the decoder
    decoder=L(transposed_conv_decoder)(width=256, num_upsample=3),
    decoder_width="${.decoder.width}",
    encoding=dict(name="pe", num_harmonics=4, num_bins=80, norm="l2"),  # norm: "l2" = Eq. 4 (paper), "squared" (follow-up)
    dataset_name="coco_2017_train_panoptic",
    tasks=("sem", "inst"),
    # every batch trains all `tasks` (summed losses) unless its inputs declare theirs: one task
    # per optimizer step (paper_v1) is drawn by the loader, dataloader.train.task_probs
    # (pe_panoptic.engine.recipes.set_task_probs)
    # normalize: Eq. (1) over a batch, "batch" (sum w L / sum w over the whole batch) or
    # "per_image" (Eq. 1 per image, then the mean); the paper does not say (README "Fidelity")
    loss=dict(tv_weight=0.1, dice_weight=1.0, normalize="batch"),
    # decoder "vote" (ours): the highest PQ_th on trained outputs in every measurement (README
    # "Post-processing: the default, measured"); the paper's nearest-grid "nn" stays available and
    # the paper-row configs (configs/coco, configs/cityscapes) set it explicitly. Grid: paper (COCO).
    postprocess=dict(decoder="vote", grid=(80, 80)),
    depth=False,
    max_depth=10.0,
    decode_at="output",
    semantic_output="labels",  # sem_seg as the [H, W] class map ("probs": [N, H, W], small images only)
    diagnostics=False,  # training outputs carry "diag/..." instance-code diagnostics (train_net: on with train.learning_curve)
)
