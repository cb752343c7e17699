"""``DepthTargets``: the depth target builder of the dataset mapper (paper Sec. 3.4, Appendix A).

It holds the depth settings (kind, pseudo-label folders, valid range, PNG scale), reads a
sample's depth label with :mod:`pe_panoptic.data.depth_labels` and, after the mapper has
augmented and padded it, builds ``depth`` / ``depth_valid`` with
:func:`pe_panoptic.data.depth_labels.depth_targets`.
"""
from __future__ import annotations

import os
from typing import List, Optional, Sequence, Tuple, Union

import numpy as np

from pe_panoptic.data.depth_labels import (
    DEFAULT_MAX_DEPTH,
    DEFAULT_MIN_DEPTH,
    DEPTH_KINDS,
    DEPTH_PNG_SCALE,
    default_pseudo_depth_root,
    depth_targets,
    depth_to_disparity,
    find_pseudo_depth_file,
    read_disparity,
    read_metric_depth,
)
from pe_panoptic.data.errors import InvalidSampleError

__all__ = ["DepthTargets"]


class DepthTargets:
    """Depth targets of a sample.

    Args:
        kind: ``"metric"`` (metres from the dict's ``depth_file_name``) or ``"disparity"``
            (relative disparity in ``[0, 1]``: the pseudo-label ``<root>/<image stem>.npy|.png``
            if it exists, else ``1 / depth`` of the dict's ``depth_file_name``).
        root: pseudo-label folder(s) searched in order (``"disparity"`` only). Default:
            ``$DETECTRON2_DATASETS/<dataset_name>_depth_pseudo`` when ``dataset_name`` is set.
        dataset_name: the dataset of the default ``root``.
        min_depth, max_depth: valid metric range (NYUv2: 0.001 and 10 m, exclusive).
        scale: depth PNG units per metre (1000: millimetres).
    """

    fill = np.nan  #: depth of the padding and of pixels without a source (invalid)
    optional = False  #: every sample needs a depth label (a missing file is an error naming it)

    def __init__(self, kind: str, *, root: Optional[Union[str, Sequence[str]]] = None,
                 dataset_name: Optional[str] = None, min_depth: float = DEFAULT_MIN_DEPTH,
                 max_depth: float = DEFAULT_MAX_DEPTH, scale: float = DEPTH_PNG_SCALE):
        if kind not in DEPTH_KINDS:
            raise ValueError(f"DepthTargets: kind must be one of {DEPTH_KINDS}, got {kind!r}")
        if not 0 <= min_depth < max_depth:
            raise ValueError(f"need 0 <= min_depth < max_depth, got {min_depth}, {max_depth}")
        if not scale > 0:
            raise ValueError(f"DepthTargets: scale must be > 0, got {scale}")
        self.kind = kind
        if root is None:
            roots = [default_pseudo_depth_root(dataset_name)] if dataset_name is not None else []
        else:
            roots = [os.fspath(root)] if isinstance(root, (str, os.PathLike)) else [os.fspath(r) for r in root]
        self.roots: List[str] = roots if kind == "disparity" else []
        self.min_depth, self.max_depth, self.scale = float(min_depth), float(max_depth), float(scale)

    def has_label(self, d: dict) -> bool:
        return True  # the label's file is looked up (and reported when missing) by read()

    def read_label(self, d: dict, file_name: str) -> np.ndarray:
        """Depth label at the original image size, ``[H, W]`` float32 with NaN = invalid: metres
        (``"metric"``) or raw disparity (``"disparity"``)."""
        gt_file = d.get("depth_file_name")
        if self.kind == "metric":
            if not gt_file:
                raise InvalidSampleError(f"{file_name}: depth='metric' needs 'depth_file_name' in the dataset dict")
            return read_metric_depth(gt_file, self.scale)
        try:
            return read_disparity(find_pseudo_depth_file(self.roots, file_name))
        except FileNotFoundError:
            if not gt_file:
                raise
        return depth_to_disparity(read_metric_depth(gt_file, self.scale), self.min_depth, self.max_depth)

    def read(self, d: dict, image_hw: Tuple[int, int]) -> Tuple[np.ndarray, None]:
        file_name = d.get("file_name")
        depth = self.read_label(d, file_name)
        if depth.shape != tuple(image_hw):
            raise InvalidSampleError(
                f"depth label of {file_name} is {depth.shape[1]}x{depth.shape[0]} (w x h) but the "
                f"image is {image_hw[1]}x{image_hw[0]} (depth_file_name={d.get('depth_file_name')!r})"
            )
        return depth, None

    def __call__(self, depth: np.ndarray, context: None, input_hw: Tuple[int, int],
                 output_hw: Tuple[int, int]) -> dict:
        """``depth`` / ``depth_valid`` of the augmented, padded label (input frame) at ``output_hw``."""
        return depth_targets(depth, output_hw, self.kind, self.min_depth, self.max_depth)
