"""EoMT ("Your ViT is Secretly an Image Segmentation Model", Kerssies et al., CVPR 2025; official
code tue-mps/eomt, MIT) as a detectron2 meta-architecture on pe_panoptic's DINOv2 backbone.

Used by ``configs/baselines/eomt_*.py``. The architecture (official ``models/eomt.py``):

* ``num_queries`` learned queries (no positional embedding) are prepended to the tokens before
  block ``L - num_blocks`` of the ViT (``L`` blocks kept by the backbone);
* one set of heads on the ViT's final norm: class ``Linear(D, K + 1)`` and a 3-layer MLP mask
  embedding, dotted with the patch tokens upscaled by ScaleBlocks (ConvTranspose 2x2 -> GELU ->
  depthwise 3x3 -> LayerNorm2d); upstream uses ``max(1, int(log2(patch)) - 2)`` of them: 2 at
  patch 16, 1 at patch 14 (masks at stride 8 / 7);
* before each of the last ``num_blocks`` blocks the heads predict masks and the queries attend
  only to patches where the bilinearly resized mask logit is > 0; with probability ``1 - p``
  (``attn_mask_probs[block]``, annealed by :class:`~pe_panoptic.baselines.eomt_annealing.MaskAnnealingHook`)
  a query's mask is dropped. The masks are computed when training or when ``p > 0`` (upstream
  and transformers): once annealing has brought every ``p`` to 0, inference runs no masked
  attention at all;
* the Mask2Former loss on every prediction (``num_blocks`` intermediate + the final one).

**Implementation choice.** The ViT is pe_panoptic's :class:`~pe_panoptic.modeling.backbone.DINOv2Backbone`
(timm), so EoMT, Mask2Former ViT-S and our method run on the very same module, weights loader,
position-embedding resampling (any input size; transformers' ``EomtForUniversalSegmentation``
has a fixed ``image_size // patch_size`` grid and no resampling), ``freeze_at`` and layer ids for
layer-wise lr decay. transformers' model is therefore the *reference*, not the implementation:
``tests/test_eomt.py`` copies weights across (:mod:`pe_panoptic.baselines.eomt_weights`) and checks
class and mask logits to <= 1e-4, and the panoptic inference
(:mod:`pe_panoptic.baselines.eomt_inference`) against ``EomtImageProcessor.post_process_panoptic_segmentation``.
The loss is maskformer2's ``SetCriterion`` / ``HungarianMatcher`` (:func:`~pe_panoptic.baselines.mask2former.build_mask2former_criterion`),
the same code and weights (class 2, mask 5, dice 5, no-object 0.1, 12544 points) as our
Mask2Former baseline; transformers' ``EomtLoss`` is a port of that same loss (its
``Mask2FormerLoss``), so using maskformer2's keeps one loss implementation for both query-based
baselines, and gives detectron2-style per-prediction loss names (``loss_ce``, ``loss_mask_0``, ...).
"""
from __future__ import annotations

import math
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from detectron2.modeling.postprocessing import sem_seg_postprocess
from detectron2.structures import ImageList

from pe_panoptic.baselines.eomt_inference import panoptic_inference, semantic_inference
from pe_panoptic.modeling.backbone import DINOv2Backbone

__all__ = ["ScaleBlock", "EoMT", "default_num_upscale_blocks"]


def default_num_upscale_blocks(patch_size: int) -> int:
    """Upstream's ``max(1, int(log2(patch_size)) - 2)``: 2 ScaleBlocks at patch 16, 1 at patch 14."""
    return max(1, int(math.log2(patch_size)) - 2)


class ScaleBlock(nn.Module):
    """Upstream's ScaleBlock: ConvTranspose 2x2 stride 2 -> GELU -> depthwise 3x3 (no bias) ->
    LayerNorm2d (timm's, eps 1e-6). Module names as upstream (``conv1``, ``conv2``, ``norm``)."""

    def __init__(self, dim: int):
        super().__init__()
        from timm.layers import LayerNorm2d

        self.conv1 = nn.ConvTranspose2d(dim, dim, kernel_size=2, stride=2)
        self.act = nn.GELU()
        self.conv2 = nn.Conv2d(dim, dim, kernel_size=3, padding=1, groups=dim, bias=False)
        self.norm = LayerNorm2d(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.conv2(self.act(self.conv1(x))))


class EoMT(nn.Module):
    """EoMT on a :class:`DINOv2Backbone`, detectron2 conventions: ``forward(batched_inputs)``
    returns the loss dict in training and ``[{"panoptic_seg": (ids, segments_info), "sem_seg":
    [K, H, W]}]`` at each input's ``height`` x ``width`` in evaluation.

    Args:
        backbone: the ViT; every kept block is used (``out_indices`` = its last block) and its
            final norm must be kept (``norm_outputs=True``).
        num_classes: ``K`` (the class head has ``K + 1`` outputs, the last one "no object").
        criterion: a maskformer2 ``SetCriterion`` with ``num_blocks`` auxiliary predictions
            (``build_mask2former_criterion(K, decoder_layers=num_blocks)``).
        metadata: the dataset's ``MetadataCatalog`` entry (thing ids for panoptic inference).
        num_queries: learned queries (upstream: 200).
        num_blocks: ``N``, the last blocks that see the queries (upstream: 3 S/B, 4 L, 5 g).
        num_upscale_blocks: ScaleBlocks (None: :func:`default_num_upscale_blocks`).
        input_size: pad every image to ``input_size`` x ``input_size`` (upstream: resize the long
            side to 640 and pad to 640x640); None pads the batch to a multiple of the patch size.
        object_mask_threshold / overlap_threshold / mask_threshold: panoptic inference
            (upstream: 0.8 / 0.8 / 0.5, Mask2Former's).
        pixel_mean / pixel_std: RGB normalization on 0-255 (ImageNet's, as DINOv2).
        backbone_weights: optional DINOv2 / timm checkpoint loaded into the ViT after it is built,
            with patch-embedding kernel resampling (:func:`pe_panoptic.baselines.eomt_weights.load_dinov2_for_eomt`):
            for upstream's patch-16 ViTs built from the patch-14 DINOv2 weights.
    """

    def __init__(self, *, backbone: DINOv2Backbone, num_classes: int, criterion: nn.Module, metadata,
                 num_queries: int = 200, num_blocks: int = 4, num_upscale_blocks: Optional[int] = None,
                 input_size: Optional[int] = None, object_mask_threshold: float = 0.8, overlap_threshold: float = 0.8,
                 mask_threshold: float = 0.5, pixel_mean: Sequence[float] = (123.675, 116.28, 103.53),
                 pixel_std: Sequence[float] = (58.395, 57.12, 57.375), semantic_on: bool = True,
                 panoptic_on: bool = True, backbone_weights: Optional[str] = None):
        super().__init__()
        if not isinstance(backbone, DINOv2Backbone):
            raise TypeError(f"EoMT: backbone must be a pe_panoptic DINOv2Backbone, got {type(backbone).__name__}")
        if not backbone.norm_outputs:
            raise ValueError("EoMT: the backbone must keep its final norm (norm_outputs=True): the heads read it")
        if not 1 <= int(num_blocks) <= backbone.num_layers:
            raise ValueError(f"EoMT: num_blocks must be in [1, {backbone.num_layers}] (the backbone keeps "
                             f"{backbone.num_layers} blocks), got {num_blocks}")
        if num_queries < 1 or num_classes < 1:
            raise ValueError(f"EoMT: num_queries and num_classes must be >= 1, got {num_queries}, {num_classes}")
        if input_size is not None and input_size % backbone.patch_size:
            raise ValueError(f"EoMT: input_size {input_size} is not a multiple of the patch size {backbone.patch_size}")
        self.backbone = backbone
        if backbone_weights:
            from pe_panoptic.baselines.eomt_weights import load_dinov2_for_eomt

            load_dinov2_for_eomt(backbone, backbone_weights)
        dim = backbone.embed_dim
        self.num_classes, self.num_queries, self.num_blocks = int(num_classes), int(num_queries), int(num_blocks)
        n_up = default_num_upscale_blocks(backbone.patch_size) if num_upscale_blocks is None else int(num_upscale_blocks)
        self.query = nn.Embedding(self.num_queries, dim)
        self.class_head = nn.Linear(dim, self.num_classes + 1)
        self.mask_head = nn.Sequential(nn.Linear(dim, dim), nn.GELU(), nn.Linear(dim, dim), nn.GELU(),
                                       nn.Linear(dim, dim))
        self.upscale = nn.Sequential(*[ScaleBlock(dim) for _ in range(n_up)])
        self.register_buffer("attn_mask_probs", torch.ones(self.num_blocks))
        self.criterion = criterion
        self.metadata = metadata
        self.input_size = None if input_size is None else int(input_size)
        self.object_mask_threshold, self.overlap_threshold = float(object_mask_threshold), float(overlap_threshold)
        self.mask_threshold = float(mask_threshold)
        self.semantic_on, self.panoptic_on = bool(semantic_on), bool(panoptic_on)
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean, dtype=torch.float32).view(-1, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std, dtype=torch.float32).view(-1, 1, 1), False)

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    # ------------------------------------------------------------------------------------
    # network
    # ------------------------------------------------------------------------------------
    def _predict(self, x: torch.Tensor, grid: Tuple[int, int]) -> Tuple[torch.Tensor, torch.Tensor]:
        """Heads on normed tokens ``[B, Q + prefix + h*w, D]`` -> mask logits ``[B, Q, h*s, w*s]``
        and class logits ``[B, Q, K + 1]``."""
        q = x[:, : self.num_queries]
        patches = x[:, self.num_queries + self.backbone.vit.num_prefix_tokens:]
        patches = patches.transpose(1, 2).reshape(x.shape[0], -1, *grid)
        masks = torch.einsum("bqc,bchw->bqhw", self.mask_head(q), self.upscale(patches))
        return masks, self.class_head(q)

    def _attention_mask(self, mask_logits: torch.Tensor, prob: torch.Tensor, grid: Tuple[int, int],
                        num_tokens: int) -> torch.Tensor:
        """Boolean SDPA mask ``[B, 1, T, T]`` (True: attend): query -> patch entries where the mask
        logit resized to the patch grid is > 0; each query's mask dropped with probability 1 - p."""
        B, Q = mask_logits.shape[:2]
        allowed = F.interpolate(mask_logits, size=grid, mode="bilinear").flatten(2) > 0
        if prob < 1:
            allowed = allowed | (torch.rand(B, Q, device=mask_logits.device) > prob)[..., None]
        mask = torch.ones(B, num_tokens, num_tokens, dtype=torch.bool, device=mask_logits.device)
        mask[:, :Q, Q + self.backbone.vit.num_prefix_tokens:] = allowed
        return mask[:, None]

    def forward_logits(self, images: torch.Tensor) -> Tuple[List[torch.Tensor], List[torch.Tensor]]:
        """Normalized images ``[B, 3, H, W]`` (multiples of the patch size) -> per-prediction mask
        logits ``[B, Q, H/s, W/s]`` and class logits ``[B, Q, K + 1]``: the intermediate ones
        (before each of the last ``num_blocks`` blocks, when they run) then the final one."""
        bb = self.backbone
        vit = bb.vit
        h, w = images.shape[-2:]
        if images.dim() != 4 or h % bb.patch_size or w % bb.patch_size:
            raise ValueError(f"EoMT: images must be [B, 3, H, W] with H, W multiples of {bb.patch_size}, "
                             f"got {tuple(images.shape)}")
        grid = (h // bb.patch_size, w // bb.patch_size)
        x = vit.norm_pre(vit.patch_drop(vit._pos_embed(vit.patch_embed(images))))
        start = len(vit.blocks) - self.num_blocks
        masks_out, classes_out = [], []
        for i, block in enumerate(vit.blocks):
            attn_mask = None
            if i == start:
                x = torch.cat([self.query.weight[None].expand(x.shape[0], -1, -1), x], dim=1)
            if i >= start:
                prob = self.attn_mask_probs[i - start]
                if self.training or prob > 0:
                    masks, classes = self._predict(vit.norm(x), grid)
                    masks_out.append(masks)
                    classes_out.append(classes)
                    attn_mask = self._attention_mask(masks, prob, grid, x.shape[1])
            x = block(x, attn_mask=attn_mask)
        masks, classes = self._predict(vit.norm(x), grid)
        return masks_out + [masks], classes_out + [classes]

    # ------------------------------------------------------------------------------------
    # detectron2 interface
    # ------------------------------------------------------------------------------------
    def _images(self, batched_inputs: List[Dict]) -> ImageList:
        images = [(x["image"].to(self.device).float() - self.pixel_mean) / self.pixel_std for x in batched_inputs]
        if self.input_size is None:
            return ImageList.from_tensors(images, self.backbone.patch_size)
        too_big = [tuple(im.shape[-2:]) for im in images if max(im.shape[-2:]) > self.input_size]
        if too_big:
            raise ValueError(f"EoMT: input_size={self.input_size} but the mapper gave images of {too_big}: resize "
                             f"the long side to at most {self.input_size} (upstream: long side 640, then pad)")
        batch = ImageList.from_tensors(images, self.backbone.patch_size)
        h, w = batch.tensor.shape[-2:]  # detectron2 0.6's ImageList has no square padding constraint
        return ImageList(F.pad(batch.tensor, (0, self.input_size - w, 0, self.input_size - h)), batch.image_sizes)

    def _targets(self, batched_inputs: List[Dict], padded_hw: Tuple[int, int]) -> List[Dict]:
        """``instances`` (gt_classes, gt_masks) -> SetCriterion targets, masks zero-padded to the batch."""
        targets = []
        for x in batched_inputs:
            inst = x["instances"].to(self.device)
            gt = inst.gt_masks.tensor if hasattr(inst.gt_masks, "tensor") else inst.gt_masks
            padded = gt.new_zeros((gt.shape[0], *padded_hw))
            padded[:, : gt.shape[1], : gt.shape[2]] = gt
            targets.append({"labels": inst.gt_classes, "masks": padded})
        return targets

    def forward(self, batched_inputs: List[Dict]):
        images = self._images(batched_inputs)
        masks, classes = self.forward_logits(images.tensor)
        if self.training:
            if any("instances" not in x for x in batched_inputs):
                raise ValueError("EoMT training needs 'instances' (gt_classes, gt_masks) in every input: use a "
                                 "panoptic mapper such as mask2former's COCOPanopticNewBaselineDatasetMapper")
            outputs = {"pred_logits": classes[-1], "pred_masks": masks[-1],
                       "aux_outputs": [{"pred_logits": c, "pred_masks": m} for c, m in zip(classes[:-1], masks[:-1])]}
            losses = self.criterion(outputs, self._targets(batched_inputs, tuple(images.tensor.shape[-2:])))
            for k in list(losses):
                if k not in self.criterion.weight_dict:
                    raise KeyError(f"EoMT: loss {k!r} has no weight in the criterion's weight_dict "
                                   f"(build it with decoder_layers={self.num_blocks})")
                losses[k] = losses[k] * self.criterion.weight_dict[k]
            return losses
        return self.inference(masks[-1], classes[-1], images, batched_inputs)

    def inference(self, mask_logits: torch.Tensor, class_logits: torch.Tensor, images: ImageList,
                  batched_inputs: List[Dict]) -> List[Dict]:
        """Final-prediction logits -> per-image ``sem_seg`` / ``panoptic_seg`` at the original size:
        masks upsampled to the padded input, cropped to the image, resized to ``height x width``
        (transformers' ``unpad_image``)."""
        mask_logits = F.interpolate(mask_logits, size=images.tensor.shape[-2:], mode="bilinear")
        thing_ids = set(getattr(self.metadata, "thing_dataset_id_to_contiguous_id", {}).values())
        results = []
        for m, c, x, image_size in zip(mask_logits, class_logits, batched_inputs, images.image_sizes):
            height, width = x.get("height", image_size[0]), x.get("width", image_size[1])
            m = sem_seg_postprocess(m, image_size, height, width)
            r = {}
            if self.semantic_on:
                r["sem_seg"] = semantic_inference(m, c)
            if self.panoptic_on:
                r["panoptic_seg"] = panoptic_inference(m, c, thing_ids, object_mask_threshold=self.object_mask_threshold,
                                                       overlap_threshold=self.overlap_threshold,
                                                       mask_threshold=self.mask_threshold)
            results.append(r)
        return results
