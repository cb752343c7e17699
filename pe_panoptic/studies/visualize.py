"""Pictures that explain the method (used by ``tools/demo.py``).

* :func:`panoptic_overlay`: the panoptic result drawn on the image (detectron2 ``Visualizer``).
* :func:`centroid_colors` + :func:`segment_centroid_cells` + :func:`draw_centroids`: the instance
  embedding decoded to the uv-grid (paper Fig. 8, Fig. 1b): every pixel coloured by the grid
  cell its embedding decodes to (hue from ``u``, brightness from ``v``; void black), and for
  every thing segment the centroid it decodes to (its most frequent cell) drawn as a dot.
* :func:`eds_map` + :func:`weights_to_rgb`: the Edge Distance Sampling weights of an instance map
  (paper Eq. 5, Figs. 2 and 6e), computed by the training code
  (:func:`pe_panoptic.data.targets.panoptic_targets`, ``inst_weight``): each instance and each crowd
  region is a label, stuff / void one more; crowd pixels weigh 0.

Tensor functions work on the input's device; drawing happens on numpy uint8 RGB images.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from pe_panoptic.encoding import grid_centers
from pe_panoptic.data.targets import panoptic_targets

__all__ = [
    "panoptic_overlay",
    "hsv_to_rgb",
    "centroid_colors",
    "resize_labels",
    "segment_centroid_cells",
    "cells_to_image_xy",
    "draw_centroids",
    "eds_map",
    "weights_to_rgb",
    "add_caption",
]

#: hue range of the centroid colours: u = -1 -> 0 (red) ... u = 1 -> 0.8 (magenta); a full
#: circle would give the left and right image borders the same colour
HUE_RANGE = 0.8


def panoptic_overlay(image: np.ndarray, panoptic_seg: torch.Tensor, segments_info: List[Dict], metadata,
                     alpha: float = 0.6) -> np.ndarray:
    """detectron2 ``Visualizer.draw_panoptic_seg`` on an RGB uint8 ``[H, W, 3]`` image (same size
    as ``panoptic_seg``); ``segments_info`` with contiguous ``category_id`` and ``isthing``."""
    from detectron2.utils.visualizer import ColorMode, Visualizer

    if tuple(panoptic_seg.shape) != tuple(image.shape[:2]):
        raise ValueError(f"panoptic_seg {tuple(panoptic_seg.shape)} and image {image.shape[:2]} differ in size")
    vis = Visualizer(image, metadata, scale=1.0, instance_mode=ColorMode.IMAGE)
    return vis.draw_panoptic_seg(panoptic_seg.cpu(), segments_info, alpha=alpha).get_image()


def hsv_to_rgb(h: torch.Tensor, s: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Vectorized HSV -> RGB, all inputs in [0, 1] of one shape; returns ``[..., 3]`` in [0, 1]."""
    k = torch.tensor([5.0, 3.0, 1.0], device=h.device, dtype=h.dtype)
    t = (k + h.unsqueeze(-1) * 6.0) % 6.0
    return v.unsqueeze(-1) - (v * s).unsqueeze(-1) * torch.clamp(torch.minimum(t, 4.0 - t), 0.0, 1.0)


def centroid_colors(code: torch.Tensor, grid: Tuple[int, int]) -> torch.Tensor:
    """Colour of decoded grid cells: ``code [...]`` long (``iv * gw + iu``, ``-1`` = void, as
    :func:`pe_panoptic.postprocess.decode_cells`) -> uint8 ``[..., 3]``. Hue
    ``HUE_RANGE * (iu + 0.5) / gw``, full saturation, value ``0.35 + 0.65 (iv + 0.5) / gh``;
    void is black."""
    gh, gw = int(grid[0]), int(grid[1])
    c = code.clamp_min(0)
    iu = (c % gw).float()
    iv = (c // gw).float()
    rgb = hsv_to_rgb(HUE_RANGE * (iu + 0.5) / gw, torch.ones_like(iu), 0.35 + 0.65 * (iv + 0.5) / gh)
    rgb = torch.where((code < 0).unsqueeze(-1), torch.zeros_like(rgb), rgb)
    return (rgb * 255.0).round().to(torch.uint8)


def resize_labels(labels: torch.Tensor, size: Tuple[int, int]) -> torch.Tensor:
    """Pixel-center nearest resize of an integer map ``[h, w]`` (labels < 2^24) to ``size``."""
    out = F.interpolate(labels[None, None].double(), size=tuple(int(s) for s in size), mode="nearest-exact")
    return out[0, 0].to(labels.dtype)


def segment_centroid_cells(panoptic_seg: torch.Tensor, code: torch.Tensor, segments_info: List[Dict]):
    """Most frequent decoded cell of every thing segment (one joint histogram, no loop over
    pixels). ``panoptic_seg`` and ``code`` ``[H, W]`` on one grid. Returns ``(ids [S] long,
    cells [S] long)`` for the non-crowd thing segments having a non-void decoded pixel."""
    things = [int(s["id"]) for s in segments_info if s.get("isthing") and not s.get("iscrowd", 0)]
    dev = code.device
    if not things:
        empty = torch.zeros(0, dtype=torch.long, device=dev)
        return empty, empty
    ids = torch.tensor(things, dtype=torch.long, device=dev)
    n = max(int(ids.max()), int(panoptic_seg.max()) if panoptic_seg.numel() else 0) + 1
    lut = torch.full((n,), -1, dtype=torch.long, device=dev)
    lut[ids] = torch.arange(len(things), device=dev)
    seg_idx = lut[panoptic_seg.long().clamp_min(0)].reshape(-1)
    code = code.reshape(-1).long()
    ok = (seg_idx >= 0) & (code >= 0)
    ncode = int(code.max()) + 1 if bool(ok.any()) else 1
    hist = torch.bincount(seg_idx[ok] * ncode + code[ok], minlength=len(things) * ncode).view(len(things), ncode)
    count, cell = hist.max(1)
    has = count > 0
    return ids[has], cell[has]


def cells_to_image_xy(cells: torch.Tensor, grid: Tuple[int, int], input_hw: Tuple[int, int],
                      resized_hw: Tuple[int, int], original_hw: Tuple[int, int]) -> torch.Tensor:
    """Grid cells (``iv * gw + iu``) -> ``(x, y)`` pixel coordinates in the original image,
    ``[S, 2]`` float. The cell center ``(u, v)`` is normalized in the network input frame
    (padded ``input_hw``, :func:`pe_panoptic.encoding.normalize_coords`); the resized image of
    ``resized_hw`` is the top-left part of it and maps linearly onto ``original_hw``."""
    gh, gw = int(grid[0]), int(grid[1])
    u = grid_centers(gw, cells.device)[cells % gw]
    v = grid_centers(gh, cells.device)[cells // gw]
    x_in = (u + 1.0) * 0.5 * input_hw[1] - 0.5
    y_in = (v + 1.0) * 0.5 * input_hw[0] - 0.5
    x = (x_in + 0.5) * (original_hw[1] / resized_hw[1]) - 0.5
    y = (y_in + 0.5) * (original_hw[0] / resized_hw[0]) - 0.5
    return torch.stack((x, y), 1)


def draw_centroids(image: np.ndarray, xy: np.ndarray, colors: np.ndarray, radius: Optional[int] = None) -> np.ndarray:
    """Filled dots with a white ring at ``xy [S, 2]`` (pixels) in ``colors [S, 3]`` (uint8 RGB)."""
    import cv2

    out = np.ascontiguousarray(image.copy())
    r = radius or max(2, round(min(image.shape[:2]) / 100))
    for (x, y), c in zip(np.asarray(xy).round().astype(int), np.asarray(colors)):
        cv2.circle(out, (int(x), int(y)), r + 1, (255, 255, 255), -1, lineType=cv2.LINE_AA)
        cv2.circle(out, (int(x), int(y)), r, tuple(int(v) for v in c), -1, lineType=cv2.LINE_AA)
    return out


def eds_map(pan_ids: np.ndarray, segments_info: Sequence[Dict], D: float, w_min: float = 0.0) -> np.ndarray:
    """EDS weights ``[H, W]`` of the instance map of a panoptic id map (module doc); ``D`` in
    pixels of ``pan_ids``. ``segments_info``: ``id``, contiguous ``category_id``, ``isthing``
    (and ``iscrowd``)."""
    pan_ids = np.asarray(pan_ids).astype(np.int64)
    hw = pan_ids.shape
    t = panoptic_targets(pan_ids, segments_info, input_hw=hw, output_hw=hw, eds_D=float(D), eds_w_min=float(w_min))
    return t["inst_weight"].numpy()


def weights_to_rgb(weights: np.ndarray, cmap: str = "inferno") -> np.ndarray:
    """Weights in [0, 1] -> uint8 RGB through a matplotlib colormap."""
    import matplotlib

    lut = (matplotlib.colormaps[cmap](np.linspace(0.0, 1.0, 256))[:, :3] * 255).round().astype(np.uint8)
    return lut[np.clip(np.rint(np.asarray(weights) * 255), 0, 255).astype(np.int64)]


def add_caption(image: np.ndarray, text: str) -> np.ndarray:
    """A black banner with ``text`` above the image."""
    import cv2

    scale = max(0.35, image.shape[1] / 1400)
    (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
    bar = np.zeros((th + base + 8, image.shape[1], 3), np.uint8)
    cv2.putText(bar, text, (4, th + 4), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1, cv2.LINE_AA)
    return np.concatenate([bar, image], 0)
