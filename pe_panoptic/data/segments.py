"""Validation of a panoptic id map against its ``segments_info`` and compact renumbering."""
from __future__ import annotations

from typing import List, Sequence, Tuple

import numpy as np

from pe_panoptic.data.errors import InvalidSampleError

__all__ = ["check_segment_ids", "compact_segment_labels"]


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
