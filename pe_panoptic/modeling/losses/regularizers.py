"""Regularizers of the dense outputs: total variation (paper Eq. 10, 11) and the generalized DICE
loss of the PE instance output (Eq. 12-14, Appendix B).

TV losses are *averaged* over the ``(H-1)(W-1)`` pixels that have both neighbours (and over the
batch) instead of summed as written in Eq. (11): the paper's weight 0.1 then does not depend on
the output resolution. Eq. (10) is evaluated on the same pixels. DICE sums run over *all* pixels
(paper: "i, j are iterating over all pixels"), including void and padding, since penalizing an
existing instance's code there is the point of the loss; an optional ``pixel_mask`` restricts
them. The DICE loss is computed per image and averaged over the images that have at least one
labeled instance.
"""
from __future__ import annotations

from typing import Optional, Sequence, Union

import torch
import torch.nn.functional as F

from pe_panoptic.encoding import CentroidEncoding
from pe_panoptic.modeling.losses.checks import check_ndim, check_same_shape, check_spatial, pe_channels

__all__ = ["tv_loss_regression", "tv_loss_semantic", "instance_codes_from_targets", "generalized_dice_loss"]


def tv_loss_regression(pred: torch.Tensor, norm: str = "l2") -> torch.Tensor:
    """Total variation of a regression output, paper Eq. (10), averaged over pixels.

    ``l_ij = ||y_ij - y_(i-1)j|| + ||y_ij - y_i(j-1)||`` for the ``(H-1)(W-1)`` pixels that have
    both an upper and a left neighbour, averaged over them and the batch (not summed, so the
    weight does not depend on resolution). The norm is taken over channels: ``"l2"`` (Euclidean,
    the paper's choice for positional embeddings) or ``"l1"`` (for an L1 main loss, e.g. the RGB
    encoding). ``pred [B, C, H, W]`` with ``H, W >= 2``; returns a float32 scalar.
    """
    fn = "tv_loss_regression"
    check_ndim(fn, "pred", pred, 4, "[B, C, H, W]")
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
    check_ndim(fn, "logits", logits, 4, "[B, C, H, W]")
    if logits.shape[-2] < 2 or logits.shape[-1] < 2:
        raise ValueError(f"{fn}: logits need H, W >= 2, got shape {tuple(logits.shape)}")
    logp = F.log_softmax(logits.float(), dim=1)
    p = logp.exp()[:, :, :-1, :-1]
    h_down = -(p * logp[:, :, 1:, :-1]).sum(1)
    h_right = -(p * logp[:, :, :-1, 1:]).sum(1)
    return (0.5 * (h_down + h_right)).mean()


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
    check_ndim(fn, "inst_uv", inst_uv, 4, "[B, 2, H, W]")
    check_ndim(fn, "inst_ids", inst_ids, 3, "[B, H, W]")
    if inst_uv.shape[1] != 2:
        raise ValueError(f"{fn}: inst_uv must have 2 channels (u, v), got shape {tuple(inst_uv.shape)}")
    check_spatial(fn, "inst_uv", inst_uv, "inst_ids", inst_ids)
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
    check_ndim(fn, "pred", pred, 4, "[B, 4L, H, W]")
    check_ndim(fn, "inst_ids", inst_ids, 3, "[B, H, W]")
    pe_channels(fn, pred, L)
    check_spatial(fn, "pred", pred, "inst_ids", inst_ids)
    if pixel_mask is not None:
        check_same_shape(fn, "pixel_mask", pixel_mask, "inst_ids", inst_ids)
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
