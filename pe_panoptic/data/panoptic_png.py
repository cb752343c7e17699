"""The one decoder of panopticapi PNGs: ``id = R + 256 G + 256^2 B`` (the package's mapper,
evaluators, baselines and tools all read panoptic ids through :func:`read_panoptic_ids` or
:func:`panoptic_rgb_to_ids`)."""
from __future__ import annotations

import numpy as np
from PIL import Image

from detectron2.utils.file_io import PathManager

from pe_panoptic.data.errors import InvalidSampleError
from pe_panoptic.data.image_io import check_exists

__all__ = ["panoptic_rgb_to_ids", "read_panoptic_ids", "read_panoptic_rgb"]

#: PIL modes a panoptic PNG may have (3 colour channels encode the id, panopticapi format)
_PANOPTIC_PNG_MODES = ("RGB", "RGBA", "P")


def read_panoptic_ids(file_name: str) -> np.ndarray:
    """Panoptic id map ``[H, W]`` int64 from a panopticapi PNG (``id = R + 256 G + 256^2 B``)."""
    return panoptic_rgb_to_ids(read_panoptic_rgb(file_name)).astype(np.int64)


def panoptic_rgb_to_ids(rgb: np.ndarray) -> np.ndarray:
    """``rgb2id`` as uint32 with shifts (``R | G << 8 | B << 16``, ~2x faster than panopticapi's)."""
    c = rgb.astype(np.uint32)
    return c[..., 0] | (c[..., 1] << 8) | (c[..., 2] << 16)


def read_panoptic_rgb(file_name: str) -> np.ndarray:
    """The ``[H, W, 3]`` uint8 RGB pixels of a panopticapi PNG (ids: :func:`panoptic_rgb_to_ids`)."""
    check_exists(file_name, "panoptic PNG")
    try:
        with PathManager.open(file_name, "rb") as f, Image.open(f) as im:
            mode = im.mode
            if mode not in _PANOPTIC_PNG_MODES:
                raise InvalidSampleError(
                    f"panoptic PNG {file_name}: mode {mode!r} is not an RGB id image (expected {_PANOPTIC_PNG_MODES})"
                )
            rgb = np.asarray(im.convert("RGB"))
    except InvalidSampleError:
        raise
    except Exception as e:
        raise InvalidSampleError(f"cannot read panoptic PNG {file_name}: {type(e).__name__}: {e}") from e
    return rgb
