"""Training targets from a panoptic id map: semantic classes, instance centroids, EDS weights.

Pure functions on numpy arrays (no detectron2). Resolutions:

* the **input** frame is the network input image (after augmentation and padding), ``H x W``;
  panoptic ids, centroids and the EDS scale ``D`` live there;
* the **output** frame is the network's prediction, ``h x w = H * 8/14 x W * 8/14`` (paper
  Sec. 5.1); every returned target lives there. The id map is sampled at the centers of the
  output pixels (nearest), see :func:`sample_at_output`.

Centroids are normalized with :func:`pe_panoptic.encoding.normalize_coords` and the input size,
so ``inst_uv`` is what :meth:`pe_panoptic.encoding.CentroidEncoding.targets` expects.
"""
from __future__ import annotations

import functools
from typing import Dict, Iterable, Mapping, Sequence, Tuple, Union

import numpy as np
import torch
from scipy import ndimage

from pe_panoptic.encoding import normalize_coords

__all__ = [
    "segment_boundaries",
    "eds_weights",
    "boundary_distance",
    "instance_centroids",
    "output_sample_indices",
    "sample_at_output",
    "panoptic_targets",
]

Scale = Union[float, Tuple[float, float]]


def segment_boundaries(label_map: np.ndarray) -> np.ndarray:
    """Boolean map of boundary pixels: a pixel whose 4-neighbour (inside the map) has a different
    label. Both sides of a label change are boundary pixels; the image border is not a boundary."""
    label_map = np.asarray(label_map)
    if label_map.ndim != 2:
        raise ValueError(f"label_map must be 2-D [H, W], got shape {label_map.shape}")
    b = np.zeros(label_map.shape, dtype=bool)
    dv = label_map[1:, :] != label_map[:-1, :]
    b[1:, :] |= dv
    b[:-1, :] |= dv
    dh = label_map[:, 1:] != label_map[:, :-1]
    b[:, 1:] |= dh
    b[:, :-1] |= dh
    return b


def eds_weights(label_map: np.ndarray, D: float, w_min: float = 0.0, pixel_scale: Scale = 1.0) -> np.ndarray:
    """Edge Distance Sampling weights (paper Eq. 5): ``w = w_min + (1 - w_min) exp(-d^2 / D^2)``.

    ``d`` is the Euclidean distance from a pixel to the nearest boundary pixel of ``label_map``
    (:func:`segment_boundaries`; boundary pixels have ``d = 0``), computed by
    :func:`scipy.ndimage.distance_transform_edt`.

    Units: ``D`` is measured in pixels of the **network input** image (the paper's ``D = 20``),
    while targets live at the output resolution (input * 8/14). ``pixel_scale`` is the size of one
    ``label_map`` pixel in units of ``D``, i.e. ``input_size / output_size`` (1.75 for the
    paper's decoder); a pair ``(sy, sx)`` gives anisotropic pixels. A map without any boundary
    gets ``w_min`` everywhere.

    Returns float32 ``[H, W]`` in ``[w_min, 1]``.
    """
    if not D > 0:
        raise ValueError(f"eds D must be > 0, got {D}")
    if not 0.0 <= w_min <= 1.0:
        raise ValueError(f"eds w_min must be in [0, 1], got {w_min}")
    scale = np.broadcast_to(np.asarray(pixel_scale, dtype=np.float64), (2,))
    if not np.all(scale > 0):
        raise ValueError(f"pixel_scale must be > 0, got {pixel_scale}")
    boundary = segment_boundaries(label_map)
    if not boundary.any():
        return np.full(boundary.shape, w_min, dtype=np.float32)
    d = boundary_distance(boundary, (float(scale[0]), float(scale[1])))
    w = w_min + (1.0 - w_min) * np.exp(-np.square(d / D))
    return w.astype(np.float32)


def boundary_distance(boundary: np.ndarray, sampling: Tuple[float, float] = (1.0, 1.0)) -> np.ndarray:
    """Euclidean distance (float64, in units of ``sampling``) from every pixel to the nearest
    ``True`` pixel of ``boundary``; same values as
    ``scipy.ndimage.distance_transform_edt(~boundary, sampling=sampling)``.

    Square pixels use OpenCV's exact Euclidean transform (``DIST_MASK_PRECISE``, Felzenszwalb &
    Huttenlocher; 2-4x faster than scipy's): its float32 output is the square root of an integer
    squared distance ``n`` that is recovered exactly while ``n < 2^22``, and ``sqrt(n * s^2)``
    then repeats scipy's float64 arithmetic (exactly so when ``s * dy`` is exact, e.g. s = 1.75).
    Other cases (anisotropic pixels, maps over ~1400 px) use scipy.
    """
    h, w = boundary.shape
    sy, sx = sampling
    if sy == sx and h * h + w * w < (1 << 22):
        import cv2

        d32 = cv2.distanceTransform((~boundary).view(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
        n = np.rint(np.square(d32, dtype=np.float64))
        return np.sqrt(n * (sy * sy))
    return ndimage.distance_transform_edt(~boundary, sampling=(sy, sx))


@functools.lru_cache(maxsize=8)
def _pixel_coords(H: int, W: int) -> Tuple[np.ndarray, np.ndarray]:
    """Flattened x and y coordinates (float64, read-only) of an ``H x W`` map, cached per size."""
    xs = np.broadcast_to(np.arange(W, dtype=np.float64), (H, W)).ravel()
    ys = np.repeat(np.arange(H, dtype=np.float64), W)
    xs.flags.writeable = ys.flags.writeable = False
    return xs, ys


#: ids below this (and below the pixel count) are counted with histograms instead of sorted
_DENSE_IDS = 1 << 16


def _unique_stats(pan_ids: np.ndarray):
    """Unique ids, inverse index map [H, W], pixel counts and coordinate sums per unique id.

    Small non-negative ids (e.g. the mapper's compact labels) take a histogram path (bincount
    + look-up table, no sort); it returns exactly what ``np.unique(..., return_inverse=True)``
    and bincounts over the inverse give (per-id sums accumulate the same pixels in the same
    order)."""
    H, W = pan_ids.shape
    flat = pan_ids.ravel()
    xs, ys = _pixel_coords(H, W)
    if flat.size and flat.min() >= 0 and flat.max() < max(_DENSE_IDS, flat.size):
        m = int(flat.max()) + 1
        counts = np.bincount(flat, minlength=m)
        uniq = np.flatnonzero(counts)
        lut = np.zeros(m, dtype=np.intp)
        lut[uniq] = np.arange(len(uniq))
        sum_x = np.bincount(flat, weights=xs, minlength=m)[uniq]
        sum_y = np.bincount(flat, weights=ys, minlength=m)[uniq]
        return uniq.astype(pan_ids.dtype), lut[pan_ids], counts[uniq], sum_x, sum_y
    uniq, inv = np.unique(pan_ids, return_inverse=True)
    inv = inv.reshape(pan_ids.shape)
    n = len(uniq)
    counts = np.bincount(inv.ravel(), minlength=n)
    sum_x = np.bincount(inv.ravel(), weights=xs, minlength=n)
    sum_y = np.bincount(inv.ravel(), weights=ys, minlength=n)
    return uniq, inv, counts, sum_x, sum_y


def _lookup(sorted_keys: np.ndarray, ids: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Position of each of ``ids`` in the sorted array ``sorted_keys`` and whether it is there."""
    ids = np.asarray(ids)
    if len(sorted_keys) == 0:
        return np.zeros(ids.shape, np.int64), np.zeros(ids.shape, bool)
    pos = np.minimum(np.searchsorted(sorted_keys, ids), len(sorted_keys) - 1)
    return pos, sorted_keys[pos] == ids


def instance_centroids(pan_ids: np.ndarray, segment_ids: Sequence[int]) -> np.ndarray:
    """Center of mass ``(cx, cy)`` in pixels (0-based, pixel centers) of each segment id, ``[K, 2]``
    float64 (np.bincount over the id map). Segments without pixels get NaN."""
    pan_ids = np.asarray(pan_ids)
    if pan_ids.ndim != 2:
        raise ValueError(f"pan_ids must be 2-D [H, W], got shape {pan_ids.shape}")
    segment_ids = np.asarray(segment_ids, dtype=np.int64).reshape(-1)
    uniq, _, counts, sum_x, sum_y = _unique_stats(pan_ids)
    pos, found = _lookup(uniq.astype(np.int64), segment_ids)
    out = np.full((len(segment_ids), 2), np.nan)
    c = counts[pos[found]]
    out[found, 0] = sum_x[pos[found]] / c
    out[found, 1] = sum_y[pos[found]] / c
    return out


def output_sample_indices(in_size: int, out_size: int) -> np.ndarray:
    """Input pixel (0-based) under the center of each output pixel along one axis:
    ``floor((j + 0.5) * in_size / out_size)`` (e.g. 7 -> 4: ``[0, 2, 4, 6]``)."""
    j = np.arange(out_size, dtype=np.float64)
    return np.clip(np.floor((j + 0.5) * in_size / out_size).astype(np.int64), 0, in_size - 1)


def sample_at_output(x: np.ndarray, output_hw: Tuple[int, int]) -> np.ndarray:
    """Nearest sampling of a 2-D map at the centers of an ``output_hw`` grid (vectorized gather)."""
    H, W = x.shape[:2]
    ys = output_sample_indices(H, output_hw[0])
    xs = output_sample_indices(W, output_hw[1])
    return x[ys[:, None], xs[None, :]]


def _segment_table(segments_info: Iterable[Mapping], ignore_label: int):
    """Arrays (ids, category, iscrowd, isthing) from ``segments_info``, validated."""
    segs = list(segments_info)
    try:
        ids = np.array([int(s["id"]) for s in segs], dtype=np.int64)
        cats = np.array([int(s["category_id"]) for s in segs], dtype=np.int64)
        crowd = np.array([bool(s.get("iscrowd", 0)) for s in segs], dtype=bool)
        thing = np.array([bool(s["isthing"]) for s in segs], dtype=bool)
    except KeyError as e:
        raise ValueError(f"segments_info entries need 'id', 'category_id' and 'isthing'; missing {e}") from None
    if len(segs) and (ids <= 0).any():
        raise ValueError(f"segments_info ids must be > 0 (0 = unlabeled), got {ids[ids <= 0].tolist()}")
    if len(np.unique(ids)) != len(ids):
        raise ValueError(f"segments_info has duplicate ids: {ids.tolist()}")
    bad = (cats < 0) | (cats == ignore_label)
    if bad.any():
        raise ValueError(
            f"segments_info category_id must be contiguous (>= 0, != ignore_label={ignore_label}), "
            f"got {sorted(set(cats[bad].tolist()))}"
        )
    return ids, cats, crowd, thing


def panoptic_targets(
    pan_ids: np.ndarray,
    segments_info: Sequence[Mapping],
    *,
    input_hw: Tuple[int, int],
    output_hw: Tuple[int, int],
    ignore_label: int = 255,
    eds_D: float = 20.0,
    eds_w_min: float = 0.0,
    use_eds: bool = True,
    include_void: bool = True,
    void_weight: float = 1.0,
) -> Dict[str, torch.Tensor]:
    """Per-pixel training targets at ``output_hw`` from the panoptic id map at ``input_hw``.

    ``pan_ids`` [H, W] int: panoptic ids of the (augmented, padded) network input, 0 = unlabeled.
    ``segments_info``: dicts with ``id``, contiguous ``category_id``, ``iscrowd``, ``isthing``.
    Every nonzero id of ``pan_ids`` must be in ``segments_info`` (segments of ``segments_info``
    without pixels, e.g. cropped away, are fine).

    Returns (all at output resolution ``h x w``):

    * ``sem_seg`` [h, w] int64: class per pixel, ``ignore_label`` where unlabeled; crowd regions
      keep their class (as detectron2 / Panoptic-DeepLab).
    * ``inst_uv`` [2, h, w] float32: normalized centroid (u, v) (paper Eq. 2) of the thing
      instance of the pixel, its center of mass at **input** resolution normalized by the input
      size; 0 elsewhere.
    * ``inst_valid`` [h, w] bool: pixel of a non-crowd thing instance.
    * ``inst_ids`` [h, w] int64: instance index 1..K, 0 elsewhere; compact over the instances that
      have at least one output pixel (ordered by segment id), so ``K = inst_ids.max()``.
    * ``inst_weight`` [h, w] float32: EDS weights (Eq. 5) of the instance map (stuff/unlabeled
      = one label, each instance and each crowd region its own label), or 1 without EDS; 0 on
      void (non-instance) pixels if ``include_void=False`` (paper_v1 Table 2), scaled by
      ``void_weight`` there otherwise (1 = the paper; the void study of docs/experiments.md
      varies it); always 0 on crowd
      pixels: a crowd region is many unlabeled instances, so neither an instance code nor the void
      code is a correct target there and it is ignored by the instance losses.
    * ``sem_weight`` [h, w] float32: EDS weights of the panoptic segment map (each segment and
      the unlabeled region its own label), or 1 without EDS; 0 where ``sem_seg == ignore_label``.

    ``eds_D`` is in input pixels (the distance transform uses ``pixel_scale = input / output``).
    The output may be smaller than the input (ICML decoder: 8/14) or larger (paper_v1's decoder
    with a 4th upsampling: 16/14); either way each output pixel takes the input pixel under its
    center (nearest), and centroids are computed at input resolution.
    """
    pan_ids = np.asarray(pan_ids)
    H, W = (int(v) for v in input_hw)
    h, w = (int(v) for v in output_hw)
    if pan_ids.ndim != 2 or pan_ids.shape != (H, W):
        raise ValueError(f"pan_ids has shape {pan_ids.shape}, expected input_hw {(H, W)}")
    if not (h > 0 and w > 0):
        raise ValueError(f"output_hw {output_hw} must be positive")
    if not np.issubdtype(pan_ids.dtype, np.integer):
        raise ValueError(f"pan_ids must be an integer array, got dtype {pan_ids.dtype}")
    pan_ids = pan_ids.astype(np.int64, copy=False)
    seg_ids, seg_cat, seg_crowd, seg_thing = _segment_table(segments_info, ignore_label)

    # ---- per unique id of the map (LUT), at input resolution ----
    uniq, inv, counts, sum_x, sum_y = _unique_stats(pan_ids)
    order = np.argsort(seg_ids)
    pos, found = _lookup(seg_ids[order], uniq)
    labeled = uniq != 0
    unknown = labeled & ~found
    if unknown.any():
        raise ValueError(f"pan_ids contains ids not in segments_info: {uniq[unknown][:20].tolist()}")
    seg_of = np.full(len(uniq), -1, dtype=np.int64)  # index into segments_info; -1 = unlabeled
    seg_of[labeled] = order[pos[labeled]]
    lab = seg_of >= 0
    cls_lut = np.full(len(uniq), ignore_label, dtype=np.int64)
    cls_lut[lab] = seg_cat[seg_of[lab]]
    crowd_lut = np.zeros(len(uniq), bool)
    crowd_lut[lab] = seg_crowd[seg_of[lab]]
    inst_lut = np.zeros(len(uniq), bool)
    inst_lut[lab] = seg_thing[seg_of[lab]] & ~seg_crowd[seg_of[lab]]
    # centroids (paper Eq. 2): center of mass at input resolution, normalized by the input size
    cnt = np.maximum(counts, 1)
    u_lut = np.where(inst_lut, normalize_coords(sum_x / cnt, W), 0.0)
    v_lut = np.where(inst_lut, normalize_coords(sum_y / cnt, H), 0.0)

    # ---- sample the LUT index at output pixel centers and gather ----
    idx = sample_at_output(inv, (h, w))
    # instance index 1..K, compact over the instances that have output pixels, in id order
    visible = np.bincount(idx.ravel(), minlength=len(uniq)) > 0
    inst_index_lut = np.where(inst_lut & visible, np.cumsum(inst_lut & visible), 0)
    # instance label map for EDS: instances 1..K, each crowd region K+1.., stuff/void 0
    k = int((inst_lut & visible).sum())
    eds_inst_lut = np.where(crowd_lut, k + np.cumsum(crowd_lut), inst_index_lut)
    sem_seg = cls_lut[idx]
    inst_valid = inst_lut[idx]
    crowd = crowd_lut[idx]
    inst_ids = inst_index_lut[idx]
    inst_uv = np.stack((u_lut[idx], v_lut[idx])).astype(np.float32)

    if use_eds:
        scale = (H / h, W / w)
        inst_weight = eds_weights(eds_inst_lut[idx], eds_D, eds_w_min, scale)
        sem_weight = eds_weights(idx, eds_D, eds_w_min, scale)
    else:
        inst_weight = np.ones((h, w), np.float32)
        sem_weight = np.ones((h, w), np.float32)
    if not void_weight >= 0.0:
        raise ValueError(f"panoptic_targets: void_weight must be >= 0, got {void_weight}")
    if not include_void:
        inst_weight[~inst_valid] = 0.0
    elif void_weight != 1.0:
        inst_weight[~inst_valid] *= np.float32(void_weight)
    inst_weight[crowd] = 0.0
    sem_weight[sem_seg == ignore_label] = 0.0

    return {
        "sem_seg": torch.from_numpy(np.ascontiguousarray(sem_seg)),
        "inst_uv": torch.from_numpy(np.ascontiguousarray(inst_uv)),
        "inst_valid": torch.from_numpy(np.ascontiguousarray(inst_valid)),
        "inst_ids": torch.from_numpy(np.ascontiguousarray(inst_ids.astype(np.int64))),
        "inst_weight": torch.from_numpy(np.ascontiguousarray(inst_weight)),
        "sem_weight": torch.from_numpy(np.ascontiguousarray(sem_weight)),
    }
