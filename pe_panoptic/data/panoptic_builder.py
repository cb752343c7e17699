"""``PanopticTargets``: the panoptic target builder of the dataset mapper.

It holds the target settings (EDS, void, ignore label) and the class metadata, reads a sample's
panoptic PNG (validated against ``segments_info``, renumbered compactly) and, after the mapper
has augmented and padded the id map, calls :func:`pe_panoptic.data.targets.panoptic_targets`.
"""
from __future__ import annotations

from typing import Iterable, List, Optional, Sequence, Set, Tuple

import numpy as np

from detectron2.data import MetadataCatalog

from pe_panoptic.data.errors import InvalidSampleError
from pe_panoptic.data.panoptic_png import panoptic_rgb_to_ids, read_panoptic_rgb
from pe_panoptic.data.segments import compact_segment_labels
from pe_panoptic.data.targets import panoptic_targets

__all__ = ["PanopticTargets"]


class PanopticTargets:
    """Panoptic targets of a sample (semantic classes, centroids, EDS weights).

    Args:
        dataset_name: registered dataset whose metadata gives the thing classes
            (``thing_dataset_id_to_contiguous_id``) and the number of classes (``stuff_classes``,
            to validate ``category_id``). A segment's own ``isthing`` flag, when present, is used as is.
        thing_ids: contiguous thing class ids (instead of / overriding the metadata).
        ignore_label, eds_D, eds_w_min, use_eds, include_void, void_weight: see
            :func:`pe_panoptic.data.targets.panoptic_targets` (``eds_D`` in input pixels).
        optional: ``False``: a training sample must have a ``pan_seg_file_name``; ``True``: only
            the dicts that have one get panoptic targets (mixed panoptic + depth datasets).
    """

    fill = 0  #: id of the padding and of pixels without a source (unlabeled)

    def __init__(self, *, dataset_name: Optional[str] = None, thing_ids: Optional[Iterable[int]] = None,
                 ignore_label: int = 255, eds_D: float = 20.0, eds_w_min: float = 0.0, use_eds: bool = True,
                 include_void: bool = True, void_weight: float = 1.0, optional: bool = False):
        self.ignore_label = int(ignore_label)
        self.target_kwargs = dict(ignore_label=self.ignore_label, eds_D=float(eds_D), eds_w_min=float(eds_w_min),
                                  use_eds=bool(use_eds), include_void=bool(include_void),
                                  void_weight=float(void_weight))
        self.optional = bool(optional)
        self.num_classes: Optional[int] = None
        meta_things: Optional[Set[int]] = None
        if dataset_name is not None:
            meta = MetadataCatalog.get(dataset_name)
            if hasattr(meta, "thing_dataset_id_to_contiguous_id"):
                meta_things = set(int(v) for v in meta.thing_dataset_id_to_contiguous_id.values())
            if hasattr(meta, "stuff_classes"):
                self.num_classes = len(meta.stuff_classes)
            if meta_things is None and thing_ids is None:
                raise ValueError(f"PanopticTargets: dataset {dataset_name!r} has no thing_dataset_id_to_contiguous_id "
                                 "metadata (pass thing_ids)")
        self.thing_ids = set(int(i) for i in thing_ids) if thing_ids is not None else meta_things
        self.dataset_name = dataset_name

    def has_label(self, d: dict) -> bool:
        return d.get("pan_seg_file_name") is not None

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
                        f"{file_name}: segments_info has no 'isthing'; pass dataset_name or thing_ids to PanopticTargets"
                    )
                s["isthing"] = cat in self.thing_ids
            out.append(s)
        return out

    def read(self, d: dict, image_hw: Tuple[int, int]) -> Tuple[np.ndarray, Tuple[List[dict], str]]:
        """The sample's id map at the original size (validated, renumbered 1..K in id order: the
        same targets, cheaper to compute) and the context :meth:`__call__` needs."""
        file_name = d.get("file_name")
        pan_file = d.get("pan_seg_file_name")
        if pan_file is None:
            raise InvalidSampleError(f"{file_name}: training needs 'pan_seg_file_name' in the dataset dict")
        pan_ids = panoptic_rgb_to_ids(read_panoptic_rgb(pan_file))
        if pan_ids.shape != tuple(image_hw):
            raise InvalidSampleError(
                f"panoptic PNG {pan_file} is {pan_ids.shape[1]}x{pan_ids.shape[0]} (w x h) but image "
                f"{file_name} is {image_hw[1]}x{image_hw[0]}"
            )
        segments = self.segments_with_isthing(d.get("segments_info", []), file_name)
        pan_ids, segments = compact_segment_labels(pan_ids, segments, pan_file)
        return pan_ids, (segments, pan_file)

    def __call__(self, pan: np.ndarray, context: Tuple[List[dict], str], input_hw: Tuple[int, int],
                 output_hw: Tuple[int, int]) -> dict:
        """Targets of the augmented, padded id map ``pan`` (input frame) at ``output_hw``."""
        segments, pan_file = context
        try:
            return panoptic_targets(pan, segments, input_hw=input_hw, output_hw=output_hw, **self.target_kwargs)
        except ValueError as e:
            raise InvalidSampleError(f"{pan_file}: {e}") from e
