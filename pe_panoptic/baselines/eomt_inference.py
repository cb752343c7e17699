"""EoMT's inference on one image's final logits, in detectron2's output format.

:func:`panoptic_inference` is transformers' ``EomtImageProcessor.post_process_panoptic_segmentation``
(itself upstream EoMT's / Mask2Former's): keep the queries whose class is not "no object" and
whose softmax score is > ``object_mask_threshold``; assign each pixel to the argmax over kept
queries of ``score x sigmoid(mask)``; a query keeps a segment if its argmax area, its mask
(``sigmoid >= mask_threshold``) and their intersection are non-empty and ``argmax area / mask
area > overlap_threshold``; its pixels are the intersection; stuff classes merge into one
segment (the first query's id and score). Vectorized: the validity of every query is computed
at once, the only loop runs over the kept queries' ids. ``tests/test_eomt.py`` checks equality
with transformers' function.

Output ids follow detectron2 (0 = void, segments 1..n) where transformers uses -1 and 0..n-1;
``category_id`` is the contiguous class id, ``isthing`` from the dataset metadata.
"""
from __future__ import annotations

from typing import Dict, Iterable, List, Tuple

import torch

__all__ = ["panoptic_inference", "semantic_inference"]


def semantic_inference(mask_logits: torch.Tensor, class_logits: torch.Tensor) -> torch.Tensor:
    """``[Q, H, W]`` mask logits, ``[Q, K + 1]`` class logits -> ``[K, H, W]`` class scores
    (``sum_q softmax(class)[:K] * sigmoid(mask)``, Mask2Former's / transformers')."""
    return torch.einsum("qc,qhw->chw", class_logits.softmax(-1)[:, :-1], mask_logits.sigmoid())


def panoptic_inference(mask_logits: torch.Tensor, class_logits: torch.Tensor, thing_ids: Iterable[int], *,
                       object_mask_threshold: float = 0.8, overlap_threshold: float = 0.8,
                       mask_threshold: float = 0.5) -> Tuple[torch.Tensor, List[Dict]]:
    """``[Q, H, W]`` mask logits (already at the output size), ``[Q, K + 1]`` class logits ->
    ``(panoptic ids [H, W] int32, segments_info)``."""
    if mask_logits.dim() != 3 or class_logits.dim() != 2 or mask_logits.shape[0] != class_logits.shape[0]:
        raise ValueError(f"panoptic_inference: expected masks [Q, H, W] and classes [Q, K + 1], got "
                         f"{tuple(mask_logits.shape)} and {tuple(class_logits.shape)}")
    num_void = class_logits.shape[-1] - 1
    scores, labels = class_logits.softmax(-1).max(-1)
    keep = labels.ne(num_void) & (scores > object_mask_threshold)
    H, W = mask_logits.shape[-2:]
    panoptic = torch.zeros((H, W), dtype=torch.int32, device=mask_logits.device)
    if not keep.any():
        return panoptic, []
    probs, scores, labels = mask_logits[keep].sigmoid(), scores[keep], labels[keep]
    owner = (scores[:, None, None] * probs).argmax(0)  # [H, W]: the kept query of each pixel
    n = probs.shape[0]
    own = owner[None] == torch.arange(n, device=owner.device)[:, None, None]  # [n, H, W]
    fg = probs >= mask_threshold
    own_area, mask_area = own.sum((1, 2)), fg.sum((1, 2))
    final_area = (own & fg).sum((1, 2))
    valid = (own_area > 0) & (mask_area > 0) & (final_area > 0)
    valid &= own_area.float() / mask_area.clamp(min=1).float() > overlap_threshold
    thing_ids = set(int(t) for t in thing_ids)
    segment_of_query = torch.zeros(n, dtype=torch.int32, device=owner.device)  # 0: no segment
    segments: List[Dict] = []
    stuff_segment: Dict[int, int] = {}
    for k in torch.nonzero(valid).flatten().tolist():
        cls = int(labels[k])
        if cls not in thing_ids and cls in stuff_segment:
            segment_of_query[k] = stuff_segment[cls]
            continue
        sid = len(segments) + 1
        if cls not in thing_ids:
            stuff_segment[cls] = sid
        segment_of_query[k] = sid
        segments.append({"id": sid, "category_id": cls, "isthing": cls in thing_ids,
                         "score": round(float(scores[k]), 6)})
    pixel_fg = fg.gather(0, owner[None])[0]
    panoptic = torch.where(pixel_fg, segment_of_query[owner], panoptic)
    return panoptic, segments
