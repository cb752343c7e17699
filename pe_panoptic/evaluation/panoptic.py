"""PQ evaluation: detectron2's ``COCOPanopticEvaluator`` that checks its ground truth, reports an
undefined PQ as NaN, and can score only the images it was given.

Differences from the parent (its ``process`` and the PQ numbers are unchanged):

* before scoring, the GT JSON is checked against its PNGs
  (:func:`pe_panoptic.evaluation.gt_check.check_panoptic_gt`: duplicate ``image_id``, segments
  on one side only, wrong ``area``): inconsistent ground truth is refused, naming file and segment;
* panopticapi divides by the number of categories that have any true positive, false positive or
  false negative, and raises ``ZeroDivisionError`` when there is none (e.g. a split whose segments
  are all crowd, or ``Things`` on images without things). Such a PQ is *undefined*: it is
  reported as ``NaN`` with a warning naming the dataset, instead of a crash after training;
* ``only_predicted=True`` scores only the images that have a prediction (the GT JSON restricted to
  them), for tools that run on a subset (``--max-images``); panopticapi otherwise demands a
  prediction for every GT image.
"""
from __future__ import annotations

import contextlib
import io
import itertools
import json
import logging
import math
import os
import tempfile
from collections import OrderedDict

from detectron2.evaluation import COCOPanopticEvaluator
from detectron2.evaluation.panoptic_evaluation import _print_panoptic_results
from detectron2.utils import comm
from detectron2.utils.file_io import PathManager

from pe_panoptic.evaluation.gt_check import check_panoptic_gt

__all__ = ["PanopticEvaluator", "pq_from_annotations", "score_only_predicted"]

logger = logging.getLogger(__name__)

_GROUPS = (("All", None), ("Things", True), ("Stuff", False))


def pq_from_annotations(gt: dict, pred: dict, gt_folder: str, pred_folder: str) -> dict:
    """panopticapi's ``pq_compute`` on loaded JSONs, with ``{"pq": nan, ..., "n": 0}`` for a group
    (All / Things / Stuff) in which no category has any segment, instead of ``ZeroDivisionError``."""
    from panopticapi.evaluation import pq_compute_multi_core

    categories = {c["id"]: c for c in gt["categories"]}
    pred_by_id = {a["image_id"]: a for a in pred["annotations"]}
    matched = []
    for g in gt["annotations"]:
        if g["image_id"] not in pred_by_id:
            raise KeyError(f"no prediction for the image with id: {g['image_id']}")
        matched.append((g, pred_by_id[g["image_id"]]))
    with contextlib.redirect_stdout(io.StringIO()):
        stat = pq_compute_multi_core(matched, gt_folder, pred_folder, categories)
    out = {}
    for name, isthing in _GROUPS:
        defined = any(
            stat.pq_per_cat[c].tp + stat.pq_per_cat[c].fp + stat.pq_per_cat[c].fn > 0
            for c, info in categories.items() if isthing is None or (info["isthing"] == 1) == isthing
        )
        if defined:
            out[name], _ = stat.pq_average(categories, isthing=isthing)
        else:
            out[name] = {"pq": math.nan, "sq": math.nan, "rq": math.nan, "n": 0}
    return out


class PanopticEvaluator(COCOPanopticEvaluator):
    """``COCOPanopticEvaluator`` with checked ground truth and NaN for an undefined PQ (module doc)."""

    def __init__(self, dataset_name: str, output_dir=None, *, only_predicted: bool = False):
        super().__init__(dataset_name, output_dir)
        self._dataset_name = dataset_name
        self._only_predicted = only_predicted

    def evaluate(self):
        comm.synchronize()
        self._predictions = list(itertools.chain(*comm.gather(self._predictions)))
        if not comm.is_main_process():
            return
        gt_json = PathManager.get_local_path(self._metadata.panoptic_json)
        gt_folder = PathManager.get_local_path(self._metadata.panoptic_root)
        with open(gt_json) as f:
            gt = json.load(f)
        if self._only_predicted:
            keep = {p["image_id"] for p in self._predictions}
            gt["annotations"] = [a for a in gt["annotations"] if a["image_id"] in keep]
            gt["images"] = [im for im in gt.get("images", []) if im["id"] in keep]
        check_panoptic_gt(gt, gt_json, gt_folder)
        with tempfile.TemporaryDirectory(prefix="panoptic_eval") as pred_dir:
            logger.info(f"Writing all panoptic predictions to {pred_dir} ...")
            for p in self._predictions:
                with open(os.path.join(pred_dir, p["file_name"]), "wb") as f:
                    f.write(p.pop("png_string"))
            pred = dict(gt, annotations=self._predictions)
            predictions_json = os.path.join(self._output_dir or pred_dir, "predictions.json")
            with PathManager.open(predictions_json, "w") as f:
                f.write(json.dumps(pred))
            pq_res = pq_from_annotations(gt, pred, gt_folder, pred_dir)
        res = {}
        for group, suffix in (("All", ""), ("Things", "_th"), ("Stuff", "_st")):
            for k in ("pq", "sq", "rq"):
                res[k.upper() + suffix] = 100 * pq_res[group][k]
            if math.isnan(pq_res[group]["pq"]):
                scope = "" if group == "All" else f" of the {group.lower()}"
                logger.warning(f"PQ{suffix} of {self._dataset_name!r} is undefined (reported as NaN): no category"
                               f"{scope} has a non-crowd ground-truth or predicted segment in the evaluated images")
        _print_panoptic_results(pq_res)
        return OrderedDict({"panoptic_seg": res})


def score_only_predicted(evaluator):
    """Make every :class:`PanopticEvaluator` in ``evaluator`` (one, or a ``DatasetEvaluators``)
    score only the images it receives (tools that stop after N images); returns ``evaluator``.
    A plain ``COCOPanopticEvaluator`` would demand every GT image: ``TypeError`` naming it."""
    for ev in getattr(evaluator, "_evaluators", [evaluator]):
        if isinstance(ev, PanopticEvaluator):
            ev._only_predicted = True
        elif isinstance(ev, COCOPanopticEvaluator):
            raise TypeError(f"{type(ev).__name__} scores every image of its dataset; use "
                            "pe_panoptic.evaluation.PanopticEvaluator to evaluate a subset of the images")
    return evaluator
