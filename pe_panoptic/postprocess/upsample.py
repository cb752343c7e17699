"""Memory-bounded bilinear upsampling of per-pixel outputs to the original image size.

``F.interpolate(x[None], (H, W), mode="bilinear", align_corners=False)`` of all ``N`` class
logits at once costs ``4 N H W`` bytes: 6.4 GB for 133 classes at 12 MP, twice that with the
softmax. The same floats are produced piecewise, by two decompositions of PyTorch's bilinear
kernel (checked bitwise against the one-call result in tests/test_postprocess_memory.py):

* **channels**: every output channel depends on the same input channel only, so the logits are
  upsampled a few classes at a time (:func:`upsampled_argmax`);
* **column bands**: a 2-D sample is a vertical blend of two horizontal blends, so upsampling the
  width first (``[C, h, w] -> [C, h, W]``, a tenth of the full size for a 1008 px input) and then
  each band of columns in height (``[C, h, b] -> [C, H, b]``, the identity in width) gives the
  full result band by band (:func:`bilinear_column_bands`). A map narrower than one band, or
  with fewer than :data:`MIN_BAND_ROWS` rows, is upsampled in one call, exactly as before.

Budgets are bytes of the largest temporary (``chunk_bytes``); bands are multiples of
:data:`BAND_ALIGN` columns.
"""
from __future__ import annotations

from typing import Iterator, List, Tuple

import torch
import torch.nn.functional as F

__all__ = [
    "DEFAULT_CHUNK_BYTES",
    "BAND_ALIGN",
    "MIN_BAND_ROWS",
    "bilinear",
    "upsampled_argmax",
    "column_bands",
    "band_width",
    "bilinear_column_bands",
]

#: outputs with fewer rows are upsampled in one call: for tiny outputs (<= 64 rows observed)
#: PyTorch's kernel rounds a band differently from the whole map
MIN_BAND_ROWS = 128
#: default budget of the largest temporary of the upsampling steps (bytes)
DEFAULT_CHUNK_BYTES = 256 << 20
#: band widths are multiples of this many columns (whole SIMD vectors in the per-pixel
#: reductions over channels that follow)
BAND_ALIGN = 64


def bilinear(x: torch.Tensor, size: Tuple[int, int]) -> torch.Tensor:
    """``[C, h, w] -> [C, H, W]`` bilinear (``align_corners=False``), the reference operation."""
    return F.interpolate(x[None], size=tuple(size), mode="bilinear", align_corners=False)[0]


def _check(x: torch.Tensor, size, name: str) -> Tuple[int, int]:
    if not torch.is_tensor(x) or x.dim() != 3 or not x.is_floating_point():
        raise ValueError(f"{name}: x must be a floating [C, h, w] tensor, got {getattr(x, 'shape', type(x))}")
    H, W = (int(v) for v in size)
    if H < 1 or W < 1:
        raise ValueError(f"{name}: size must be positive (H, W), got {size!r}")
    return H, W


def upsampled_argmax(x: torch.Tensor, size: Tuple[int, int], chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> torch.Tensor:
    """``bilinear(x, size).max(0).indices`` (the first maximal channel) as ``[H, W]`` long,
    upsampling ``k`` channels at a time with ``4 k H W <= chunk_bytes`` (at least one); besides
    the chunk it holds the running maximum, the result and one mask (13 bytes per pixel)."""
    H, W = _check(x, size, "upsampled_argmax")
    k = max(1, int(chunk_bytes) // (4 * H * W))
    best = arg = None
    for c0 in range(0, x.shape[0], k):
        up = bilinear(x[c0 : c0 + k].float(), (H, W))
        for j, plane in enumerate(up):
            if best is None:
                best = plane.clone()
                arg = torch.zeros((H, W), dtype=torch.long, device=x.device)
                continue
            better = plane > best  # strict: on ties the earlier channel stays, as in max(0)
            torch.where(better, plane, best, out=best)
            arg.masked_fill_(better, c0 + j)
        del up
    return arg


def column_bands(width: int, band: int) -> List[Tuple[int, int]]:
    """``[(x0, x1)]`` covering ``0..width`` with bands ``band`` wide, the last one shifted left to
    keep that width (overlapping its neighbour); one band when ``width <= band``."""
    if band < 1:
        raise ValueError(f"band must be >= 1, got {band}")
    if width <= band:
        return [(0, width)]
    return [(x0, x0 + band) for x0 in range(0, width - band, band)] + [(width - band, width)]


def band_width(height: int, floats_per_pixel: int, chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> int:
    """Widest multiple of :data:`BAND_ALIGN` columns whose ``height x width x floats_per_pixel``
    float32 temporaries fit ``chunk_bytes`` (at least one :data:`BAND_ALIGN`)."""
    cols = int(chunk_bytes) // max(1, 4 * int(height) * int(floats_per_pixel))
    return max(BAND_ALIGN, cols // BAND_ALIGN * BAND_ALIGN)


def bilinear_column_bands(
    x: torch.Tensor, size: Tuple[int, int], band: int
) -> Iterator[Tuple[int, int, torch.Tensor]]:
    """``(x0, x1, bilinear(x, size)[:, :, x0:x1])`` for the :func:`column_bands` of width
    ``band``, holding the width-upsampled ``[C, h, W]`` and one ``[C, H, band]`` band at a time."""
    H, W = _check(x, size, "bilinear_column_bands")
    bands = column_bands(W, band)
    if len(bands) == 1 or H < MIN_BAND_ROWS:
        yield 0, W, bilinear(x.float(), (H, W))
        return
    wide = F.interpolate(x.float()[None], size=(x.shape[1], W), mode="bilinear", align_corners=False)
    for x0, x1 in bands:
        yield x0, x1, F.interpolate(wide[..., x0:x1], size=(H, x1 - x0), mode="bilinear", align_corners=False)[0]
