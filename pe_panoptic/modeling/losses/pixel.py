"""Pixel losses: the EDS-weighted average of paper Eq. (1) and the semantic cross-entropy. The PE
instance loss of Eq. (4) is :meth:`pe_panoptic.encoding.PositionalEncoding.code_loss`
(:func:`instance_pe_loss_map` checks its inputs and calls it)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from pe_panoptic.modeling.losses.checks import check_ndim, check_same_shape, check_spatial, pe_channels

__all__ = ["NORMALIZATIONS", "weighted_mean", "semantic_ce_map", "instance_pe_loss_map", "offset_l1_map"]


#: how :func:`weighted_mean` normalizes the weighted sum of Eq. (1) over a batch
NORMALIZATIONS = ("batch", "per_image")


def weighted_mean(loss_map: torch.Tensor, weight: torch.Tensor, normalize: str = "batch") -> torch.Tensor:
    """Weighted pixel average of paper Eq. (1): ``sum(w * L) / sum(w)``.

    ``loss_map`` and ``weight`` have the same shape (typically ``[B, H, W]``); weights are
    non-negative (EDS weights in [0, 1]). Pixels of zero weight are excluded with a ``where`` (not
    multiplied by 0), so a NaN/inf loss there cannot leak into the result or the gradient.

    Eq. (1) is written for one image and the paper does not say how a batch is reduced:

    * ``normalize="batch"`` (default): one ratio over the whole batch,
      ``sum_b sum_ij w L / sum_b sum_ij w``; an image weighs by its total pixel weight (an image
      with many boundary pixels counts more). When ``sum(w) == 0`` the result is a float32 zero
      that is still attached to ``loss_map``'s graph.
    * ``normalize="per_image"``: Eq. (1) for each image ``b`` (dimension 0), then the mean over
      the images with ``sum(w_b) > 0`` (images without weight, e.g. depth-only images of a mixed
      batch, do not dilute it); every image weighs the same, so a batch of ``B`` images gives the
      mean of ``B`` one-image batches (what data-parallel training over ``B`` processes or ``B``
      accumulation steps of one image each computes). A zero attached to the graph when no image
      has weight.
    """
    fn = "weighted_mean"
    check_same_shape(fn, "loss_map", loss_map, "weight", weight)
    if normalize not in NORMALIZATIONS:
        raise ValueError(f"{fn}: normalize must be one of {NORMALIZATIONS}, got {normalize!r}")
    loss_map = loss_map.float()
    weight = weight.float()
    weighted = torch.where(weight > 0, loss_map * weight, torch.zeros_like(loss_map))
    if normalize == "batch":
        num = weighted.sum()
        den = weight.sum()
        return num / torch.where(den > 0, den, torch.ones_like(den))
    if loss_map.dim() < 1:
        raise ValueError(f"{fn}: normalize='per_image' needs a leading batch dimension, got a scalar")
    num = weighted.reshape(weighted.shape[0], -1).sum(1)
    den = weight.reshape(weight.shape[0], -1).sum(1)
    has = den > 0
    per_image = num / torch.where(has, den, torch.ones_like(den))
    count = has.sum()
    return torch.where(has, per_image, torch.zeros_like(per_image)).sum() / torch.clamp(count, min=1)


def semantic_ce_map(logits: torch.Tensor, labels: torch.Tensor, ignore_label: int = 255) -> torch.Tensor:
    """Per-pixel cross-entropy ``[B, H, W]`` of the semantic head (the ``L^sem`` of Eq. 1);
    0 at pixels labeled ``ignore_label``.

    ``logits [B, C, H, W]`` (any float dtype; computed in float32), ``labels [B, H, W]`` integer
    in ``[0, C)`` or ``ignore_label``.
    """
    fn = "semantic_ce_map"
    check_ndim(fn, "logits", logits, 4, "[B, C, H, W]")
    check_ndim(fn, "labels", labels, 3, "[B, H, W]")
    check_spatial(fn, "logits", logits, "labels", labels)
    if labels.dtype.is_floating_point or labels.dtype == torch.bool:
        raise TypeError(f"{fn}: labels must be an integer tensor, got {labels.dtype}")
    labels = labels.long()
    num_classes = logits.shape[1]
    bad = (labels != ignore_label) & ((labels < 0) | (labels >= num_classes))
    if bool(bad.any()):
        found = torch.unique(labels[bad])[:8].tolist()
        raise ValueError(
            f"{fn}: labels must be in [0, {num_classes}) or ignore_label={ignore_label}, found {found}"
        )
    return F.cross_entropy(logits.float(), labels, ignore_index=ignore_label, reduction="none")


def instance_pe_loss_map(pred: torch.Tensor, target: torch.Tensor, L: int) -> torch.Tensor:
    """Per-pixel PE loss of paper Eq. (4) on codes ``pred``, ``target`` ``[B, 4L, H, W]``, in float32:
    the one implementation, :meth:`pe_panoptic.encoding.PositionalEncoding.code_loss`, with this
    module's input checks (kept as a public name of the losses)."""
    from pe_panoptic.encoding import PositionalEncoding

    fn = "instance_pe_loss_map"
    check_ndim(fn, "pred", pred, 4, "[B, 4L, H, W]")
    check_same_shape(fn, "pred", pred, "target", target)
    pe_channels(fn, pred, L)
    return PositionalEncoding(L).code_loss(pred.float(), target.float())


def offset_l1_map(offset: torch.Tensor, uv: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Direct L1 loss of a predicted centroid offset, as Panoptic-DeepLab trains its offsets (not
    in the paper; the named switch ``loss.offset_weight`` of the ``inst_position="offset"`` head).

    ``offset [B, 2, H, W]`` is the predicted (du, dv) in normalized units, ``uv [B, 2, H, W]`` the
    normalized target centroid, ``valid [B, H, W]`` the instance pixels. Per pixel
    ``|u + du - c_u| + |v + dv - c_v|`` with ``(u, v)`` the pixel's own normalized centre
    (:func:`pe_panoptic.encoding.pixel_centers`); 0 on void pixels (excluded with a ``where``)."""
    from pe_panoptic.encoding import pixel_centers

    fn = "offset_l1_map"
    check_ndim(fn, "offset", offset, 4, "[B, 2, H, W]")
    check_same_shape(fn, "offset", offset, "uv", uv)
    if offset.shape[1] != 2:
        raise ValueError(f"{fn}: offset must be [B, 2, H, W], got {tuple(offset.shape)}")
    check_spatial(fn, "offset", offset, "valid", valid)
    centre = pixel_centers(*offset.shape[-2:], offset.device, offset.dtype)[None] + offset
    err = (centre - uv.to(offset.dtype)).abs().sum(1)
    return torch.where(valid.bool(), err, torch.zeros_like(err))
