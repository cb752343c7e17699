"""The naive post-processing reference of ``tools/benchmark.py postprocess``.

:func:`naive_painter_instances` is the brute-force reference decoder the post-processing is
compared with: a full ``gh * gw``-way nearest-neighbour search per pixel
(:func:`pe_panoptic.postprocess.naive_decode`), Painter-style per-colour thresholding into dense
``K x h x w`` masks, SOLOv2 Matrix NMS on dense mask IoUs and sequential pasting. It implements
the same rules as the ``"painter"`` decoder of :mod:`pe_panoptic.postprocess`, so both give the
same instances (a test checks it).
"""
from __future__ import annotations

from typing import Iterable, Optional, Tuple

import torch

from pe_panoptic.encoding import CentroidEncoding
from pe_panoptic.postprocess import (
    PostProcessConfig,
    decode_scale,
    matrix_nms,
    merge_instances_and_semantics,
    naive_decode,
)

__all__ = ["naive_painter_instances", "naive_panoptic"]


def naive_painter_instances(
    inst: torch.Tensor, encoding: CentroidEncoding, cfg: Optional[PostProcessConfig] = None
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Brute-force class-agnostic instances of one image (the reference for timing and testing).

    1. every pixel against all ``gh * gw`` grid codes and the void code
       (:func:`pe_panoptic.postprocess.naive_decode`);
    2. one candidate per decoded colour (grid cell) ``k``; its dense mask thresholds every pixel
       against the colour: decoded cell within ``painter_cell_radius`` cells (Chebyshev) of
       ``k``; score ``1 - mean normalized decode distance`` over the mask;
    3. top ``painter_pre_nms_topk`` by score, SOLOv2 Matrix NMS on the dense mask IoUs
       (``K x hw @ hw x K``), top ``painter_max_instances`` by decayed score;
    4. paste the masks one by one in decayed-score order, skipping a mask more than
       ``overlap_thresh`` covered by the pixels already pasted;
    5. drop instances under ``min_instance_area`` (fraction of ``h * w``), renumber ``1..M``.

    Returns ``inst_map [h, w]`` long and ``scores [M]``, like
    :func:`pe_panoptic.postprocess.instance_map_from_outputs` with ``decoder="painter"``.
    """
    cfg = cfg or PostProcessConfig(decoder="painter")
    gh, gw = cfg.grid
    _, h, w = inst.shape
    dev = inst.device
    dec = naive_decode(inst, encoding, cfg.grid)
    iu, iv, void = dec.iu.reshape(-1), dec.iv.reshape(-1), dec.void.reshape(-1)
    ndist = (dec.dist.reshape(-1).float() / decode_scale(encoding)).clamp(0.0, 1.0)
    valid = ~void
    colours = torch.unique((iv * gw + iu)[valid])
    label = torch.zeros(h * w, dtype=torch.long, device=dev)
    if colours.numel() == 0:
        return label.view(h, w), torch.zeros(0, device=dev)
    r = cfg.painter_cell_radius
    masks = (
        ((iv[None] - (colours // gw)[:, None]).abs() <= r)
        & ((iu[None] - (colours % gw)[:, None]).abs() <= r)
        & valid[None]
    )  # K x hw, dense
    mf = masks.double()
    area = mf.sum(1)
    score = 1.0 - (mf @ ndist.double()) / area
    order = torch.sort(score, descending=True, stable=True).indices[: cfg.painter_pre_nms_topk]
    mf, score, area = mf[order], score[order], area[order]
    inter = mf @ mf.T
    iou = inter / (area[:, None] + area[None, :] - inter)
    decayed = matrix_nms(iou, score, cfg.matrix_nms_sigma)
    sel = torch.sort(decayed, descending=True, stable=True).indices[: cfg.painter_max_instances]
    sel = sel[decayed[sel] >= cfg.painter_score_thresh]
    n = 0
    for i in sel.tolist():
        m = masks[order[i]]
        if float((m & (label > 0)).sum()) > cfg.overlap_thresh * float(area[i]):
            continue
        new = m & (label == 0)
        if bool(new.any()):
            n += 1
            label[new] = n
    counts = torch.bincount(label, minlength=n + 1)[1:]
    dsum = torch.bincount(label, weights=ndist.double(), minlength=n + 1)[1:]
    keep = counts >= cfg.min_instance_area * h * w
    lut = torch.zeros(n + 1, dtype=torch.long, device=dev)
    lut[1:][keep] = torch.arange(1, int(keep.sum()) + 1, device=dev)
    scores = (1.0 - dsum[keep] / counts[keep].clamp_min(1)).float()
    return lut[label].view(h, w), scores


def naive_panoptic(
    sem_logits: torch.Tensor, inst: torch.Tensor, encoding: CentroidEncoding, thing_ids: Iterable[int],
    cfg: Optional[PostProcessConfig] = None,
):
    """:func:`naive_painter_instances` + the panoptic merge of :mod:`pe_panoptic.postprocess`."""
    cfg = cfg or PostProcessConfig(decoder="painter")
    inst_map, scores = naive_painter_instances(inst, encoding, cfg)
    return merge_instances_and_semantics(
        inst_map, scores, sem_logits, list(thing_ids), cfg.thing_fraction, cfg.min_stuff_area
    )

