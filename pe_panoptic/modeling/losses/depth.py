"""Depth losses (paper Eq. 6-9, Appendix A): the affine-invariant disparity loss and SILog.

Both are computed per image over its valid pixels and averaged over the images that have at
least one valid pixel; with none they return a zero still attached to the prediction's graph.
"""
from __future__ import annotations

import torch

from pe_panoptic.modeling.losses.checks import as_bhw, check_same_shape

__all__ = ["affine_invariant_disparity_loss", "silog_loss"]

_EPS = 1e-6


def _depth_inputs(fn: str, pred: torch.Tensor, gt: torch.Tensor, valid: torch.Tensor):
    pred = as_bhw(fn, "pred", pred)
    gt = as_bhw(fn, "gt", gt)
    valid = as_bhw(fn, "valid", valid)
    check_same_shape(fn, "pred", pred, "gt", gt)
    check_same_shape(fn, "pred", pred, "valid", valid)
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
