"""Consistency of panoptic ground truth (JSON ``segments_info`` against the PNGs) before scoring.

panopticapi's ``pq_compute`` trusts the GT JSON: a segment listed in the JSON but absent from the
PNG counts as a false negative, a wrong ``area`` changes every IoU of the segment, a PNG id missing
from the JSON is silently treated as void, and annotations sharing an ``image_id`` are all scored
against the one prediction of that id. Each of these changes PQ without a word. Here they are
refused, naming the JSON, the PNG, the ``image_id`` and the segment:

* every ``image_id`` appears once;
* the nonzero ids of each PNG and the ``id`` s of its ``segments_info`` are the same sets;
* every segment's ``area`` equals its pixel count in the PNG (what panopticapi uses as the GT area).

A successful check is remembered per process (JSON path, size and modification time, PNG folder
and the image ids checked), so periodic evaluations during training read the PNGs once.
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Iterable, List, Optional, Sequence, Set, Tuple

import numpy as np

from pe_panoptic.data.validation import DatasetError

__all__ = ["GroundTruthError", "check_gt_segments", "check_panoptic_gt", "duplicate_image_ids"]

_MAX_LISTED = 10
_CHECKED: Set[Tuple] = set()


class GroundTruthError(DatasetError):
    """Panoptic ground truth whose JSON disagrees with its PNGs (or with itself)."""


def duplicate_image_ids(annotations: Iterable[dict]) -> List:
    """``image_id`` values that more than one annotation uses (in first-seen order)."""
    seen, dup = set(), []
    for a in annotations:
        i = a.get("image_id") if isinstance(a, dict) else None
        if i in seen and i not in dup:
            dup.append(i)
        seen.add(i)
    return dup


def check_gt_segments(pan_ids: np.ndarray, segments_info: Sequence[dict], png_file: str) -> List[str]:
    """Problems (empty when consistent) of one GT PNG's id map against its ``segments_info``:
    ids on one side only, duplicate ids, missing or wrong ``area``."""
    ids, counts = np.unique(pan_ids, return_counts=True)
    area_of = {int(i): int(c) for i, c in zip(ids, counts) if i != 0}
    problems = []
    info_ids = [int(s["id"]) for s in segments_info]
    if len(set(info_ids)) != len(info_ids):
        problems.append(f"{png_file}: segments_info repeats ids {sorted(i for i in set(info_ids) if info_ids.count(i) > 1)}")
    extra = sorted(set(area_of) - set(info_ids))
    if extra:
        problems.append(f"{png_file}: PNG ids {extra[:20]} are not in the JSON's segments_info (panopticapi would "
                        "score their pixels as void)")
    for s in segments_info:
        sid = int(s["id"])
        if sid not in area_of:
            problems.append(f"{png_file}: segment id {sid} (category {s.get('category_id')}) of the JSON has no "
                            "pixel in the PNG (panopticapi would count it as a missed segment)")
        elif "area" not in s:
            problems.append(f"{png_file}: segment id {sid} has no 'area' (panopticapi needs it; PNG area "
                            f"{area_of[sid]})")
        elif int(s["area"]) != area_of[sid] or float(s["area"]) != area_of[sid]:
            problems.append(f"{png_file}: segment id {sid} has area {s['area']} in the JSON but {area_of[sid]} "
                            "pixels in the PNG (panopticapi takes the JSON area for the IoU)")
    return problems


def _key(json_file: str, gt_folder: str, image_ids: Sequence) -> Optional[Tuple]:
    try:
        st = os.stat(json_file)
    except OSError:
        return None
    return (os.path.realpath(json_file), st.st_size, st.st_mtime_ns, os.path.realpath(gt_folder),
            frozenset(map(str, image_ids)))


def check_panoptic_gt(gt_data: dict, json_file: str, gt_folder: str, *, workers: int = 4) -> None:
    """Check the annotations of ``gt_data`` (the loaded ``json_file``, possibly restricted to some
    images) against the PNGs in ``gt_folder``; raises :class:`GroundTruthError` listing the
    problems, each naming the PNG and the segment."""
    from pe_panoptic.data.panoptic_png import read_panoptic_ids

    anns = gt_data.get("annotations") or []
    dup = duplicate_image_ids(anns)
    if dup:
        raise GroundTruthError(f"{json_file}: image_id {dup[0]!r} is used by more than one annotation "
                               f"(duplicates: {dup[:10]}); panopticapi would score each copy against the "
                               "same prediction")
    key = _key(json_file, gt_folder, [a["image_id"] for a in anns])
    if key is not None and key in _CHECKED:
        return

    def one(ann) -> List[str]:
        png = os.path.join(gt_folder, ann["file_name"])
        try:
            pan = read_panoptic_ids(png)
        except (OSError, ValueError) as e:
            return [f"{png}: cannot read it: {e}"]
        return [f"image_id {ann['image_id']!r}, {p}" for p in check_gt_segments(pan, ann["segments_info"], png)]

    with ThreadPoolExecutor(max(1, min(workers, len(anns)))) as pool:
        problems = [p for ps in pool.map(one, anns) for p in ps]
    if problems:
        more = f"\n  ... and {len(problems) - _MAX_LISTED} more" if len(problems) > _MAX_LISTED else ""
        raise GroundTruthError(f"{json_file}: the ground truth disagrees with its PNGs in {gt_folder} "
                               f"({len(problems)} problem{'s' if len(problems) > 1 else ''}); refusing to "
                               "evaluate against it:\n  " + "\n  ".join(problems[:_MAX_LISTED]) + more)
    if key is not None:
        _CHECKED.add(key)
