"""Analyses behind the paper's rationale (Sec. 4) and ablation plots (Figs. 3-5).

Two independent parts, pure functions on tensors / arrays (the tools ``tools/analyze_encoding.py``
and ``tools/analyze_sizes.py`` add I/O, tables and plots):

**Encoding contrast** (paper_v1 Sec. 4 / Fig. 3, ICML Sec. 4 "Imbalance due to difference in the
scale of the loss"). For one coordinate ``u`` on a grid of ``n`` cells, the distance from the
right-most position to every other grid position and to the void code, in the metric of the
encoding's loss, and the *contrast ratio* max / min over the other positions. The paper reports
~79 for direct regression (L1) and ~5 for PE with L = 4 on an 80-cell grid.

Which "u = 1"? The right-most position is the **center of the last cell**, ``u0 = 1 - 1/n``
(:func:`pe_panoptic.encoding.grid_centers`, the positions the decoder can output), and the other
positions are the remaining ``n - 1`` cell centers. That reproduces the paper: exactly 79 for L1
(distances ``k / n``, ``k = 1..79``, in the RGB code's [0, 1] units) and 4.91 for L = 4. The
alternatives do not: measuring from exactly ``u = 1.0`` to the ``n`` cell centers gives 159 (L1)
and 9.74 (L = 4); ``linspace(-1, 1, n)`` makes the ratio infinite for PE, because ``gamma`` has
period 2 and ``gamma(-1) = gamma(1)``.

Per axis: the PE loss (Eq. 4) is ``(||d_u|| + ||d_v||) / 2``; one axis contributes ``||d_u||``
over its ``2L`` channels ``gamma(u)``, and the void code of that block is 0, so the void distance
is ``||gamma(u0)|| = sqrt(L)``. Direct regression (Painter's RGB code, L1 loss) uses channel
``(u + 1) / 2`` whose void value is 0; the void distance is ``(u0 + 1) / 2`` (the third, "is
instance" channel is shared by both axes and left out).

**Instance quality by object size** (paper Figs. 4 and 5). Predicted thing segments are matched
to ground-truth thing segments by IoU > 0.5 (unique, as in PQ); the IoU follows panopticapi's
``pq_compute``: predicted pixels on ground-truth void (id 0) are removed from the union, crowd
segments never match. Matching is class-agnostic by default (the figures evaluate the
class-agnostic instance head); ``same_category=True`` requires equal categories, as PQ. Every
non-crowd ground-truth thing segment contributes one value to the bin of its area (pixels of the
ground-truth map): its matched IoU, and for an unmatched segment either 0 (``unmatched="zero"``,
default: a missed object counts as a failure) or the largest IoU with any predicted thing segment
(``unmatched="max"``: graded overlap quality even below 0.5). The per-bin mean of these values is
the "mean IoU of matched instances" of the figures; the relative improvement of model B over A is
``mIoU_B / mIoU_A - 1``.
"""
from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass
from typing import Dict, Iterable, List, Mapping, Sequence, Tuple

import numpy as np
import torch

from pe_panoptic.encoding import CentroidEncoding, PositionalEncoding, RGBEncoding, grid_centers

__all__ = [
    "parse_encoding_spec",
    "axis_codes",
    "EncodingContrast",
    "encoding_contrast",
    "DEFAULT_AREA_BINS",
    "InstanceIoUs",
    "instance_ious",
    "binned_mean_iou",
    "relative_improvement",
    "panoptic_json_predictions",
    "segments_with_contiguous_ids",
    "segments_with_isthing",
]


# ============================================================================================
# encoding contrast (paper_v1 Fig. 3)
# ============================================================================================

_PE_SPEC = re.compile(r"^pe(\d+)$")


def parse_encoding_spec(spec: str) -> CentroidEncoding:
    """``"rgb"`` (direct regression) or ``"peL"`` (PE with L harmonics, e.g. ``"pe4"``)."""
    s = str(spec).strip().lower()
    if s == "rgb":
        return RGBEncoding()
    m = _PE_SPEC.match(s)
    if m:
        return PositionalEncoding(int(m.group(1)))
    raise ValueError(f"encoding spec {spec!r}: use 'rgb' (direct regression) or 'peL' with L in 1..16, e.g. 'pe4'")


def _axis_block(encoding: CentroidEncoding) -> Tuple[slice, float]:
    """Channels of the u axis in ``encoding.encode`` and the norm order of its loss."""
    return encoding.axis_channels(), float(encoding.metric_p)


def axis_codes(encoding: CentroidEncoding, u: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Codes of the u axis alone: ``(codes [K, c], void [c])``; ``c = 2L`` for PE (``gamma(u)``,
    Eq. 3), 1 for direct regression (``(u + 1) / 2``)."""
    block, _ = _axis_block(encoding)
    uv = torch.stack((u, torch.zeros_like(u)), -1)
    return encoding.encode(uv)[:, block], encoding.void_code(u.device, u.dtype)[block]


@dataclass
class EncodingContrast:
    """Distances from the right-most grid position ``reference`` (see module doc)."""

    name: str
    grid: int
    reference: float
    positions: torch.Tensor  # [n - 1] the other cell centers
    distances: torch.Tensor  # [n - 1]
    void_distance: float

    @property
    def min_distance(self) -> float:
        return float(self.distances.min())

    @property
    def max_distance(self) -> float:
        return float(self.distances.max())

    @property
    def contrast_ratio(self) -> float:
        """Longest / shortest distance to another grid position (paper: ~79 L1, ~5 PE L = 4)."""
        return self.max_distance / self.min_distance

    @property
    def closer_than_void(self) -> int:
        """Grid positions nearer to the reference than the void code is (ties, up to 1e-9, do
        not count: for PE the position 1 away from the reference is exactly 2 away, as the
        void code is for L = 4)."""
        return int((self.distances < self.void_distance - 1e-9).sum())

    def summary(self) -> dict:
        return {
            "grid": self.grid,
            "reference_u": self.reference,
            "min_distance": self.min_distance,
            "max_distance": self.max_distance,
            "contrast_ratio": self.contrast_ratio,
            "void_distance": self.void_distance,
            "closer_than_void": self.closer_than_void,
        }


def encoding_contrast(spec: str, grid: int = 80) -> EncodingContrast:
    """Per-axis distances of encoding ``spec`` (:func:`parse_encoding_spec`) on a ``grid``-cell
    axis from the last cell center ``u0 = 1 - 1/grid`` to the other centers and to the void code,
    in float64 (Euclidean for PE, L1 for direct regression)."""
    grid = int(grid)
    if grid < 2:
        raise ValueError(f"grid must be >= 2 cells, got {grid}")
    encoding = parse_encoding_spec(spec)
    _, p = _axis_block(encoding)
    u = grid_centers(grid, dtype=torch.float64)
    codes, void = axis_codes(encoding, u)
    ref = codes[-1]
    dist = torch.linalg.vector_norm(codes[:-1] - ref, ord=p, dim=1)
    void_dist = float(torch.linalg.vector_norm(void - ref, ord=p))
    return EncodingContrast(str(spec).lower(), grid, float(u[-1]), u[:-1], dist, void_dist)


# ============================================================================================
# instance IoU by object size (paper Figs. 4 / 5)
# ============================================================================================

#: area bin edges in pixels: sqrt(area) at 16, 32, 64, 96, 128, 256 px
DEFAULT_AREA_BINS: Tuple[float, ...] = (0.0, 16.0**2, 32.0**2, 64.0**2, 96.0**2, 128.0**2, 256.0**2, math.inf)


@dataclass
class InstanceIoUs:
    """One entry per non-crowd ground-truth thing segment of one image."""

    gt_ids: np.ndarray  # [G] segment ids in the ground-truth map
    areas: np.ndarray  # [G] pixels
    ious: np.ndarray  # [G] value entering the mean (module doc)
    matched: np.ndarray  # [G] bool, IoU > 0.5 with some predicted thing segment
    num_pred: int  # predicted thing segments in the image


def _segment_lut(ids: np.ndarray, wanted: np.ndarray, fill: int) -> np.ndarray:
    """Index of each element of ``ids`` in ``wanted`` (``fill`` where absent)."""
    if len(wanted) == 0:
        return np.full(ids.shape, fill, dtype=np.int64)
    order = np.argsort(wanted, kind="stable")
    srt = wanted[order]
    pos = np.minimum(np.searchsorted(srt, ids), len(srt) - 1)
    return np.where(srt[pos] == ids, order[pos], fill)


def _check_ids(pan: np.ndarray, segments: Sequence[Mapping], what: str) -> np.ndarray:
    pan = np.asarray(pan)
    if pan.ndim != 2 or not np.issubdtype(pan.dtype, np.integer):
        raise ValueError(f"{what}: panoptic id map must be a 2-D integer array, got {pan.dtype} {pan.shape}")
    for s in segments:
        if "id" not in s or "isthing" not in s or "category_id" not in s:
            raise ValueError(f"{what}: segments_info entries need 'id', 'category_id' and 'isthing', got {dict(s)}")
    ids = np.array([int(s["id"]) for s in segments], dtype=np.int64)
    present = np.unique(pan)
    extra = np.setdiff1d(present[present != 0], ids)
    if len(extra):
        raise ValueError(f"{what}: ids {extra[:10].tolist()} of the panoptic map are not in segments_info")
    return ids


def instance_ious(
    gt: np.ndarray,
    gt_segments: Sequence[Mapping],
    pred: np.ndarray,
    pred_segments: Sequence[Mapping],
    *,
    same_category: bool = False,
    unmatched: str = "zero",
    name: str = "image",
) -> InstanceIoUs:
    """Match predicted to ground-truth thing segments of one image (module doc; vectorized
    through one joint histogram of (gt segment, predicted segment) pixel pairs).

    ``gt`` / ``pred``: ``[H, W]`` panoptic id maps (0 = void); segments: dicts with ``id``,
    ``category_id`` and ``isthing`` (ground truth also ``iscrowd``), category ids in one id
    space. ``name`` only labels error messages.
    """
    if unmatched not in ("zero", "max"):
        raise ValueError(f"unmatched must be 'zero' or 'max', got {unmatched!r}")
    gt, pred = np.asarray(gt), np.asarray(pred)
    if gt.shape != pred.shape:
        raise ValueError(f"{name}: prediction {pred.shape} and ground truth {gt.shape} differ in size")
    gt_all = _check_ids(gt, gt_segments, f"{name} (ground truth)")
    pr_all = _check_ids(pred, pred_segments, f"{name} (prediction)")
    g_keep = np.array([bool(s["isthing"]) and not bool(s.get("iscrowd", 0)) for s in gt_segments], dtype=bool)
    p_keep = np.array([bool(s["isthing"]) for s in pred_segments], dtype=bool)
    g_ids, p_ids = gt_all[g_keep], pr_all[p_keep]
    G, P = len(g_ids), len(p_ids)
    # rows: gt things 0..G-1, G = everything else labelled, G + 1 = void; cols: pred things, P = rest
    g_idx = _segment_lut(gt.ravel().astype(np.int64), g_ids, G)
    g_idx = np.where(gt.ravel() == 0, G + 1, g_idx)
    p_idx = _segment_lut(pred.ravel().astype(np.int64), p_ids, P)
    joint = np.bincount(g_idx * (P + 1) + p_idx, minlength=(G + 2) * (P + 1)).reshape(G + 2, P + 1)
    inter = joint[:G, :P].astype(np.float64)
    g_area = joint[:G].sum(1).astype(np.float64)
    p_area = joint[:, :P].sum(0).astype(np.float64)
    union = g_area[:, None] + p_area[None, :] - inter - joint[G + 1, :P][None, :]
    iou = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
    if same_category and G and P:
        gc = np.array([int(s["category_id"]) for s in gt_segments])[g_keep]
        pc = np.array([int(s["category_id"]) for s in pred_segments])[p_keep]
        iou = np.where(gc[:, None] == pc[None, :], iou, 0.0)
    best = iou.max(1) if P else np.zeros(G)
    matched = best > 0.5
    value = best if unmatched == "max" else np.where(matched, best, 0.0)
    return InstanceIoUs(g_ids, g_area, value, matched, P)


def binned_mean_iou(
    areas: np.ndarray, ious: np.ndarray, bins: Sequence[float] = DEFAULT_AREA_BINS
) -> Tuple[np.ndarray, np.ndarray]:
    """Mean of ``ious`` per area bin ``[bins[i], bins[i+1])`` and the count per bin (NaN mean
    for an empty bin)."""
    edges = np.asarray(bins, dtype=np.float64)
    if edges.ndim != 1 or len(edges) < 2 or np.any(np.diff(edges) <= 0):
        raise ValueError(f"area bins must be >= 2 strictly increasing edges, got {list(bins)}")
    areas, ious = np.asarray(areas, np.float64), np.asarray(ious, np.float64)
    b = np.searchsorted(edges, areas, side="right") - 1
    inside = (b >= 0) & (b < len(edges) - 1)
    nb = len(edges) - 1
    count = np.bincount(b[inside], minlength=nb)
    total = np.bincount(b[inside], weights=ious[inside], minlength=nb)
    mean = np.divide(total, count, out=np.full(nb, np.nan), where=count > 0)
    return mean, count


def relative_improvement(base: np.ndarray, new: np.ndarray) -> np.ndarray:
    """``new / base - 1`` per bin (NaN where the base is 0 or NaN)."""
    base, new = np.asarray(base, np.float64), np.asarray(new, np.float64)
    ok = np.isfinite(base) & (base > 0) & np.isfinite(new)
    return np.divide(new - base, base, out=np.full(base.shape, np.nan), where=ok)


# ============================================================================================
# prediction dumps in COCO panoptic format
# ============================================================================================


def segments_with_contiguous_ids(segments: Iterable[Mapping], metadata) -> List[dict]:
    """COCO panoptic ``segments_info`` (dataset category ids) -> contiguous ids + ``isthing``
    through a detectron2 panoptic metadata (thing map first, as detectron2's loader)."""
    things = dict(metadata.thing_dataset_id_to_contiguous_id)
    stuff = dict(getattr(metadata, "stuff_dataset_id_to_contiguous_id", {}))
    out = []
    for s in segments:
        cat = int(s["category_id"])
        if cat in things:
            out.append(dict(s, category_id=things[cat], isthing=True))
        elif cat in stuff:
            out.append(dict(s, category_id=stuff[cat], isthing=False))
        else:
            raise ValueError(f"segment {s.get('id')}: category_id {cat} is not a category of the dataset")
    return out


def segments_with_isthing(segments: Iterable[Mapping], metadata) -> List[dict]:
    """Ground-truth ``segments_info`` (contiguous ids) with ``isthing`` added where missing
    (detectron2's Cityscapes panoptic dicts have none): ``category_id`` among the contiguous ids
    of ``metadata.thing_dataset_id_to_contiguous_id``."""
    things = set(int(v) for v in metadata.thing_dataset_id_to_contiguous_id.values())
    return [dict(s) if "isthing" in s else dict(s, isthing=int(s["category_id"]) in things) for s in segments]


def panoptic_json_predictions(pred_json: str, pred_dir: str) -> Dict[str, dict]:
    """Index a COCO panoptic prediction dump (``predictions.json`` as written by detectron2's
    ``COCOPanopticEvaluator`` + the folder of its PNGs): ``{key: annotation}`` where key is the
    ``image_id`` (as a string) and, too, the PNG file stem; every annotation gets ``png_path``."""
    if not os.path.isfile(pred_json):
        raise FileNotFoundError(f"prediction JSON not found: {pred_json!r}")
    if not os.path.isdir(pred_dir):
        raise FileNotFoundError(f"prediction PNG folder not found: {pred_dir!r}")
    with open(pred_json) as f:
        data = json.load(f)
    anns = data.get("annotations") if isinstance(data, dict) else None
    if not isinstance(anns, list):
        raise ValueError(f"{pred_json}: expected a COCO panoptic JSON with an 'annotations' list")
    index: Dict[str, dict] = {}
    for a in anns:
        if "file_name" not in a or "segments_info" not in a:
            raise ValueError(f"{pred_json}: annotation without 'file_name'/'segments_info': {sorted(a)}")
        a = dict(a, png_path=os.path.join(pred_dir, a["file_name"]))
        index[str(a.get("image_id"))] = a
        index[os.path.splitext(os.path.basename(a["file_name"]))[0]] = a
    return index
