"""Class-agnostic instance decoders: a cell map (:mod:`.grid`) -> instance label map + scores.

Paper, Sec. 3 / 5 ("Inference"): non-maximum suppression as in Painter removes duplicates of the
decoded grid cells. Three decoders (``PostProcessConfig.decoder``):

``"nn"`` (the paper's; default)
    ``encoding.decode`` gives every pixel its nearest grid cell or void (two small argmins, see
    :meth:`pe_panoptic.encoding.PositionalEncoding.decode`). Candidates are the distinct decoded
    cells with their pixel counts. Greedy NMS on the grid: candidates ranked by area (descending,
    ties by cell index); a candidate within ``merge_radius`` cells (Chebyshev) of a higher-ranked
    *kept* candidate is merged into the highest-ranked such candidate (its pixels are
    relabelled). Greedy NMS is computed exactly by the Cluster-NMS fixed point
    (:func:`grid_nms`).
``"vote"`` (beyond the paper)
    Each non-void pixel votes for its decoded cell (``gh x gw`` histogram); the histogram is
    optionally smoothed with a box filter (``vote_smooth_kernel``); peaks are local maxima
    (max-pool NMS, ``peak_kernel``) with at least ``min_votes`` votes, plateau duplicates removed
    by :func:`grid_nms` with radius ``peak_kernel // 2``. Every voted cell joins the nearest peak
    (Euclidean, in cells) if it lies within ``assign_radius`` cells; pixels of farther cells
    become void (they are too few to form a peak and too far from one to be trusted).
``"painter"`` (reference, as in Painter's evaluation code)
    Candidate k = a decoded cell; its mask is the pixels decoded to any cell within
    ``painter_cell_radius`` cells (Painter thresholds the colour distance, which likewise lets
    masks of neighbouring codes overlap), its score ``1 - mean normalized decode distance``.
    SOLOv2 Matrix NMS (Gaussian decay on mask IoU) rescales the scores; the masks are pasted in
    decayed-score order, skipping a mask more than ``overlap_thresh`` covered by those already
    pasted. Because every mask is a union of decoded-cell groups, areas are box sums of the cell
    histogram and IoUs / coverages come from cell pixel counts (masks x cells), never from dense
    K x h x w masks.

Consequence of the grid (all decoders): two instances whose centroids fall in the same grid cell
decode to the same code and become ONE segment; with ``merge_radius = 1`` the same holds for
centroids in adjacent cells. At 80 x 80 on a 640 px image a cell is 8 px, so this only merges
instances whose centroids are within ~16 px (tools/oracle_pq.py measures the effect).

Everything runs on the input tensors' device, vectorized; the only Python loops are fixed-point
iterations over whole candidate vectors (at most K passes, usually a few).
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.nn.functional as F

from pe_panoptic.encoding import CentroidEncoding
from pe_panoptic.postprocess.config import PostProcessConfig, resolve_cfg
from pe_panoptic.postprocess.grid import cell_counts, check_grid, decode_cells, paint_cells

__all__ = ["grid_nms", "matrix_nms", "instance_map_from_outputs", "instances_from_cells"]


def grid_nms(cells: torch.Tensor, radius: int, grid) -> Tuple[torch.Tensor, torch.Tensor]:
    """Greedy NMS of candidates on the decoding grid (the paper's Painter-style suppression).

    ``cells [K, 2]`` long ``(iv, iu)``, distinct, ALREADY SORTED by rank (index 0 is the best).
    Candidate ``j`` is suppressed iff a kept candidate ``i < j`` lies within ``radius`` cells
    (Chebyshev). Returns ``keep [K]`` bool and ``parent [K]`` long: the best-ranked kept
    candidate within the radius for suppressed candidates, the candidate itself if kept.

    Exact greedy result via the Cluster-NMS fixed point ``keep = not any_{i<j} S_ij keep_i``
    (Bolya et al. / Zheng et al.): after ``t`` passes the first ``t`` decisions are final, so it
    converges in at most K passes (usually 2-3). Neighbours are gathered through a ``gh x gw``
    index image, so a pass costs ``O(K (2 radius + 1)^2)``, not ``O(K^2)``.
    """
    gh, gw = check_grid(grid)
    K = cells.shape[0]
    dev = cells.device
    idx = torch.arange(K, device=dev)
    if K == 0 or radius == 0:
        return torch.ones(K, dtype=torch.bool, device=dev), idx
    r = int(radius)
    board = torch.full((gh + 2 * r, gw + 2 * r), -1, dtype=torch.long, device=dev)
    board[cells[:, 0] + r, cells[:, 1] + r] = idx
    d = torch.arange(-r, r + 1, device=dev)
    dy, dx = torch.meshgrid(d, d, indexing="ij")
    nbr = board[cells[:, 0:1] + r + dy.reshape(1, -1), cells[:, 1:2] + r + dx.reshape(1, -1)]  # K x O
    higher = (nbr >= 0) & (nbr < idx[:, None])  # better-ranked neighbours
    nbr_c = nbr.clamp_min(0)
    keep = torch.ones(K, dtype=torch.bool, device=dev)
    for _ in range(K):
        new_keep = ~(higher & keep[nbr_c]).any(1)
        if torch.equal(new_keep, keep):
            break
        keep = new_keep
    sup_by = torch.where(higher & keep[nbr_c], nbr, torch.full_like(nbr, K))
    parent = torch.where(keep, idx, sup_by.min(1).values)
    return keep, parent


def matrix_nms(iou: torch.Tensor, scores: torch.Tensor, sigma: float = 2.0) -> torch.Tensor:
    """SOLOv2 Matrix NMS, Gaussian kernel, class-agnostic (as in Painter's evaluation).

    ``iou [K, K]`` and ``scores [K]`` must be sorted by descending score. Returns the decayed
    scores ``s_j * min_{i<j} exp(-sigma (iou_ij^2 - comp_i^2))`` where ``comp_i = max_{k<i}
    iou_ki`` compensates for ``i`` itself being suppressed.
    """
    K = scores.shape[0]
    if K == 0:
        return scores
    iou = iou.triu(diagonal=1)
    comp = iou.max(0).values  # comp[i]: max IoU of i with a better-scored mask
    decay = torch.exp(-sigma * (iou.square() - comp.square()[:, None])).min(0).values
    return scores * decay


# --------------------------------------------------------------------------------------------
# class-agnostic instance decoders
# --------------------------------------------------------------------------------------------


def _relabel(inst_map: torch.Tensor, num: int, ndist: torch.Tensor, min_area: float):
    """Drop instances (labels ``1..num`` of ``inst_map``) smaller than ``min_area`` pixels and
    renumber the rest ``1..M`` keeping their order. Returns ``(inst_map, scores [M])`` with
    ``score = 1 - mean normalized decode distance``."""
    flat = inst_map.reshape(-1)
    area = torch.bincount(flat, minlength=num + 1)[1:]
    dsum = torch.bincount(flat, weights=ndist.reshape(-1).double(), minlength=num + 1)[1:]
    keep = (area >= min_area) & (area > 0)
    lut = torch.zeros(num + 1, dtype=torch.long, device=inst_map.device)
    lut[1:][keep] = torch.arange(1, int(keep.sum()) + 1, device=inst_map.device)
    scores = (1.0 - dsum[keep] / area[keep].clamp_min(1)).float()
    return lut[inst_map], scores



def _nn_instances(code, ndist, cfg):
    """"nn" decoder (module doc): greedy grid NMS of the decoded cells ranked by area.
    Returns ``(inst_map [h, w] long, number of labels)``."""
    gh, gw = cfg.grid
    counts_all = cell_counts(code, gh * gw)
    cand = torch.nonzero(counts_all).squeeze(1)  # occupied cells, ascending
    counts = counts_all[cand]
    # rank by area (desc); candidates are in ascending cell order and the sort is stable -> ties by code
    order = torch.sort(counts, descending=True, stable=True).indices
    cells = torch.stack((cand[order] // gw, cand[order] % gw), 1)
    keep, parent = grid_nms(cells, cfg.merge_radius, cfg.grid)
    new_id = torch.cumsum(keep.long(), 0)  # 1..M at kept ranks
    return paint_cells(code, gh * gw, cand[order], new_id[parent]), int(keep.sum())


def _vote_instances(code, ndist, cfg):
    """"vote" decoder (module doc): peaks of the cell vote histogram, cells join the nearest peak.
    Returns ``(inst_map [h, w] long, number of labels)``."""
    gh, gw = cfg.grid
    h, w = code.shape
    dev = code.device
    valid = code >= 0
    hist = cell_counts(code, gh * gw).float().view(1, 1, gh, gw)
    votes = hist
    k = cfg.vote_smooth_kernel
    if k > 1:
        votes = F.conv2d(hist, torch.ones(1, 1, k, k, device=dev), padding=k // 2)
    p = cfg.peak_kernel
    pooled = F.max_pool2d(votes, p, stride=1, padding=p // 2)
    thr = max(cfg.min_votes * h * w, 1e-6)
    is_peak = (votes == pooled) & (votes >= thr)
    peak_code = torch.nonzero(is_peak.view(-1)).squeeze(1)
    if peak_code.numel() == 0:
        return torch.zeros_like(code), 0
    # rank peaks by (smoothed votes, raw votes) descending, ties by cell index
    raw = hist.view(-1)[peak_code]
    order = torch.sort(raw, descending=True, stable=True).indices
    order = order[torch.sort(votes.view(-1)[peak_code][order], descending=True, stable=True).indices]
    peak_code = peak_code[order]
    peaks = torch.stack((peak_code // gw, peak_code % gw), 1)
    keep, _ = grid_nms(peaks, p // 2, cfg.grid)  # plateau duplicates
    peaks = peaks[keep].float()
    # every occupied cell joins its nearest peak (argmin takes the best-ranked one on ties)
    occ = torch.nonzero(hist.view(-1) > 0).squeeze(1)
    occ_pos = torch.stack((occ // gw, occ % gw), 1).float()
    dmin, nearest = torch.cdist(occ_pos, peaks, compute_mode="donot_use_mm_for_euclid_dist").min(1)
    cell_label = torch.zeros(gh * gw, dtype=torch.long, device=dev)
    cell_label[occ] = torch.where(dmin <= cfg.assign_radius + 1e-6, nearest + 1, torch.zeros_like(nearest))
    inst_map = torch.where(valid, cell_label[code.clamp_min(0)], torch.zeros_like(code))
    return inst_map, int(peaks.shape[0])


def _painter_instances(code, ndist, cfg):
    """"painter" decoder (module doc): Matrix NMS of cell-group masks, pasted in score order.
    Returns ``(inst_map [h, w] long, number of labels)``."""
    gh, gw = cfg.grid
    dev = code.device
    counts_all = cell_counts(code, gh * gw)
    cand = torch.nonzero(counts_all).squeeze(1)  # occupied cells, ascending
    counts = counts_all[cand]
    K = cand.numel()
    if K == 0:
        return torch.zeros_like(code), 0
    # mask_k = union of the cell groups within painter_cell_radius of k; its area and distance
    # sum are box sums of the per-cell histograms (no K x K matrix over all candidates)
    r = cfg.painter_cell_radius
    hist = torch.stack((counts_all.double(), cell_counts(code, gh * gw, ndist.double())))
    ones = torch.ones(1, 1, 2 * r + 1, 2 * r + 1, dtype=torch.float64, device=dev)
    box = F.conv2d(hist.view(2, 1, gh, gw), ones, padding=r).view(2, -1)[:, cand]  # exact sums
    area_all, score_all = box[0], 1.0 - box[1] / box[0]
    order = torch.sort(score_all, descending=True, stable=True).indices[: cfg.painter_pre_nms_topk]
    score, area = score_all[order], area_all[order]
    cnt = counts.double()
    pos = torch.stack((cand // gw, cand % gw), 1)
    # M[i, k']: cell group k' belongs to mask i (masks sorted by score; P <= pre_nms_topk)
    M = ((pos[order][:, None, :] - pos[None, :, :]).abs().amax(-1) <= r).double()
    inter = (M * cnt) @ M.T
    iou = inter / (area[:, None] + area[None, :] - inter)
    decayed = matrix_nms(iou, score, cfg.matrix_nms_sigma)
    sel = torch.sort(decayed, descending=True, stable=True).indices[: cfg.painter_max_instances]
    sel = sel[decayed[sel] >= cfg.painter_score_thresh]
    M, area = M[sel].bool(), area[sel]
    P = M.shape[0]
    # paste in order, skipping masks > overlap_thresh covered by pasted ones; exact sequential
    # result via the same fixed point as grid_nms (decision j depends only on decisions < j)
    accept = torch.ones(P, dtype=torch.bool, device=dev)
    for _ in range(P):
        claimed = torch.cumsum((M & accept[:, None]).long(), 0) - (M & accept[:, None]).long()
        covered = ((claimed > 0) & M).double() @ cnt
        new_accept = covered <= cfg.overlap_thresh * area
        if torch.equal(new_accept, accept):
            break
        accept = new_accept
    owned = M & accept[:, None]
    has_owner = owned.any(0)
    owner = owned.long().argmax(0)  # first accepted mask containing the cell group
    # masks that own nothing (fully covered but accepted: impossible unless empty) get no label
    used = torch.zeros(P, dtype=torch.bool, device=dev)
    used[owner[has_owner]] = True
    lut = torch.cumsum(used.long(), 0)
    group_label = torch.where(has_owner, lut[owner], torch.zeros_like(owner))
    return paint_cells(code, gh * gw, cand, group_label), int(used.sum())


_DECODER_FNS = {"nn": _nn_instances, "vote": _vote_instances, "painter": _painter_instances}


def instance_map_from_outputs(
    inst: torch.Tensor,
    encoding: CentroidEncoding,
    cfg: Optional[PostProcessConfig] = None,
    thing_pixels: Optional[torch.Tensor] = None,
    **overrides,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Class-agnostic instances of one image from ``inst [C, h, w]``.

    Returns ``inst_map [h, w]`` long (0 = no instance, ``1..M``) and ``scores [M]``
    (``1 - mean normalized decode distance``). ``cfg.decoder`` picks the decoder (module doc).
    ``thing_pixels``: see :func:`decode_cells` (required with ``cfg.void_source="semantic"``).
    """
    cfg = resolve_cfg(cfg, overrides)
    if cfg.void_source == "semantic" and thing_pixels is None:
        raise ValueError("void_source='semantic' needs thing_pixels (the semantic thing mask)")
    code, ndist = decode_cells(inst, encoding, cfg.grid, thing_pixels if cfg.void_source == "semantic" else None)
    return instances_from_cells(code, ndist, cfg)


def instances_from_cells(
    code: torch.Tensor, ndist: torch.Tensor, cfg: PostProcessConfig
) -> Tuple[torch.Tensor, torch.Tensor]:
    """The decoder ``cfg.decoder`` on a decoded cell map (:func:`pe_panoptic.postprocess.decode_cells`:
    ``code [h, w]``, ``-1`` = void, and ``ndist [h, w]``), then instances smaller than
    ``cfg.min_instance_area * h * w`` pixels dropped. Returns ``(inst_map [h, w], scores [M])``
    as :func:`instance_map_from_outputs`."""
    h, w = code.shape
    inst_map, num = _DECODER_FNS[cfg.decoder](code, ndist, cfg)
    return _relabel(inst_map, num, ndist, cfg.min_instance_area * h * w)
