"""Dataset mapper: detectron2 dataset dict -> model input with dense training targets.

Reads the image and the panoptic PNG (``panopticapi.utils.rgb2id``), validates them against
``segments_info``, applies detectron2 augmentations to both (the id map as a segmentation, i.e.
nearest interpolation), pads to the network input size and builds the targets of
:func:`pe_panoptic.data.targets.panoptic_targets` at the output resolution (input * 8/14, paper
Sec. 5.1). Optionally also the depth targets of :mod:`pe_panoptic.data.depth_labels` (metric
ground truth, or relative-disparity pseudo-labels; paper Sec. 3.4, Appendix A), augmented with
the same transforms; depth-only datasets (NYUv2) use ``panoptic=False``.
"""
from __future__ import annotations

import copy
import functools
import logging
import math
import os
from typing import Iterable, List, Optional, Sequence, Set, Tuple, Union

import numpy as np
import torch
from PIL import Image

from detectron2.data import MetadataCatalog
from detectron2.data import detection_utils as utils
from detectron2.data import transforms as T
from detectron2.utils.file_io import PathManager
from detectron2.utils.logger import log_every_n_seconds
from panopticapi.utils import rgb2id

from pe_panoptic.data.targets import panoptic_targets
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

__all__ = [
    "InvalidSampleError",
    "PanopticCentroidDatasetMapper",
    "build_train_augmentations",
    "build_test_augmentations",
    "read_image_8bit",
    "read_panoptic_ids",
    "read_panoptic_rgb",
    "panoptic_rgb_to_ids",
    "check_segment_ids",
    "compact_segment_labels",
]

logger = logging.getLogger(__name__)

#: PIL modes with more than 8 bits per sample (PIL's RGB conversion would clip them at 255)
_HIGH_DEPTH_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")
#: PIL modes a panoptic PNG may have (3 colour channels encode the id, panopticapi format)
_PANOPTIC_PNG_MODES = ("RGB", "RGBA", "P")


def _size_hw(size, name: str) -> Tuple[int, int]:
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
    h, w = _size_hw(size, "size")
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


def _check_exists(file_name: str, what: str) -> None:
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
    _check_exists(file_name, "image file")
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


def read_panoptic_ids(file_name: str) -> np.ndarray:
    """Panoptic id map ``[H, W]`` int64 from a panopticapi PNG (``id = R + 256 G + 256^2 B``)."""
    return rgb2id(read_panoptic_rgb(file_name)).astype(np.int64)


def panoptic_rgb_to_ids(rgb: np.ndarray) -> np.ndarray:
    """``rgb2id`` as uint32 with shifts (``R | G << 8 | B << 16``, ~2x faster than panopticapi's)."""
    c = rgb.astype(np.uint32)
    return c[..., 0] | (c[..., 1] << 8) | (c[..., 2] << 16)


def read_panoptic_rgb(file_name: str) -> np.ndarray:
    """The ``[H, W, 3]`` uint8 RGB pixels of a panopticapi PNG (ids: :func:`panoptic_rgb_to_ids`)."""
    _check_exists(file_name, "panoptic PNG")
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


def check_segment_ids(pan_ids: np.ndarray, segments_info: Sequence[dict], file_name: str) -> None:
    """The nonzero ids of the (original, un-augmented) PNG and the ids of ``segments_info`` must be
    the same sets; raises :class:`InvalidSampleError` naming the file and the offending ids."""
    png_ids = np.unique(pan_ids)
    png_ids = png_ids[png_ids != 0]
    info_ids = np.array(sorted(int(s["id"]) for s in segments_info), dtype=np.int64)
    if len(np.unique(info_ids)) != len(info_ids):
        raise InvalidSampleError(f"{file_name}: segments_info has duplicate ids {info_ids.tolist()}")
    extra = np.setdiff1d(png_ids, info_ids)
    if len(extra):
        raise InvalidSampleError(f"panoptic PNG {file_name}: ids {extra[:20].tolist()} are not in segments_info")
    absent = np.setdiff1d(info_ids, png_ids)
    if len(absent):
        raise InvalidSampleError(
            f"panoptic PNG {file_name}: segments_info ids {absent[:20].tolist()} have no pixel in the PNG"
        )


def compact_segment_labels(
    pan_ids: np.ndarray, segments_info: Sequence[dict], file_name: str
) -> Tuple[np.ndarray, List[dict]]:
    """Validate a panoptic id map against ``segments_info`` like :func:`check_segment_ids` (same
    errors) and renumber it compactly: returns ``labels [H, W]`` int64 (0 = unlabeled, ``k`` =
    the segment whose id is the k-th smallest) and ``segments_info`` with those ids. The
    renumbering keeps the id order, so :func:`pe_panoptic.data.targets.panoptic_targets` gives the
    same targets, and it replaces a sort of the pixels by a search among the few segment ids
    (the targets then count pixels with histograms)."""
    info_ids = np.array(sorted(int(s["id"]) for s in segments_info), dtype=np.int64)
    if len(np.unique(info_ids)) != len(info_ids):
        raise InvalidSampleError(f"{file_name}: segments_info has duplicate ids {info_ids.tolist()}")
    dtype = pan_ids.dtype if np.issubdtype(pan_ids.dtype, np.integer) else np.int64
    if len(info_ids) and (info_ids[0] <= 0 or info_ids[-1] > np.iinfo(dtype).max):
        check_segment_ids(pan_ids, segments_info, file_name)  # such ids have no pixel: it raises
        raise InvalidSampleError(f"panoptic PNG {file_name}: invalid segments_info ids {info_ids.tolist()}")
    keys = np.concatenate(([0], info_ids)).astype(dtype)  # label k <-> keys[k]; 0 = unlabeled
    labels = np.minimum(np.searchsorted(keys, pan_ids), len(keys) - 1)
    unknown = keys[labels] != pan_ids
    if unknown.any():
        ids = np.unique(pan_ids[unknown]).astype(np.int64)
        raise InvalidSampleError(f"panoptic PNG {file_name}: ids {ids[:20].tolist()} are not in segments_info")
    absent = np.bincount(labels.ravel(), minlength=len(keys))[1:] == 0
    if absent.any():
        raise InvalidSampleError(
            f"panoptic PNG {file_name}: segments_info ids {info_ids[absent][:20].tolist()} have no pixel in the PNG"
        )
    rank = {int(i): k + 1 for k, i in enumerate(info_ids)}
    return labels, [dict(s, id=rank[int(s["id"])]) for s in segments_info]


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


class PanopticCentroidDatasetMapper:
    """Map a detectron2 panoptic dataset dict to the model input (see module docstring).

    Args:
        is_train: training mode (targets always built; a ``pan_seg_file_name`` is required).
        augmentations: detectron2 augmentations (see :func:`build_train_augmentations`,
            :func:`build_test_augmentations`); the id map follows with nearest interpolation.
        image_format: PIL mode or "BGR" for the image.
        input_size: fixed network input ``(H, W)`` (or int); the augmented image is padded (with
            0, the id map with 0 = unlabeled) to it; it must be a multiple of
            ``size_divisibility``. ``None``: pad to the next multiple of ``size_divisibility``.
        size_divisibility: ViT patch size (14).
        output_stride: input / output size ratio (14 / 8); output size = ``round(input / stride)``.
        ignore_label, eds_D, eds_w_min, use_eds, include_void: see
            :func:`pe_panoptic.data.targets.panoptic_targets` (``eds_D`` in input pixels).
        dataset_name: registered dataset whose metadata gives the thing classes (for
            ``segments_info`` without ``isthing``, e.g. detectron2's Cityscapes panoptic) and the
            number of classes (to validate ``category_id``).
        thing_ids: contiguous thing class ids; overrides the metadata of ``dataset_name``. A
            segment's own ``isthing`` flag, when present, is used as is.
        skip_invalid: on an unusable sample log a warning naming the file, count it
            (``num_skipped``, ``skipped_files``; per worker process) and return ``None`` (detectron2's
            ``MapDataset`` then draws another sample); otherwise raise.
        with_targets: in test mode, also build ``targets`` (panoptic ones when
            ``pan_seg_file_name`` is present; depth ones when ``depth`` is set).
        panoptic: ``True``: panoptic targets (a ``pan_seg_file_name`` is required in training);
            ``False``: none (depth-only datasets such as NYUv2); ``"auto"``: for the dicts that
            have a ``pan_seg_file_name`` (mixed panoptic + depth datasets).
        depth: ``None`` (no depth targets), ``"metric"`` (metres from the dict's
            ``depth_file_name``) or ``"disparity"`` (relative disparity in ``[0, 1]``: the
            pseudo-label ``<depth_root>/<image stem>.npy|.png`` if it exists, else ``1 / depth``
            of the dict's ``depth_file_name``); see :mod:`pe_panoptic.data.depth_labels`.
        depth_root: pseudo-label folder(s) searched in order (``"disparity"`` only). Default:
            ``$DETECTRON2_DATASETS/<dataset_name>_depth_pseudo`` when ``dataset_name`` is set.
        min_depth, max_depth: valid metric range (NYUv2: 0.001 and 10 m, exclusive).
        depth_scale: depth PNG units per metre (1000: millimetres).

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
        ignore_label: int = 255,
        eds_D: float = 20.0,
        eds_w_min: float = 0.0,
        use_eds: bool = True,
        include_void: bool = True,
        dataset_name: Optional[str] = None,
        thing_ids: Optional[Iterable[int]] = None,
        skip_invalid: bool = False,
        with_targets: bool = False,
        panoptic: Union[bool, str] = True,
        depth: Optional[str] = None,
        depth_root: Optional[Union[str, Sequence[str]]] = None,
        min_depth: float = DEFAULT_MIN_DEPTH,
        max_depth: float = DEFAULT_MAX_DEPTH,
        depth_scale: float = DEPTH_PNG_SCALE,
    ):
        self.is_train = bool(is_train)
        self.augmentations = T.AugmentationList(list(augmentations))
        self.image_format = image_format
        self.size_divisibility = int(size_divisibility)
        if self.size_divisibility <= 0:
            raise ValueError(f"size_divisibility must be positive, got {size_divisibility}")
        self.input_size = None if input_size is None else _size_hw(input_size, "input_size")
        if self.input_size is not None and any(s % self.size_divisibility for s in self.input_size):
            raise ValueError(
                f"input_size {self.input_size} must be a multiple of size_divisibility={self.size_divisibility}"
            )
        if not output_stride > 0:
            raise ValueError(f"output_stride must be > 0, got {output_stride}")
        self.output_stride = float(output_stride)
        self.ignore_label = int(ignore_label)
        self.target_kwargs = dict(
            ignore_label=self.ignore_label, eds_D=float(eds_D), eds_w_min=float(eds_w_min),
            use_eds=bool(use_eds), include_void=bool(include_void),
        )
        self.num_classes: Optional[int] = None
        meta_things: Optional[Set[int]] = None
        if dataset_name is not None:
            meta = MetadataCatalog.get(dataset_name)
            if hasattr(meta, "thing_dataset_id_to_contiguous_id"):
                meta_things = set(int(v) for v in meta.thing_dataset_id_to_contiguous_id.values())
            if hasattr(meta, "stuff_classes"):
                self.num_classes = len(meta.stuff_classes)
            if meta_things is None and thing_ids is None and panoptic is not False:
                raise ValueError(f"dataset {dataset_name!r} has no thing_dataset_id_to_contiguous_id metadata")
        self.thing_ids = set(int(i) for i in thing_ids) if thing_ids is not None else meta_things
        self.dataset_name = dataset_name
        self.skip_invalid = bool(skip_invalid)
        self.with_targets = bool(with_targets)
        if panoptic not in (True, False, "auto"):
            raise ValueError(f"panoptic must be True, False or 'auto', got {panoptic!r}")
        self.panoptic = panoptic
        if depth is not None and depth not in DEPTH_KINDS:
            raise ValueError(f"depth must be None or one of {DEPTH_KINDS}, got {depth!r}")
        if self.is_train and panoptic is False and depth is None:
            raise ValueError("training with panoptic=False and depth=None builds no targets")
        if not 0 <= min_depth < max_depth:
            raise ValueError(f"need 0 <= min_depth < max_depth, got {min_depth}, {max_depth}")
        if not depth_scale > 0:
            raise ValueError(f"depth_scale must be > 0, got {depth_scale}")
        self.depth = depth
        if depth_root is None:
            roots = [default_pseudo_depth_root(dataset_name)] if dataset_name is not None else []
        else:
            single = isinstance(depth_root, (str, os.PathLike))
            roots = [os.fspath(depth_root)] if single else [os.fspath(r) for r in depth_root]
        self.depth_roots: List[str] = roots if depth == "disparity" else []
        self.min_depth, self.max_depth, self.depth_scale = float(min_depth), float(max_depth), float(depth_scale)
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

    def segments_with_isthing(self, segments_info: Sequence[dict], file_name: str) -> List[dict]:
        """Copy of ``segments_info`` where every segment has ``isthing`` (own flag, else
        ``category_id in thing_ids``); validates ``category_id``."""
        out = []
        for s in segments_info:
            if "id" not in s or "category_id" not in s:
                raise InvalidSampleError(f"{file_name}: segments_info entry without 'id'/'category_id': {s}")
            cat = int(s["category_id"])
            if cat < 0 or cat == self.ignore_label or (self.num_classes is not None and cat >= self.num_classes):
                raise InvalidSampleError(
                    f"{file_name}: segment {s['id']} has category_id {cat}, expected a contiguous id in "
                    f"[0, {self.num_classes if self.num_classes is not None else '?'})"
                )
            s = dict(s)
            if "isthing" not in s:
                if self.thing_ids is None:
                    raise InvalidSampleError(
                        f"{file_name}: segments_info has no 'isthing'; pass dataset_name or thing_ids to the mapper"
                    )
                s["isthing"] = cat in self.thing_ids
            out.append(s)
        return out

    def read_depth_label(self, d: dict, file_name: str) -> np.ndarray:
        """Depth label of a sample at the original image size, ``[H, W]`` float32 with NaN =
        invalid: metres (``depth="metric"``) or raw disparity (``depth="disparity"``)."""
        gt_file = d.get("depth_file_name")
        if self.depth == "metric":
            if not gt_file:
                raise InvalidSampleError(f"{file_name}: depth='metric' needs 'depth_file_name' in the dataset dict")
            return read_metric_depth(gt_file, self.depth_scale)
        try:
            return read_disparity(find_pseudo_depth_file(self.depth_roots, file_name))
        except FileNotFoundError:
            if not gt_file:
                raise
        return depth_to_disparity(read_metric_depth(gt_file, self.depth_scale), self.min_depth, self.max_depth)

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

        pan_file = d.get("pan_seg_file_name")
        if self.panoptic is True:
            need_targets = self.is_train or (self.with_targets and pan_file is not None)
        else:
            need_targets = (self.is_train or self.with_targets) and self.panoptic == "auto" and pan_file is not None
        want_depth = self.depth is not None and (self.is_train or self.with_targets)
        if self.is_train and not need_targets and not want_depth:
            raise InvalidSampleError(f"{file_name}: no 'pan_seg_file_name' in the dataset dict, no targets to train on")
        depth_map = None
        if want_depth:
            depth_map = self.read_depth_label(d, file_name)
            if depth_map.shape != (height, width):
                raise InvalidSampleError(
                    f"depth label of {file_name} is {depth_map.shape[1]}x{depth_map.shape[0]} (w x h) but the "
                    f"image is {width}x{height} (depth_file_name={d.get('depth_file_name')!r})"
                )
        if need_targets:
            if pan_file is None:
                raise InvalidSampleError(f"{file_name}: training needs 'pan_seg_file_name' in the dataset dict")
            pan_ids = panoptic_rgb_to_ids(read_panoptic_rgb(pan_file))
            if pan_ids.shape != (height, width):
                raise InvalidSampleError(
                    f"panoptic PNG {pan_file} is {pan_ids.shape[1]}x{pan_ids.shape[0]} (w x h) but image "
                    f"{file_name} is {width}x{height}"
                )
            segments = self.segments_with_isthing(d.get("segments_info", []), file_name)
            # validated, and renumbered 1..K in id order (same targets, cheaper to compute)
            pan_ids, segments = compact_segment_labels(pan_ids, segments, pan_file)
        else:
            pan_ids = None
        # Labels follow the image through the augmentations as a map of source-pixel indices
        # encoded in a uint8 RGBA image: detectron2 resizes uint8 maps with PIL's NEAREST, which
        # samples pixel centres like the image resize (its float path, torch's legacy "nearest",
        # is half a pixel off), and panoptic ids and depth are then gathered from the very same
        # source pixels.
        src = source_index_image(height, width, file_name) if (pan_ids is not None or depth_map is not None) else None
        aug_input = T.AugInput(image, sem_seg=src)
        transforms = self.augmentations(aug_input)
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
        if need_targets:
            pan = gather_source(pan_ids, src_idx, 0)
            pan = np.pad(pan, ((0, H - hu), (0, W - wu)), mode="constant", constant_values=0)
            try:
                d["targets"] = panoptic_targets(
                    pan, segments, input_hw=(H, W), output_hw=self.output_size((H, W)), **self.target_kwargs
                )
            except ValueError as e:
                raise InvalidSampleError(f"{pan_file}: {e}") from e
        if depth_map is not None:
            depth_map = gather_source(depth_map, src_idx, np.nan)
            depth_map = np.pad(depth_map, ((0, H - hu), (0, W - wu)), mode="constant", constant_values=np.nan)
            d.setdefault("targets", {}).update(
                depth_targets(depth_map, self.output_size((H, W)), self.depth, self.min_depth, self.max_depth)
            )
        return d
