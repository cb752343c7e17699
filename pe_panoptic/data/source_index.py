"""Labels follow the image through detectron2's augmentations as a map of source-pixel indices
encoded in a uint8 RGBA image: detectron2 resizes uint8 maps with PIL's NEAREST, which samples
pixel centres like the image resize (its float path, torch's legacy "nearest", is half a pixel
off), and panoptic ids and depth are then gathered from the very same source pixels."""
from __future__ import annotations

import functools

import numpy as np

from pe_panoptic.data.errors import InvalidSampleError

__all__ = ["SOURCE_INDEX_BYTES", "decode_source_index", "gather_source", "source_index_image"]

#: The source-index image has 4 bytes per pixel (RGBA, little-endian ``1 + linear index``), so it
#: addresses 2^32 - 1 pixels. With 3 bytes (RGB) it stopped at 2^24 - 2 (16.7 MP, e.g. 5000 x
#: 3400), a bound of the encoding only: mapping a 6000 x 4000 sample (1008 px input) peaks at
#: +0.6 GB, ~25 bytes per pixel of full-size uint8 / int maps. The fourth byte is free for the
#: augmentations: detectron2 resizes uint8 maps with PIL (RGBA, NEAREST: the same source pixel
#: for every channel), crops by slicing and flips with numpy, all channel-agnostic.
SOURCE_INDEX_BYTES = 4
#: source-index images up to this many pixels are cached per size (8 sizes: at most 128 MB)
_CACHED_SOURCE_INDEX_PIXELS = 1 << 22


def _build_source_index_image(height: int, width: int) -> np.ndarray:
    idx = np.arange(1, height * width + 1, dtype="<u4").reshape(height, width)
    return idx.view(np.uint8).reshape(height, width, SOURCE_INDEX_BYTES)  # little-endian bytes


@functools.lru_cache(maxsize=8)
def _cached_source_index_image(height: int, width: int) -> np.ndarray:
    out = _build_source_index_image(height, width)
    out.flags.writeable = False
    return out


def source_index_image(height: int, width: int, file_name: str = "") -> np.ndarray:
    """``[H, W, 4]`` uint8 image whose pixel encodes ``1 + its linear index`` (0 = no source), up
    to 2^32 - 2 pixels (:data:`SOURCE_INDEX_BYTES`). (Small images: a copy of a cached image per
    size, as image sizes repeat across a dataset.)"""
    n = height * width
    if n + 1 >= 1 << (8 * SOURCE_INDEX_BYTES):
        raise InvalidSampleError(
            f"{file_name}: {width}x{height} image is too large (>= 2^32 - 1 pixels) for the source-index map"
        )
    if n > _CACHED_SOURCE_INDEX_PIXELS:
        return _build_source_index_image(int(height), int(width))
    return _cached_source_index_image(int(height), int(width)).copy()


def decode_source_index(rgba: np.ndarray) -> np.ndarray:
    """Inverse of :func:`source_index_image` after augmentation: linear source index, -1 = none."""
    if rgba.ndim != 3 or rgba.shape[2] != SOURCE_INDEX_BYTES or rgba.dtype != np.uint8:
        raise ValueError(f"source-index map must be uint8 [H, W, {SOURCE_INDEX_BYTES}], got {rgba.dtype} {rgba.shape}")
    return np.ascontiguousarray(rgba).view("<u4")[..., 0].astype(np.int64) - 1


def gather_source(values: np.ndarray, src_idx: np.ndarray, fill) -> np.ndarray:
    """``values`` (source image grid) sampled at ``src_idx`` (-1 -> ``fill``)."""
    out = values.reshape(-1)[np.clip(src_idx, 0, None)]
    return np.where(src_idx >= 0, out, fill).astype(values.dtype, copy=False)
