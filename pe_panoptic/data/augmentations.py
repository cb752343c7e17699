"""detectron2 augmentations of the panoptic mapper: training (scale jitter, crop, flip) and test
(resize of the longest side)."""
from __future__ import annotations

from typing import List, Tuple

from detectron2.data import transforms as T

__all__ = ["build_train_augmentations", "build_test_augmentations", "size_hw"]


def size_hw(size, name: str) -> Tuple[int, int]:
    if isinstance(size, int):
        size = (size, size)
    try:
        h, w = (int(v) for v in size)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be an int or (H, W), got {size!r}") from None
    if h <= 0 or w <= 0:
        raise ValueError(f"{name} must be positive, got {size!r}")
    return h, w


def build_train_augmentations(size, min_scale: float = 0.1, max_scale: float = 2.0, flip: bool = True) -> List[T.Augmentation]:
    """Training augmentations: scale jitter (``T.ResizeScale``: fit the image into ``size *
    U(min_scale, max_scale)``, keep aspect), random crop to ``size`` (``T.FixedSizeCrop``, no
    padding: the mapper pads with 0 / unlabeled to ``input_size``) and horizontal flip."""
    h, w = size_hw(size, "size")
    if not 0 < min_scale <= max_scale:
        raise ValueError(f"need 0 < min_scale <= max_scale, got {min_scale}, {max_scale}")
    augs: List[T.Augmentation] = [
        T.ResizeScale(min_scale=min_scale, max_scale=max_scale, target_height=h, target_width=w),
        T.FixedSizeCrop(crop_size=(h, w), pad=False),
    ]
    if flip:
        augs.append(T.RandomFlip(prob=0.5, horizontal=True, vertical=False))
    return augs


def build_test_augmentations(size: int) -> List[T.Augmentation]:
    """Test augmentations: resize so that the longest side is ``size``, keeping the aspect ratio."""
    size = int(size)
    if size <= 0:
        raise ValueError(f"size must be positive, got {size}")
    return [T.ResizeShortestEdge(short_edge_length=size, max_size=size, sample_style="choice")]
