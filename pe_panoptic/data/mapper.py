"""Dataset mapper: detectron2 dataset dict -> model input with dense training targets.

Reads the image, applies detectron2 augmentations, pads it to the network input size and hands
the sample's labels to target builders (cf. detectron2's ``PanopticDeeplabDatasetMapper`` and its
``panoptic_target_generator``): :class:`pe_panoptic.data.panoptic_builder.PanopticTargets`
(semantic classes, centroids, EDS weights of :mod:`pe_panoptic.data.targets`) and
:class:`pe_panoptic.data.depth_builder.DepthTargets` (metric depth or relative-disparity
pseudo-labels; paper Sec. 3.4, Appendix A). A builder reads its label at the original image size
(``read``); the label follows the image through the augmentations (the same source pixels,
:mod:`pe_panoptic.data.source_index`), is padded with the builder's ``fill`` and turned into
targets at the output resolution (input * 8/14, paper Sec. 5.1) by calling the builder.
Depth-only datasets (NYUv2) have ``panoptic=None``.
"""
from __future__ import annotations

import copy
import logging
import math
import os
from typing import List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from detectron2.data import transforms as T
from detectron2.utils.logger import log_every_n_seconds

from pe_panoptic.data.augmentations import build_test_augmentations, build_train_augmentations, size_hw
from pe_panoptic.data.depth_builder import DepthTargets
from pe_panoptic.data.errors import InvalidSampleError
from pe_panoptic.data.image_io import read_image_8bit
from pe_panoptic.data.panoptic_builder import PanopticTargets
from pe_panoptic.data.panoptic_png import panoptic_rgb_to_ids, read_panoptic_ids, read_panoptic_rgb
from pe_panoptic.data.segments import check_segment_ids, compact_segment_labels
from pe_panoptic.data.source_index import decode_source_index, gather_source, source_index_image

__all__ = [
    "InvalidSampleError",
    "PanopticCentroidDatasetMapper",
    "PanopticTargets",
    "DepthTargets",
    "build_train_augmentations",
    "build_test_augmentations",
    "read_image_8bit",
    "read_panoptic_ids",
    "read_panoptic_rgb",
    "panoptic_rgb_to_ids",
    "check_segment_ids",
    "compact_segment_labels",
    "decode_source_index",
    "source_index_image",
]

logger = logging.getLogger(__name__)


def _check_builder(builder, name: str, example: str):
    if builder is None:
        return None
    if not (callable(builder) and hasattr(builder, "read") and hasattr(builder, "fill")):
        raise TypeError(f"PanopticCentroidDatasetMapper: {name} must be None or a target builder such as "
                        f"{example}, got {builder!r}")
    return builder


class PanopticCentroidDatasetMapper:
    """Map a detectron2 panoptic dataset dict to the model input (see module docstring).

    Args:
        is_train: training mode (targets always built).
        augmentations: detectron2 augmentations (see :func:`build_train_augmentations`,
            :func:`build_test_augmentations`); the labels follow with the same source pixels.
        image_format: PIL mode or "BGR" for the image.
        input_size: fixed network input ``(H, W)`` (or int); the augmented image is padded (with
            0, the labels with their builder's ``fill``) to it; it must be a multiple of
            ``size_divisibility``. ``None``: pad to the next multiple of ``size_divisibility``.
        size_divisibility: ViT patch size (14).
        output_stride: input / output size ratio (14 / 8); output size = ``round(input / stride)``.
        panoptic: panoptic target builder (:class:`PanopticTargets`) or ``None`` (depth-only
            datasets such as NYUv2).
        depth: depth target builder (:class:`DepthTargets`) or ``None``.
        with_targets: in test mode, also build ``targets`` (panoptic ones when
            ``pan_seg_file_name`` is present; depth ones when ``depth`` is set).
        skip_invalid: on an unusable sample log a warning naming the file, count it
            (``num_skipped``, ``skipped_files``; per worker process) and return ``None`` (detectron2's
            ``MapDataset`` then draws another sample); otherwise raise.

    A builder has ``read(dataset_dict, image_hw) -> (label [H, W], context)``, ``fill`` (label
    value of padding / pixels without a source), ``optional`` (training samples without a label
    are allowed), ``has_label(dataset_dict)`` and ``__call__(label, context, input_hw,
    output_hw) -> dict`` of targets.

    Output dict: the input dict's keys plus ``image`` (uint8 CHW tensor, padded), ``height``,
    ``width`` (original image size), ``file_name``, ``image_id``, ``image_size_unpadded``
    (``(h, w)`` after augmentation, before padding) and, when built, ``targets`` (panoptic keys
    of :func:`pe_panoptic.data.targets.panoptic_targets` and/or ``depth`` [h, w] float32 and
    ``depth_valid`` [h, w] bool of :func:`pe_panoptic.data.depth_labels.depth_targets`).
    """

    def __init__(
        self,
        is_train: bool,
        *,
        augmentations: Sequence[T.Augmentation],
        image_format: str = "RGB",
        input_size: Optional[Union[int, Tuple[int, int]]] = None,
        size_divisibility: int = 14,
        output_stride: float = 14 / 8,
        panoptic: Optional[PanopticTargets] = None,
        depth: Optional[DepthTargets] = None,
        with_targets: bool = False,
        skip_invalid: bool = False,
    ):
        self.is_train = bool(is_train)
        self.augmentations = T.AugmentationList(list(augmentations))
        self.image_format = image_format
        self.size_divisibility = int(size_divisibility)
        if self.size_divisibility <= 0:
            raise ValueError(f"size_divisibility must be positive, got {size_divisibility}")
        self.input_size = None if input_size is None else size_hw(input_size, "input_size")
        if self.input_size is not None and any(s % self.size_divisibility for s in self.input_size):
            raise ValueError(
                f"input_size {self.input_size} must be a multiple of size_divisibility={self.size_divisibility}"
            )
        if not output_stride > 0:
            raise ValueError(f"output_stride must be > 0, got {output_stride}")
        self.output_stride = float(output_stride)
        self.panoptic = _check_builder(panoptic, "panoptic", "PanopticTargets(dataset_name=...)")
        self.depth = _check_builder(depth, "depth", "DepthTargets('metric')")
        if self.is_train and panoptic is None and depth is None:
            raise ValueError("training with panoptic=None and depth=None builds no targets")
        self.with_targets = bool(with_targets)
        self.skip_invalid = bool(skip_invalid)
        self.num_skipped = 0
        self.skipped_files: List[str] = []

    # ------------------------------------------------------------------ helpers
    def output_size(self, input_hw: Tuple[int, int]) -> Tuple[int, int]:
        """Network output size for an input size: ``round(input / output_stride)`` (420 -> 240)."""
        return tuple(int(round(s / self.output_stride)) for s in input_hw)

    def padded_size(self, hw: Tuple[int, int], file_name: str) -> Tuple[int, int]:
        """Network input size for an augmented image of size ``hw``."""
        if self.input_size is not None:
            if hw[0] > self.input_size[0] or hw[1] > self.input_size[1]:
                raise InvalidSampleError(
                    f"{file_name}: augmented image size {hw} exceeds input_size {self.input_size} "
                    "(the augmentations must resize/crop to it)"
                )
            return self.input_size
        d = self.size_divisibility
        return tuple(int(math.ceil(s / d) * d) for s in hw)

    def wants(self, builder, d: dict) -> bool:
        """Whether ``builder`` builds targets for dataset dict ``d``."""
        if builder is None or not (self.is_train or self.with_targets):
            return False
        return builder.has_label(d) or (self.is_train and not builder.optional)

    # ------------------------------------------------------------------ mapping
    def __call__(self, dataset_dict: dict) -> Optional[dict]:
        try:
            return self._map(dataset_dict)
        except (InvalidSampleError, FileNotFoundError) as e:
            if not self.skip_invalid:
                raise
            name = dataset_dict.get("file_name", "<no file_name>")
            self.num_skipped += 1
            self.skipped_files.append(name)
            logger.warning(f"skipping sample {name} ({self.num_skipped} skipped so far by this process): {e}")
            return None

    def _map(self, dataset_dict: dict) -> dict:
        d = copy.copy(dataset_dict)
        file_name = d.get("file_name")
        if not file_name:
            raise InvalidSampleError(f"dataset dict has no 'file_name': keys {sorted(d)}")
        image = read_image_8bit(file_name, self.image_format)
        height, width = image.shape[:2]
        if ("height" in d and d["height"] != height) or ("width" in d and d["width"] != width):
            raise InvalidSampleError(
                f"image {file_name} is {width}x{height} (w x h) but the dataset dict says "
                f"{d.get('width')}x{d.get('height')}"
            )

        builders = [b for b in (self.panoptic, self.depth) if self.wants(b, d)]
        if self.is_train and not builders:
            raise InvalidSampleError(f"{file_name}: no 'pan_seg_file_name' in the dataset dict, no targets to train on")
        # depth is read first (as its errors were reported first), the targets are built panoptic first
        labels = {id(b): b.read(d, (height, width)) for b in reversed(builders)}
        src = source_index_image(height, width, file_name) if builders else None
        aug_input = T.AugInput(image, sem_seg=src)
        self.augmentations(aug_input)
        image = aug_input.image
        src_idx = decode_source_index(aug_input.sem_seg) if src is not None else None
        hu, wu = image.shape[:2]
        if hu == 0 or wu == 0:
            raise InvalidSampleError(f"image {file_name} ({width}x{height}) has an empty size after augmentation")
        if min(hu, wu) < self.size_divisibility:
            log_every_n_seconds(
                logging.WARNING,
                f"image {file_name} is {wu}x{hu} after augmentation, smaller than one "
                f"{self.size_divisibility}-px patch; padding it",
                n=60,
                name=__name__,
            )
        H, W = self.padded_size((hu, wu), file_name)
        pad = ((0, H - hu), (0, W - wu)) + ((0, 0),) * (image.ndim - 2)
        image = np.pad(image, pad, mode="constant", constant_values=0)
        if image.ndim == 2:
            image = image[:, :, None]

        d["image"] = torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1)))
        d["height"], d["width"] = height, width
        d["file_name"] = file_name
        d["image_id"] = d.get("image_id", os.path.splitext(os.path.basename(file_name))[0])
        d["image_size_unpadded"] = (hu, wu)
        for b in builders:
            label, context = labels[id(b)]
            label = gather_source(label, src_idx, b.fill)
            label = np.pad(label, ((0, H - hu), (0, W - wu)), mode="constant", constant_values=b.fill)
            d.setdefault("targets", {}).update(b(label, context, (H, W), self.output_size((H, W))))
        return d
