"""Per-pixel grid decoding: every pixel's nearest cell of the ``gh x gw`` uv-grid, or void.

Paper, Sec. 3 / 5 ("Inference"): each pixel is attached by nearest-neighbour search to one
position of a discretized uv-grid (80 x 80 for COCO, 160 x 320 for Cityscapes) or to the void
code. :func:`decode_cells` does it with the encoding's exact two-argmin search
(:meth:`pe_panoptic.encoding.CentroidEncoding.decode`); :func:`naive_decode` is the brute-force
reference (every pixel against every code).

Which pixels belong to no instance (``PostProcessConfig.void_source``):

``"instance"`` (the paper's; default)
    the void code (all zeros for PE) takes part in the nearest-neighbour search, so the
    instance head alone separates instance pixels from the rest.
``"semantic"`` (beyond the paper, as Panoptic-DeepLab does for its centre offsets)
    a pixel belongs to some instance iff its semantic argmax is a thing class; it then takes its
    nearest grid cell, even where the void code is nearer. Every grid code of the PE has the
    same norm, so the nearest grid cell is the one most *aligned* with the prediction and does
    not change when a model shrinks an uncertain prediction toward zero. Such a shrunk
    prediction decodes as void under ``"instance"``: an under-trained model (or one
    trained from scratch) loses whole instances that ``"semantic"`` still recovers.

Cell maps are ``code [h, w]`` long ``iv * gw + iu`` with ``-1`` for void; :func:`cell_counts` and
:func:`paint_cells` are the histogram / look-up-table primitives the instance decoders use.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch

from pe_panoptic.encoding import CentroidEncoding, Decoded, grid_centers

__all__ = ["decode_scale", "decode_cells", "naive_decode", "check_grid", "check_inst", "cell_counts", "paint_cells"]


def decode_scale(encoding: CentroidEncoding) -> float:
    """Distance between the void code and a grid code in the encoding's own decode metric.

    Used to normalize decode distances to [0, 1] for scores: PE ``||gamma(u), gamma(v)|| =
    sqrt(2L)`` (every grid code has that norm, the void code is 0); RGB: the blue channel, 1;
    bins: the decode distance ``1 - p_u p_v`` is already in [0, 1]
    (:attr:`pe_panoptic.encoding.CentroidEncoding.decode_scale`).
    """
    return float(encoding.decode_scale)


def check_grid(grid) -> Tuple[int, int]:
    """``(gh, gw)`` as ints, or a ``ValueError`` naming the bad grid."""
    if len(grid) != 2 or int(grid[0]) < 1 or int(grid[1]) < 1:
        raise ValueError(f"grid must be (gh, gw) with positive ints, got {grid!r}")
    return int(grid[0]), int(grid[1])


def check_inst(inst: torch.Tensor, encoding: CentroidEncoding, name: str = "inst") -> None:
    """``inst`` must be a floating ``[C, h, w]`` tensor with the encoding's channel count."""
    if not isinstance(encoding, CentroidEncoding):
        raise TypeError(f"encoding must be a pe_panoptic.encoding.CentroidEncoding, got {type(encoding).__name__}")
    if not torch.is_tensor(inst) or inst.dim() != 3:
        raise ValueError(f"{name} must be a [C, h, w] tensor, got {getattr(inst, 'shape', type(inst))}")
    if inst.shape[0] != encoding.num_channels:
        raise ValueError(
            f"{name} has {inst.shape[0]} channels but {encoding!r} expects {encoding.num_channels}"
        )
    if inst.shape[1] < 1 or inst.shape[2] < 1:
        raise ValueError(f"{name} has an empty spatial size {tuple(inst.shape[1:])}")
    if not inst.is_floating_point():
        raise ValueError(f"{name} must be a floating tensor, got {inst.dtype}")


def decode_cells(
    inst: torch.Tensor, encoding: CentroidEncoding, grid, thing_pixels: Optional[torch.Tensor] = None
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Nearest grid cell of every pixel (paper Sec. 3, nearest-neighbour search on the uv-grid).

    Returns ``code [h, w]`` long (``iv * gw + iu``, ``-1`` = void) and the normalized decode
    distance ``ndist [h, w]`` in [0, 1] (distance / :func:`decode_scale`, clipped).

    By default the void code competes with the grid codes (the paper). With ``thing_pixels``
    (``[h, w]`` bool, e.g. the pixels whose semantic argmax is a thing class) the void code is
    not searched: those pixels take their nearest grid cell (distance to it) and all others are
    void.
    """
    check_inst(inst, encoding)
    gh, gw = check_grid(grid)
    dec = encoding.decode(inst.unsqueeze(0), (gh, gw))
    code = dec.iv[0] * gw + dec.iu[0]
    if thing_pixels is None:
        void, dist = dec.void[0], dec.dist[0]
    else:
        if tuple(thing_pixels.shape) != tuple(code.shape) or thing_pixels.dtype != torch.bool:
            raise ValueError(
                f"thing_pixels must be a bool [h, w] = {tuple(code.shape)} mask, got "
                f"{thing_pixels.dtype} {tuple(thing_pixels.shape)}"
            )
        void, dist = ~thing_pixels.to(code.device), dec.grid_dist[0]
    code = torch.where(void, torch.full_like(code, -1), code)
    ndist = (dist.float() / decode_scale(encoding)).clamp(0.0, 1.0)
    return code, ndist


def cell_counts(code: torch.Tensor, num_cells: int, weights: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Per-cell pixel count (or sum of ``weights``) of a code map, void (``-1``) excluded:
    one ``bincount`` of ``code + 1`` (no boolean-mask gather)."""
    w = None if weights is None else weights.reshape(-1)
    return torch.bincount(code.reshape(-1) + 1, weights=w, minlength=num_cells + 1)[1:]


def paint_cells(code: torch.Tensor, num_cells: int, cells: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Label map: pixels of cell ``cells[i]`` get ``labels[i]``, all other pixels (void, other
    cells) 0, through a look-up table indexed by ``code + 1``."""
    lut = torch.zeros(num_cells + 1, dtype=torch.long, device=code.device)
    lut[cells + 1] = labels
    return lut[code + 1]


def grid_uv(grid, device) -> torch.Tensor:
    """Normalized ``(u, v)`` centres of all ``gh * gw`` grid cells, row-major ``iv * gw + iu``."""
    gh, gw = grid
    v = grid_centers(gh, device).repeat_interleave(gw)
    u = grid_centers(gw, device).repeat(gh)
    return torch.stack((u, v), 1)  # (gh*gw, 2), row-major iv * gw + iu


@torch.no_grad()
def naive_decode(pred: torch.Tensor, encoding: CentroidEncoding, grid, chunk: int = 1 << 22) -> Decoded:
    """Brute-force nearest code: every pixel against all ``gh * gw`` grid codes + the void code.

    Reference for :meth:`CentroidEncoding.decode` (same output, ``[B, h, w]`` fields; ``pred``
    may be ``[B, C, h, w]`` or ``[C, h, w]``). PE: Euclidean ``torch.cdist``; RGB: L1 cdist;
    bins: joint search over all ``(nb + 1)^2`` (u-bin, v-bin) pairs maximizing ``p_u p_v``
    (void if either bin is void). Ties go to the lowest index with the void code last, like
    ``decode``. ``chunk`` bounds the number of distance entries per step.
    """
    if pred.dim() == 3:
        pred = pred.unsqueeze(0)
    check_inst(pred[0], encoding, "pred")
    gh, gw = check_grid(grid)
    B, C, H, W = pred.shape
    emb = pred.float().permute(0, 2, 3, 1).reshape(-1, C)
    iu, iv, void, dist, grid_dist = encoding.naive_decode(emb, (gh, gw), chunk)
    shape = (B, H, W)
    return Decoded(iu.view(shape), iv.view(shape), void.view(shape), dist.view(shape), grid_dist.view(shape))
