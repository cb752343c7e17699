"""Training losses (paper Eq. 1, 4, 6-14) and the criterion that combines them.

Every loss is a pure function on tensors that computes in float32 (inputs produced under bf16/fp16
autocast are upcast) and keeps the autograd graph attached even when nothing contributes (it then
returns a zero that still backpropagates), so a training step never has to special-case an empty
batch.

* :func:`weighted_mean` -- the EDS-weighted pixel average of Eq. (1).
* :func:`semantic_ce_map` -- per-pixel cross-entropy of the semantic head.
* :func:`instance_pe_loss_map` -- per-pixel PE loss of Eq. (4).
* :func:`tv_loss_regression` / :func:`tv_loss_semantic` -- total variation, Eq. (10) / (11).
* :func:`generalized_dice_loss` -- generalized DICE over the labeled instances, Eq. (12)-(14),
  with :func:`instance_codes_from_targets` to get each instance's code.
* :func:`affine_invariant_disparity_loss` -- relative depth, Eq. (6)-(8).
* :func:`silog_loss` -- metric depth, Eq. (9).
* :class:`PixelCentroidCriterion` -- the detectron2-style dict of weighted losses per task.

Reductions (decisions not fixed by the paper):

* TV losses are *averaged* over the ``(H-1)(W-1)`` pixels that have both neighbours (and over the
  batch) instead of summed as written in Eq. (11): the paper's weight 0.1 then does not depend on
  the output resolution. Eq. (10) is evaluated on the same pixels.
* DICE sums run over *all* pixels (paper: "i, j are iterating over all pixels"), including void
  and padding, since penalizing an existing instance's code there is the point of the loss; an
  optional ``pixel_mask`` restricts them. The loss is computed per image and averaged over the
  images that have at least one labeled instance.
* Depth losses are computed per image over its valid pixels and averaged over the images that
  have at least one valid pixel.
"""
from __future__ import annotations

import contextlib
from typing import Dict, Iterable, Optional, Sequence, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from .encoding import CentroidEncoding

__all__ = [
    "weighted_mean",
    "semantic_ce_map",
    "instance_pe_loss_map",
    "tv_loss_regression",
    "tv_loss_semantic",
    "instance_codes_from_targets",
    "generalized_dice_loss",
    "affine_invariant_disparity_loss",
    "silog_loss",
    "PixelCentroidCriterion",
    "TASKS",
]

#: the task names a criterion call may request
TASKS = frozenset({"sem", "inst", "depth"})

_EPS = 1e-6


# --------------------------------------------------------------------------------------------
# input checks
# --------------------------------------------------------------------------------------------
def _check_ndim(fn: str, name: str, t: torch.Tensor, ndim: int, layout: str) -> None:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{fn}: {name} must be a torch.Tensor {layout}, got {type(t).__name__}")
    if t.dim() != ndim:
        raise ValueError(f"{fn}: {name} must be {layout}, got shape {tuple(t.shape)}")


def _check_same_shape(fn: str, name_a: str, a: torch.Tensor, name_b: str, b: torch.Tensor) -> None:
    if a.shape != b.shape:
        raise ValueError(
            f"{fn}: {name_a} {tuple(a.shape)} and {name_b} {tuple(b.shape)} must have the same shape"
        )


def _check_spatial(fn: str, name_a: str, a: torch.Tensor, name_b: str, b: torch.Tensor) -> None:
    """``a`` is ``[B, C, H, W]``, ``b`` is ``[B, H, W]``: batch and spatial sizes must agree."""
    if a.shape[0] != b.shape[0] or a.shape[-2:] != b.shape[-2:]:
        raise ValueError(
            f"{fn}: {name_a} {tuple(a.shape)} and {name_b} {tuple(b.shape)} disagree in batch or "
            f"spatial size (expected [B, C, H, W] and [B, H, W])"
        )


def _pe_channels(fn: str, pred: torch.Tensor, L: int) -> None:
    if int(L) < 1:
        raise ValueError(f"{fn}: L (number of harmonics) must be >= 1, got {L}")
    if pred.shape[1] != 4 * L:
        raise ValueError(
            f"{fn}: pred must have 4L = {4 * L} channels for L = {L}, got shape {tuple(pred.shape)}"
        )


def _as_bhw(fn: str, name: str, t: torch.Tensor) -> torch.Tensor:
    """Depth maps may come as ``[B, H, W]`` or ``[B, 1, H, W]``."""
    if t.dim() == 4 and t.shape[1] == 1:
        return t[:, 0]
    _check_ndim(fn, name, t, 3, "[B, H, W] or [B, 1, H, W]")
    return t


# --------------------------------------------------------------------------------------------
# Eq. (1), semantic CE, Eq. (4)
# --------------------------------------------------------------------------------------------
def weighted_mean(loss_map: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Weighted pixel average of paper Eq. (1): ``sum(w * L) / sum(w)``.

    ``loss_map`` and ``weight`` have the same shape (typically ``[B, H, W]``); weights are
    non-negative (EDS weights in [0, 1]). Pixels of zero weight are excluded with a ``where`` (not
    multiplied by 0), so a NaN/inf loss there cannot leak into the result or the gradient. When
    ``sum(w) == 0`` the result is a float32 zero that is still attached to ``loss_map``'s graph.
    """
    fn = "weighted_mean"
    _check_same_shape(fn, "loss_map", loss_map, "weight", weight)
    loss_map = loss_map.float()
    weight = weight.float()
    num = torch.where(weight > 0, loss_map * weight, torch.zeros_like(loss_map)).sum()
    den = weight.sum()
    return num / torch.where(den > 0, den, torch.ones_like(den))


def semantic_ce_map(logits: torch.Tensor, labels: torch.Tensor, ignore_label: int = 255) -> torch.Tensor:
    """Per-pixel cross-entropy ``[B, H, W]`` of the semantic head (the ``L^sem`` of Eq. 1);
    0 at pixels labeled ``ignore_label``.

    ``logits [B, C, H, W]`` (any float dtype; computed in float32), ``labels [B, H, W]`` integer
    in ``[0, C)`` or ``ignore_label``.
    """
    fn = "semantic_ce_map"
    _check_ndim(fn, "logits", logits, 4, "[B, C, H, W]")
    _check_ndim(fn, "labels", labels, 3, "[B, H, W]")
    _check_spatial(fn, "logits", logits, "labels", labels)
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
    """Per-pixel PE loss of paper Eq. (4): ``(||(y - y_hat)_[u]||_2 + ||(y - y_hat)_[v]||_2) / 2``.

    ``pred`` and ``target`` are ``[B, 4L, H, W]``; the u block is channels ``[0, 2L)`` and the v
    block ``[2L, 4L)`` (the layout of :class:`~pe_panoptic.encoding.PositionalEncoding`; void
    pixels have the zero target). Returns ``[B, H, W]`` float32. Equals
    ``PositionalEncoding(L).pixel_loss(pred, uv_map, valid)`` for ``target = targets(uv_map, valid)``.
    """
    fn = "instance_pe_loss_map"
    _check_ndim(fn, "pred", pred, 4, "[B, 4L, H, W]")
    _check_same_shape(fn, "pred", pred, "target", target)
    _pe_channels(fn, pred, L)
    d = pred.float() - target.float()
    du = torch.linalg.vector_norm(d[:, : 2 * L], dim=1)
    dv = torch.linalg.vector_norm(d[:, 2 * L :], dim=1)
    return 0.5 * (du + dv)


# --------------------------------------------------------------------------------------------
# total variation, Eq. (10), (11)
# --------------------------------------------------------------------------------------------
def tv_loss_regression(pred: torch.Tensor, norm: str = "l2") -> torch.Tensor:
    """Total variation of a regression output, paper Eq. (10), averaged over pixels.

    ``l_ij = ||y_ij - y_(i-1)j|| + ||y_ij - y_i(j-1)||`` for the ``(H-1)(W-1)`` pixels that have
    both an upper and a left neighbour, averaged over them and the batch (not summed, so the
    weight does not depend on resolution). The norm is taken over channels: ``"l2"`` (Euclidean,
    the paper's choice for positional embeddings) or ``"l1"`` (for an L1 main loss, e.g. the RGB
    encoding). ``pred [B, C, H, W]`` with ``H, W >= 2``; returns a float32 scalar.
    """
    fn = "tv_loss_regression"
    _check_ndim(fn, "pred", pred, 4, "[B, C, H, W]")
    if pred.shape[-2] < 2 or pred.shape[-1] < 2:
        raise ValueError(f"{fn}: pred needs H, W >= 2, got shape {tuple(pred.shape)}")
    if norm not in ("l2", "l1"):
        raise ValueError(f"{fn}: norm must be 'l2' or 'l1', got {norm!r}")
    y = pred.float()
    centre = y[:, :, 1:, 1:]
    d_up = centre - y[:, :, :-1, 1:]
    d_left = centre - y[:, :, 1:, :-1]
    ord_ = 2 if norm == "l2" else 1
    # vector_norm's gradient at 0 is 0 (no NaN in flat regions)
    l_tv = torch.linalg.vector_norm(d_up, ord=ord_, dim=1) + torch.linalg.vector_norm(d_left, ord=ord_, dim=1)
    return l_tv.mean()


def tv_loss_semantic(logits: torch.Tensor) -> torch.Tensor:
    """Total variation of a classification output, paper Eq. (11), averaged over pixels.

    ``1/2 (H(P_ij, P_(i+1)j) + H(P_ij, P_i(j+1)))`` with the cross-entropy
    ``H(a, b) = -sum_c a_c log b_c`` between the softmax distributions of neighbouring pixels, for
    ``i < H-1, j < W-1``. Eq. (11) sums over these ``(H-1)(W-1)`` pixels; we average instead (and
    over the batch) so that the paper's weight 0.1 does not depend on the output resolution.
    ``logits [B, C, H, W]`` with ``H, W >= 2``; returns a float32 scalar.
    """
    fn = "tv_loss_semantic"
    _check_ndim(fn, "logits", logits, 4, "[B, C, H, W]")
    if logits.shape[-2] < 2 or logits.shape[-1] < 2:
        raise ValueError(f"{fn}: logits need H, W >= 2, got shape {tuple(logits.shape)}")
    logp = F.log_softmax(logits.float(), dim=1)
    p = logp.exp()[:, :, :-1, :-1]
    h_down = -(p * logp[:, :, 1:, :-1]).sum(1)
    h_right = -(p * logp[:, :, :-1, 1:]).sum(1)
    return (0.5 * (h_down + h_right)).mean()


# --------------------------------------------------------------------------------------------
# generalized DICE, Eq. (12)-(14)
# --------------------------------------------------------------------------------------------
@torch.no_grad()
def instance_codes_from_targets(
    inst_uv: torch.Tensor, inst_ids: torch.Tensor, encoding: CentroidEncoding
) -> list:
    """Ground-truth code of every labeled instance, per image.

    ``inst_uv [B, 2, H, W]`` (normalized centroid of each instance pixel), ``inst_ids [B, H, W]``
    (1..K instance index, 0 = no instance). Returns a list of ``B`` tensors ``[K_b, C]`` with
    ``K_b = max(inst_ids[b])``; row ``k-1`` is ``encoding.encode`` of the centroid of instance
    ``k`` (all its pixels carry the same centroid; gathered with a scatter, no loop over
    instances). Ids without pixels get the code of ``uv = (0, 0)``; they have zero area and do not
    take part in the DICE loss.
    """
    fn = "instance_codes_from_targets"
    _check_ndim(fn, "inst_uv", inst_uv, 4, "[B, 2, H, W]")
    _check_ndim(fn, "inst_ids", inst_ids, 3, "[B, H, W]")
    if inst_uv.shape[1] != 2:
        raise ValueError(f"{fn}: inst_uv must have 2 channels (u, v), got shape {tuple(inst_uv.shape)}")
    _check_spatial(fn, "inst_uv", inst_uv, "inst_ids", inst_ids)
    ids = inst_ids.long().flatten(1)  # B HW
    if bool((ids < 0).any()):
        raise ValueError(f"{fn}: inst_ids must be >= 0 (0 = no instance)")
    B = ids.shape[0]
    k_per_image = ids.amax(1).tolist() if ids.numel() else [0] * B
    kmax = max(k_per_image, default=0)
    uv = inst_uv.float().flatten(2).transpose(1, 2)  # B HW 2
    table = torch.zeros(B, kmax + 1, 2, device=uv.device, dtype=uv.dtype)
    # every pixel of an instance carries the same centroid, so "amax" picks exactly that value
    table = table.scatter_reduce(1, ids.unsqueeze(-1).expand(-1, -1, 2), uv, reduce="amax", include_self=False)
    codes = encoding.encode(table[:, 1:])  # B Kmax C
    return [codes[b, :k] for b, k in enumerate(k_per_image)]


def _pad_codes(fn: str, inst_codes, batch: int, channels: int, device):
    """List of ``[K_b, C]`` (or a ``[B, K, C]`` tensor) -> zero-padded ``[B, Kmax, C]`` float32
    and the per-image counts ``K_b`` as a ``[B]`` tensor."""
    if isinstance(inst_codes, torch.Tensor):
        if inst_codes.dim() != 3:
            raise ValueError(
                f"{fn}: inst_codes as a tensor must be [B, K, C], got shape {tuple(inst_codes.shape)}"
            )
        codes = list(inst_codes.unbind(0))
    else:
        codes = list(inst_codes)
    if len(codes) != batch:
        raise ValueError(f"{fn}: inst_codes has {len(codes)} entries for a batch of {batch} images")
    for b, c in enumerate(codes):
        if not isinstance(c, torch.Tensor) or c.dim() != 2 or c.shape[1] != channels:
            shape = tuple(c.shape) if isinstance(c, torch.Tensor) else type(c).__name__
            raise ValueError(f"{fn}: inst_codes[{b}] must be [K_b, {channels}], got {shape}")
    kmax = max((c.shape[0] for c in codes), default=0)
    out = torch.zeros(batch, kmax, channels, device=device, dtype=torch.float32)
    for b, c in enumerate(codes):  # B small copies, no per-pixel work
        out[b, : c.shape[0]] = c.to(device=device, dtype=torch.float32)
    return out, torch.tensor([c.shape[0] for c in codes], device=device)


def generalized_dice_loss(
    pred: torch.Tensor,
    inst_ids: torch.Tensor,
    inst_codes: Union[Sequence[torch.Tensor], torch.Tensor],
    L: int,
    pixel_mask: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """Generalized DICE loss of paper Eq. (12)-(14) (Appendix B) for the PE instance output.

    Per image, with ``l`` over its labeled instances and ``(i, j)`` over all pixels::

        L_dice = 1 - 2 sum_l w_l sum_ij r_l,ij p_l,ij / sum_l w_l sum_ij (r_l,ij + p_l,ij)

    ``r_l`` is instance ``l``'s ground-truth mask (Eq. 13), ``w_l = 1 / Area_l`` and
    ``p_l,ij = exp(-(d^x_ij)^2) exp(-(d^y_ij)^2)`` (Eq. 14) where ``d^x`` / ``d^y`` are the
    Euclidean distances between the prediction at ``(i, j)`` and instance ``l``'s code in the u /
    v block. ``p_l`` is evaluated at *every* pixel, so predicting a labeled instance's code in a
    void region (or on another instance) raises the denominator and the loss.

    Args:
        pred: ``[B, 4L, H, W]`` instance output.
        inst_ids: ``[B, H, W]`` instance index 1..K_b, 0 = no labeled instance.
        inst_codes: per image ``[K_b, 4L]`` codes, row ``k-1`` for id ``k`` (see
            :func:`instance_codes_from_targets`), as a list or a ``[B, K, 4L]`` tensor.
        L: number of harmonics.
        pixel_mask: optional ``[B, H, W]`` bool; if given, only these pixels enter the sums
            (both ``r`` and ``p``). Default: all pixels, as in the paper.

    Vectorized over pixels, instances and images: squared block distances as
    ``||e||^2 - 2 e.c + ||c||^2`` (einsum), instances padded to the batch maximum with zero area
    (zero weight). Images without instances contribute nothing; the result is the mean over the
    images with instances, or a zero attached to ``pred``'s graph if there are none.
    """
    fn = "generalized_dice_loss"
    _check_ndim(fn, "pred", pred, 4, "[B, 4L, H, W]")
    _check_ndim(fn, "inst_ids", inst_ids, 3, "[B, H, W]")
    _pe_channels(fn, pred, L)
    _check_spatial(fn, "pred", pred, "inst_ids", inst_ids)
    if pixel_mask is not None:
        _check_same_shape(fn, "pixel_mask", pixel_mask, "inst_ids", inst_ids)
    B, C = pred.shape[:2]
    codes, k_per_image = _pad_codes(fn, inst_codes, B, C, pred.device)  # B K C, [B]
    ids = inst_ids.long().flatten(1)  # B N
    if bool(((ids < 0) | (ids > k_per_image[:, None])).any()):
        raise ValueError(f"{fn}: inst_ids must lie in [0, K_b] where K_b = len(inst_codes[b])")
    e = pred.float().flatten(2)  # B C N
    zero = e.sum() * 0.0
    K = codes.shape[1]
    if K == 0:
        return zero

    in_mask = torch.ones_like(ids, dtype=torch.bool) if pixel_mask is None else pixel_mask.flatten(1).bool()
    labeled = (ids > 0) & in_mask  # pixels with r_l = 1 for their instance l
    L2 = 2 * L

    def sq_dist(eb: torch.Tensor, cb: torch.Tensor) -> torch.Tensor:  # [B,c,N], [B,K,c] -> [B,K,N]
        cross = torch.einsum("bcn,bkc->bkn", eb, cb)
        return ((eb * eb).sum(1, keepdim=True) - 2.0 * cross + (cb * cb).sum(2, keepdim=True)).clamp_min(0.0)

    d2 = sq_dist(e[:, :L2], codes[:, :, :L2]) + sq_dist(e[:, L2:], codes[:, :, L2:])
    p = torch.exp(-d2) * in_mask[:, None].to(d2.dtype)  # B K N, Eq. (14)

    # Area_l and w_l = 1 / Area_l (0 for ids without pixels, including the padding)
    idx0 = (ids - 1).clamp_min(0)
    area = torch.zeros(B, K, device=pred.device, dtype=torch.float32)
    area = area.scatter_add(1, idx0, labeled.float())
    w = torch.where(area > 0, 1.0 / area.clamp_min(1.0), torch.zeros_like(area))

    # numerator: sum_l w_l sum_ij r_l p_l = sum over labeled pixels of w_id * p_id at that pixel
    p_own = p.gather(1, idx0.unsqueeze(1)).squeeze(1)  # B N
    w_own = w.gather(1, idx0)  # B N
    num = torch.where(labeled, w_own * p_own, torch.zeros_like(p_own)).sum(1)
    # denominator: sum_l w_l (Area_l + sum_ij p_l) = #instances + sum_l w_l sum_ij p_l
    den = (area > 0).float().sum(1) + (w * p.sum(2)).sum(1)

    has_inst = (area > 0).any(1)
    per_image = 1.0 - 2.0 * num / torch.where(has_inst, den, torch.ones_like(den))
    per_image = torch.where(has_inst, per_image, torch.zeros_like(per_image))
    n_img = has_inst.sum()
    return per_image.sum() / n_img.clamp_min(1) + zero


# --------------------------------------------------------------------------------------------
# depth, Eq. (6)-(9)
# --------------------------------------------------------------------------------------------
def _depth_inputs(fn: str, pred: torch.Tensor, gt: torch.Tensor, valid: torch.Tensor):
    pred = _as_bhw(fn, "pred", pred)
    gt = _as_bhw(fn, "gt", gt)
    valid = _as_bhw(fn, "valid", valid)
    _check_same_shape(fn, "pred", pred, "gt", gt)
    _check_same_shape(fn, "pred", pred, "valid", valid)
    return pred.float().flatten(1), gt.float().flatten(1), valid.bool().flatten(1)


def _mean_over_images(per_image: torch.Tensor, has_valid: torch.Tensor, anchor: torch.Tensor) -> torch.Tensor:
    per_image = torch.where(has_valid, per_image, torch.zeros_like(per_image))
    return per_image.sum() / has_valid.sum().clamp_min(1) + anchor.sum() * 0.0


def _normalize_disparity(d: torch.Tensor, valid: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
    """``(d - t(d)) / s(d)`` of Eq. (7)-(8) per row over the valid entries; ``t`` = median
    (the lower median for an even count, as ``torch.median``), ``s`` = mean absolute deviation
    from ``t`` (clamped at 1e-6 for constant maps)."""
    t = torch.nanmedian(torch.where(valid, d, torch.full_like(d, float("nan"))), dim=1).values
    t = torch.where(n > 0, t, torch.zeros_like(t))  # rows without valid pixels: no NaN
    dev = torch.where(valid, (d - t[:, None]).abs(), torch.zeros_like(d))
    s = (dev.sum(1) / n.clamp_min(1)).clamp_min(_EPS)
    return (d - t[:, None]) / s[:, None]


def affine_invariant_disparity_loss(
    pred_disp: torch.Tensor, gt_disp: torch.Tensor, valid: torch.Tensor
) -> torch.Tensor:
    """Affine-invariant disparity loss of paper Eq. (6)-(8) (Appendix A, MiDaS / Depth Anything).

    Per image and over its valid pixels, prediction and ground truth are each normalized as
    ``d_hat = (d - t(d)) / s(d)`` with ``t = median(d)`` and ``s = mean |d - t|``; the loss is
    ``mean |d*_hat - d_hat|``. Invariant to ``pred -> a * pred + b`` with ``a > 0`` (and likewise
    for the ground truth). The gradient flows through ``t`` and ``s`` of the prediction.

    ``pred_disp``, ``gt_disp``, ``valid``: ``[B, H, W]`` or ``[B, 1, H, W]``. Averaged over
    images with at least one valid pixel; a graph-attached zero if there are none.
    """
    fn = "affine_invariant_disparity_loss"
    pred, gt, valid = _depth_inputs(fn, pred_disp, gt_disp, valid)
    # fill invalid entries with finite values so NaN/inf labels cannot reach the gradient
    pred = torch.where(valid, pred, torch.zeros_like(pred))
    gt = torch.where(valid, gt, torch.zeros_like(gt))
    n = valid.sum(1)
    err = (_normalize_disparity(gt, valid, n) - _normalize_disparity(pred, valid, n)).abs()
    per_image = torch.where(valid, err, torch.zeros_like(err)).sum(1) / n.clamp_min(1)
    return _mean_over_images(per_image, n > 0, pred_disp)


def silog_loss(
    pred_depth: torch.Tensor, gt_depth: torch.Tensor, valid: torch.Tensor, lam: float = 0.5
) -> torch.Tensor:
    """Scale-invariant log loss of paper Eq. (9) (Appendix A, Eigen et al.).

    Per image over its valid pixels, ``d = log y - log y*`` and
    ``L = mean(d^2) - lam * mean(d)^2`` (no square root, as in the paper; ``lam = 0.5`` there).
    With ``lam = 1`` it is invariant to a global scaling of the prediction. Predictions are clamped
    at 1e-6 before the log; ground truth must be > 0 on valid pixels.

    Inputs ``[B, H, W]`` or ``[B, 1, H, W]``. Averaged over images with valid pixels; a
    graph-attached zero if there are none.
    """
    fn = "silog_loss"
    if not 0.0 <= float(lam) <= 1.0:
        raise ValueError(f"{fn}: lam must be in [0, 1], got {lam}")
    pred, gt, valid = _depth_inputs(fn, pred_depth, gt_depth, valid)
    if bool((valid & ~(gt > 0)).any()):
        raise ValueError(f"{fn}: gt_depth must be > 0 (and finite) wherever valid is True")
    one = torch.ones_like(pred)
    d = torch.log(torch.where(valid, pred.clamp_min(_EPS), one)) - torch.log(torch.where(valid, gt, one))
    d = torch.where(valid, d, torch.zeros_like(d))
    n = valid.sum(1)
    nf = n.clamp_min(1).float()
    mean_d = d.sum(1) / nf
    per_image = (d * d).sum(1) / nf - lam * mean_d * mean_d
    return _mean_over_images(per_image, n > 0, pred_depth)


# --------------------------------------------------------------------------------------------
# criterion
# --------------------------------------------------------------------------------------------
def _no_autocast(device: torch.device):
    """Disable autocast for the losses (they upcast to float32 themselves)."""
    if device.type in ("cuda", "cpu", "xpu", "mps"):
        return torch.autocast(device_type=device.type, enabled=False)
    return contextlib.nullcontext()


class PixelCentroidCriterion(nn.Module):
    """All training losses of the model as a detectron2-style dict of weighted scalars.

    Per requested task:

    * ``"sem"``: ``loss_sem = sem_weight * weighted_mean(CE, sem_weight_map)`` (Eq. 1) and
      ``loss_sem_tv = tv_weight * tv_loss_semantic`` (Eq. 11).
    * ``"inst"``: ``loss_inst = inst_weight * weighted_mean(encoding.pixel_loss, inst_weight_map)``
      (Eq. 1, 4); ``loss_inst_tv = tv_weight * tv_loss_regression`` (Eq. 10) if
      ``encoding.supports_tv`` (norm ``"l2"`` for PE, ``"l1"`` for the RGB encoding whose main
      loss is L1, unless ``tv_norm`` is given); ``loss_inst_dice = dice_weight *
      generalized_dice_loss`` (Eq. 12-14) if ``encoding.supports_dice``.
    * ``"depth"``: ``loss_depth = depth_weight * `` the affine-invariant disparity loss (Eq. 6-8;
      ``outputs["depth"]`` and ``targets["depth"]`` are then read as disparities) or the SILog
      loss (Eq. 9, metric depth).

    TV and DICE terms are omitted when disabled (``use_tv`` / ``use_dice`` False, weight 0, or
    not supported by the encoding). All losses are computed in float32 with autocast disabled.
    """

    def __init__(
        self,
        encoding: CentroidEncoding,
        *,
        num_classes: int,
        ignore_label: int = 255,
        sem_weight: float = 1.0,
        inst_weight: float = 1.0,
        tv_weight: float = 0.1,
        dice_weight: float = 1.0,
        depth_weight: float = 1.0,
        depth_loss: str = "affine_invariant",
        silog_lambda: float = 0.5,
        use_tv: bool = True,
        use_dice: bool = True,
        tv_norm: Optional[str] = None,
    ):
        super().__init__()
        if not isinstance(encoding, CentroidEncoding):
            raise TypeError(f"PixelCentroidCriterion: encoding must be a CentroidEncoding, got {encoding!r}")
        if int(num_classes) < 1:
            raise ValueError(f"PixelCentroidCriterion: num_classes must be >= 1, got {num_classes}")
        if depth_loss not in ("affine_invariant", "silog"):
            raise ValueError(
                f"PixelCentroidCriterion: depth_loss must be 'affine_invariant' or 'silog', got {depth_loss!r}"
            )
        for name, value in dict(sem_weight=sem_weight, inst_weight=inst_weight, tv_weight=tv_weight,
                                dice_weight=dice_weight, depth_weight=depth_weight).items():
            if float(value) < 0:
                raise ValueError(f"PixelCentroidCriterion: {name} must be >= 0, got {value}")
        if tv_norm is None:
            tv_norm = "l1" if encoding.name == "rgb" else "l2"
        if tv_norm not in ("l1", "l2"):
            raise ValueError(f"PixelCentroidCriterion: tv_norm must be 'l1' or 'l2', got {tv_norm!r}")
        self.encoding = encoding
        self.num_classes = int(num_classes)
        self.ignore_label = int(ignore_label)
        self.sem_weight = float(sem_weight)
        self.inst_weight = float(inst_weight)
        self.tv_weight = float(tv_weight)
        self.dice_weight = float(dice_weight)
        self.depth_weight = float(depth_weight)
        self.depth_loss = depth_loss
        self.silog_lambda = float(silog_lambda)
        self.use_tv = bool(use_tv) and self.tv_weight > 0
        self.use_dice = bool(use_dice) and self.dice_weight > 0
        self.tv_norm = tv_norm

    def extra_repr(self) -> str:
        return (
            f"encoding={self.encoding!r}, num_classes={self.num_classes}, tv={self.use_tv} "
            f"({self.tv_weight}, {self.tv_norm}), dice={self.use_dice} ({self.dice_weight}), "
            f"depth_loss={self.depth_loss}"
        )

    @staticmethod
    def _get(d: dict, key: str, where: str, task: str) -> torch.Tensor:
        if key not in d:
            raise KeyError(f"PixelCentroidCriterion: task {task!r} needs {where}[{key!r}]; got keys {sorted(d)}")
        return d[key]

    def forward(self, outputs: dict, targets: dict, tasks: Iterable[str]) -> Dict[str, torch.Tensor]:
        tasks = set(tasks)
        unknown = tasks - TASKS
        if unknown:
            raise ValueError(f"PixelCentroidCriterion: unknown tasks {sorted(unknown)}; choose from {sorted(TASKS)}")
        if not outputs:
            raise ValueError("PixelCentroidCriterion: outputs is empty")
        device = next(iter(outputs.values())).device
        losses: Dict[str, torch.Tensor] = {}
        with _no_autocast(device):
            if "sem" in tasks:
                losses.update(self._semantic(outputs, targets))
            if "inst" in tasks:
                losses.update(self._instance(outputs, targets))
            if "depth" in tasks:
                losses.update(self._depth(outputs, targets))
        return losses

    def _semantic(self, outputs, targets):
        logits = self._get(outputs, "sem_logits", "outputs", "sem").float()
        labels = self._get(targets, "sem_seg", "targets", "sem")
        weight = self._get(targets, "sem_weight", "targets", "sem")
        if logits.dim() != 4 or logits.shape[1] != self.num_classes:
            raise ValueError(
                f"PixelCentroidCriterion: outputs['sem_logits'] must be [B, {self.num_classes}, H, W], "
                f"got {tuple(logits.shape)}"
            )
        out = {"loss_sem": self.sem_weight * weighted_mean(semantic_ce_map(logits, labels, self.ignore_label), weight)}
        if self.use_tv:
            out["loss_sem_tv"] = self.tv_weight * tv_loss_semantic(logits)
        return out

    def _instance(self, outputs, targets):
        enc = self.encoding
        pred = self._get(outputs, "inst", "outputs", "inst").float()
        uv = self._get(targets, "inst_uv", "targets", "inst").float()
        valid = self._get(targets, "inst_valid", "targets", "inst").bool()
        weight = self._get(targets, "inst_weight", "targets", "inst")
        if pred.dim() != 4 or pred.shape[1] != enc.num_channels:
            raise ValueError(
                f"PixelCentroidCriterion: outputs['inst'] must be [B, {enc.num_channels}, H, W] for {enc!r}, "
                f"got {tuple(pred.shape)}"
            )
        if uv.dim() != 4 or uv.shape[1] != 2 or uv.shape[0] != pred.shape[0] or uv.shape[-2:] != pred.shape[-2:]:
            raise ValueError(
                f"PixelCentroidCriterion: targets['inst_uv'] {tuple(uv.shape)} must be [B, 2, H, W] matching "
                f"outputs['inst'] {tuple(pred.shape)}"
            )
        out = {"loss_inst": self.inst_weight * weighted_mean(enc.pixel_loss(pred, uv, valid), weight)}
        if self.use_tv and enc.supports_tv:
            out["loss_inst_tv"] = self.tv_weight * tv_loss_regression(pred, self.tv_norm)
        if self.use_dice and enc.supports_dice:
            ids = self._get(targets, "inst_ids", "targets", "inst")
            codes = instance_codes_from_targets(uv, ids, enc)
            out["loss_inst_dice"] = self.dice_weight * generalized_dice_loss(pred, ids, codes, enc.L)
        return out

    def _depth(self, outputs, targets):
        pred = self._get(outputs, "depth", "outputs", "depth")
        gt = self._get(targets, "depth", "targets", "depth")
        valid = targets.get("depth_valid")
        if valid is None:  # no explicit mask: valid where the label is a positive finite number
            valid = torch.isfinite(gt) & (gt > 0)
        if self.depth_loss == "silog":
            loss = silog_loss(pred, gt, valid, self.silog_lambda)
        else:
            loss = affine_invariant_disparity_loss(pred, gt, valid)
        return {"loss_depth": self.depth_weight * loss}
