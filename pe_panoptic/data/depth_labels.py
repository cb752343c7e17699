"""Depth labels: reading metric depth / relative-disparity files and building depth targets.

Two kinds of depth supervision (paper Sec. 3.4 and Appendix A):

* ``"metric"``: ground-truth depth in metres (NYUv2, Stage 3). Files are single-channel 16-bit
  PNGs in millimetres (``value / 1000`` = metres; 0 = no measurement), or ``.npy`` float arrays
  in metres. A pixel is valid when its depth is finite and ``min_depth < d < max_depth``
  (NYUv2: 0.001 m and 10 m, the standard evaluation range). Target: the depth in metres
  (paper Eq. 9, SILog loss).
* ``"disparity"``: relative depth (Stage 2), in disparity space: "``d`` which is ``1/depth``
  normalized to be between 0 and 1" (Appendix A, Eq. 6-8, affine-invariant loss). The labels
  are DepthAnythingV2 pseudo-labels, which are already relative disparities (larger = closer,
  unknown scale and shift): ``.npy`` float arrays (the raw network output) or 8/16-bit
  single-channel PNGs. A metric depth map can also be used: it is converted to ``1 / depth``
  first. The target is min-max normalized to ``[0, 1]`` over the valid pixels of the final
  (augmented) target map.

Pseudo-labels live in one folder per dataset, one file per image named after the image's
stem: ``$DETECTRON2_DATASETS/<dataset_name>_depth_pseudo/<image stem>.npy`` (preferred) or
``.png`` (see ``datasets/README.md``).

Invalid pixels are ``NaN`` in every map returned here, so that geometric augmentations
(nearest interpolation, crops, flips, padding) carry them along without special cases.
"""
from __future__ import annotations

import os
from typing import Dict, Iterable, List, Sequence, Tuple, Union

import numpy as np
import torch
from PIL import Image

from detectron2.utils.file_io import PathManager

from pe_panoptic.data.targets import sample_at_output
from pe_panoptic.data.errors import InvalidSampleError

__all__ = [
    "DEPTH_KINDS",
    "DEFAULT_MIN_DEPTH",
    "DEFAULT_MAX_DEPTH",
    "DEPTH_PNG_SCALE",
    "read_metric_depth",
    "read_disparity",
    "valid_depth_mask",
    "depth_to_disparity",
    "normalize_disparity",
    "default_pseudo_depth_root",
    "find_pseudo_depth_file",
    "depth_targets",
]

DEPTH_KINDS = ("metric", "disparity")
#: NYUv2 metric range used for training targets and evaluation (paper Sec. 5: 0.001 to 10 m)
DEFAULT_MIN_DEPTH = 1e-3
DEFAULT_MAX_DEPTH = 10.0
#: depth PNG units per metre (millimetres)
DEPTH_PNG_SCALE = 1000.0

#: PIL modes of a single-channel 16-bit PNG (older Pillow opens them as 32-bit "I")
_MODES_16 = ("I;16", "I;16L", "I;16B", "I;16N", "I")
_PSEUDO_EXTS = (".npy", ".png")


def _check_file(file_name: str, what: str) -> None:
    if not file_name or not PathManager.exists(file_name):
        raise FileNotFoundError(f"{what} not found: {file_name!r}")


def _squeeze_2d(arr: np.ndarray, file_name: str) -> np.ndarray:
    if arr.ndim == 3 and arr.shape[0] == 1:
        arr = arr[0]
    elif arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim != 2 or arr.size == 0:
        raise InvalidSampleError(f"depth file {file_name}: expected a 2-D [H, W] map, got shape {arr.shape}")
    return arr


def _read_npy(file_name: str) -> np.ndarray:
    try:
        with PathManager.open(file_name, "rb") as f:
            arr = np.load(f, allow_pickle=False)
    except Exception as e:  # truncated / not a .npy / pickled object array
        raise InvalidSampleError(f"cannot read depth file {file_name}: {type(e).__name__}: {e}") from e
    arr = _squeeze_2d(np.asarray(arr), file_name)
    if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
        raise InvalidSampleError(f"depth file {file_name}: expected a numeric array, got dtype {arr.dtype}")
    return arr.astype(np.float32)


def _read_png(file_name: str, allowed_modes: Sequence[str], expected: str) -> np.ndarray:
    try:
        with PathManager.open(file_name, "rb") as f, Image.open(f) as im:
            mode = im.mode
            if mode not in allowed_modes:
                raise InvalidSampleError(f"depth PNG {file_name}: mode {mode!r}, expected {expected}")
            arr = np.asarray(im)
    except InvalidSampleError:
        raise
    except Exception as e:
        raise InvalidSampleError(f"cannot read depth PNG {file_name}: {type(e).__name__}: {e}") from e
    if mode == "I" and arr.size and (arr.min() < 0 or arr.max() > 65535):
        raise InvalidSampleError(f"depth PNG {file_name}: values outside the 16-bit range [0, 65535]")
    return _squeeze_2d(arr, file_name)


def _read_any(file_name: str, what: str, png_modes: Sequence[str], png_expected: str) -> np.ndarray:
    _check_file(file_name, what)
    ext = os.path.splitext(file_name)[1].lower()
    if ext == ".npy":
        return _read_npy(file_name)
    if ext == ".png":
        return _read_png(file_name, png_modes, png_expected).astype(np.float32)
    raise InvalidSampleError(f"{what} {file_name}: unsupported extension {ext!r} (expected .png or .npy)")


def read_metric_depth(file_name: str, scale: float = DEPTH_PNG_SCALE) -> np.ndarray:
    """Metric depth in metres ``[H, W]`` float32, NaN where there is no measurement.

    ``.png``: single-channel 16-bit, ``value / scale`` metres (``scale = 1000``: millimetres),
    0 = no measurement; an 8-bit or colour PNG is rejected (it cannot hold millimetres).
    ``.npy``: float metres; non-positive and non-finite values are no measurement.
    Raises ``FileNotFoundError`` / :class:`InvalidSampleError` naming the file.
    """
    if not scale > 0:
        raise ValueError(f"read_metric_depth: scale must be > 0, got {scale}")
    arr = _read_any(file_name, "depth file", _MODES_16, "a single-channel 16-bit PNG (depth in millimetres)")
    if os.path.splitext(file_name)[1].lower() == ".png":
        arr = arr / np.float32(scale)
    return np.where(np.isfinite(arr) & (arr > 0), arr, np.nan).astype(np.float32)


def read_disparity(file_name: str) -> np.ndarray:
    """Relative disparity ``[H, W]`` float32 (a DepthAnythingV2 pseudo-label), NaN where not finite.

    ``.npy``: any float scale (the raw network output); ``.png``: 8- or 16-bit single channel
    (any scale: the target is min-max normalized later, see :func:`normalize_disparity`).
    """
    arr = _read_any(file_name, "pseudo depth file", ("L",) + _MODES_16, "a single-channel 8/16-bit PNG (disparity)")
    return np.where(np.isfinite(arr), arr, np.nan).astype(np.float32)


def valid_depth_mask(depth: np.ndarray, min_depth: float = DEFAULT_MIN_DEPTH,
                     max_depth: float = DEFAULT_MAX_DEPTH) -> np.ndarray:
    """``finite & min_depth < depth < max_depth`` (the standard NYUv2 protocol's valid pixels)."""
    depth = np.asarray(depth)
    with np.errstate(invalid="ignore"):
        return np.isfinite(depth) & (depth > min_depth) & (depth < max_depth)


def depth_to_disparity(depth: np.ndarray, min_depth: float = DEFAULT_MIN_DEPTH,
                       max_depth: float = DEFAULT_MAX_DEPTH) -> np.ndarray:
    """``1 / depth`` on valid pixels (:func:`valid_depth_mask`), NaN elsewhere (float32)."""
    depth = np.asarray(depth, dtype=np.float32)
    valid = valid_depth_mask(depth, min_depth, max_depth)
    out = np.full(depth.shape, np.nan, dtype=np.float32)
    out[valid] = 1.0 / depth[valid]
    return out


def normalize_disparity(disp: np.ndarray) -> np.ndarray:
    """Min-max normalization of the finite entries to ``[0, 1]`` (paper Appendix A: "``1/depth``
    normalized to be between 0 and 1"); NaN stays NaN; a constant map becomes 0."""
    disp = np.asarray(disp, dtype=np.float32)
    finite = np.isfinite(disp)
    out = np.full(disp.shape, np.nan, dtype=np.float32)
    if not finite.any():
        return out
    lo, hi = disp[finite].min(), disp[finite].max()
    out[finite] = (disp[finite] - lo) / (hi - lo) if hi > lo else 0.0
    return out


def default_pseudo_depth_root(dataset_name: str) -> str:
    """``$DETECTRON2_DATASETS/<dataset_name>_depth_pseudo`` (``DETECTRON2_DATASETS`` defaults to
    ``datasets``, as in detectron2's builtin registrations)."""
    return os.path.join(os.getenv("DETECTRON2_DATASETS", "datasets"), f"{dataset_name}_depth_pseudo")


def find_pseudo_depth_file(roots: Union[str, Iterable[str]], image_file: str) -> str:
    """The pseudo-label of ``image_file``: the first existing ``<root>/<image stem>.npy`` or
    ``.png`` over ``roots`` (in order). ``FileNotFoundError`` lists every path tried."""
    roots = [roots] if isinstance(roots, str) else list(roots)
    stem = os.path.splitext(os.path.basename(image_file))[0]
    tried: List[str] = []
    for root in roots:
        for ext in _PSEUDO_EXTS:
            path = os.path.join(root, stem + ext)
            if PathManager.exists(path):
                return path
            tried.append(path)
    raise FileNotFoundError(f"pseudo depth label of image {image_file} not found; tried {tried}")


def depth_targets(
    depth_map: np.ndarray,
    output_hw: Tuple[int, int],
    kind: str,
    min_depth: float = DEFAULT_MIN_DEPTH,
    max_depth: float = DEFAULT_MAX_DEPTH,
) -> Dict[str, torch.Tensor]:
    """Depth targets at the network output resolution from a map at input resolution.

    ``depth_map`` [H, W]: metric depth (metres) for ``kind="metric"``, disparity for
    ``kind="disparity"``; NaN = invalid (also the padding). It is sampled at the output pixel
    centres (nearest, :func:`pe_panoptic.data.targets.sample_at_output`, the same positions as the
    panoptic targets).

    Returns ``depth`` [h, w] float32 (metres, or disparity normalized to ``[0, 1]`` over the
    valid pixels, :func:`normalize_disparity`) and ``depth_valid`` [h, w] bool (metric:
    :func:`valid_depth_mask`; disparity: finite). Invalid pixels have ``depth = 0``.
    """
    if kind not in DEPTH_KINDS:
        raise ValueError(f"depth_targets: kind must be one of {DEPTH_KINDS}, got {kind!r}")
    depth_map = np.asarray(depth_map, dtype=np.float32)
    if depth_map.ndim != 2:
        raise ValueError(f"depth_targets: depth_map must be 2-D [H, W], got shape {depth_map.shape}")
    d = sample_at_output(depth_map, output_hw)
    if kind == "metric":
        valid = valid_depth_mask(d, min_depth, max_depth)
    else:
        d = normalize_disparity(d)
        valid = np.isfinite(d)
    target = np.where(valid, d, 0.0).astype(np.float32)
    return {
        "depth": torch.from_numpy(np.ascontiguousarray(target)),
        "depth_valid": torch.from_numpy(np.ascontiguousarray(valid)),
    }
