"""Reading dataset images (8-bit, any PIL mode) and checking that a sample's file exists."""
from __future__ import annotations

import numpy as np
from PIL import Image

from detectron2.data import detection_utils as utils
from detectron2.utils.file_io import PathManager

from pe_panoptic.data.errors import InvalidSampleError

__all__ = ["check_exists", "read_image_8bit"]

#: PIL modes with more than 8 bits per sample (PIL's RGB conversion would clip them at 255)
_HIGH_DEPTH_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")


def check_exists(file_name: str, what: str) -> None:
    if not file_name or not PathManager.exists(file_name):
        raise FileNotFoundError(f"{what} not found: {file_name!r}")


def _to_uint8(arr: np.ndarray, mode: str, file_name: str) -> np.ndarray:
    """High-bit-depth grayscale -> uint8 by linear rescaling of the 16-bit range."""
    arr = np.asarray(arr)
    if mode == "I" and arr.size and (arr.min() < 0 or arr.max() > 65535):
        raise InvalidSampleError(f"image {file_name}: 32-bit values outside [0, 65535] are not supported")
    return np.rint(arr.astype(np.float64) * (255.0 / 65535.0)).astype(np.uint8)


def read_image_8bit(file_name: str, image_format: str = "RGB") -> np.ndarray:
    """Read an image as uint8 HWC in ``image_format`` with detectron2's ``read_image`` (applies the
    EXIF orientation, converts grayscale / palette / RGBA / CMYK). 16-bit images are rescaled to
    8 bits first (PIL's conversion would clip them). Raises ``FileNotFoundError`` /
    :class:`InvalidSampleError` naming the file."""
    check_exists(file_name, "image file")
    try:
        with PathManager.open(file_name, "rb") as f, Image.open(f) as im:
            mode = im.mode  # header only
        if mode in _HIGH_DEPTH_MODES:
            arr = _to_uint8(utils.read_image(file_name, format=None), mode, file_name)
            if arr.ndim != 2:
                raise InvalidSampleError(f"image {file_name}: unexpected shape {arr.shape} for mode {mode}")
            return utils.convert_PIL_to_numpy(Image.fromarray(arr, mode="L"), image_format)
        image = utils.read_image(file_name, format=image_format)
    except InvalidSampleError:
        raise
    except Exception as e:  # PIL: UnidentifiedImageError, truncated file, decoder errors
        raise InvalidSampleError(f"cannot read image file {file_name}: {type(e).__name__}: {e}") from e
    if image.dtype != np.uint8:
        raise InvalidSampleError(f"image {file_name}: unsupported mode {mode!r} (got dtype {image.dtype})")
    return image
