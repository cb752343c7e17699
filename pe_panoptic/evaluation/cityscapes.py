"""Official Cityscapes panoptic evaluation (cityscapesScripts) of detectron2 panoptic outputs.

``cityscapesscripts.evaluation.evalPanopticSemanticLabeling.evaluatePanoptic`` compares COCO
panoptic-format predictions with the ground truth written by cityscapesScripts'
``createPanopticImgs.py`` (``gtFine/cityscapes_panoptic_{split}.json`` + PNG folder, the
metadata ``panoptic_json`` / ``panoptic_root`` of detectron2's builtin
``cityscapes_fine_panoptic_*``). Its categories are Cityscapes ``labelId``s, so each predicted
segment's contiguous class (detectron2's Cityscapes metadata: contiguous id = ``trainId``) is
mapped back with ``thing/stuff_dataset_id_to_contiguous_id`` of the metadata, as detectron2's
``COCOPanopticEvaluator`` does; image ids are the dataset dicts' ``image_id``
(``<city>_<seq>_<frame>``), which is what the official JSON uses.

Reports PQ / SQ / RQ (all, things, stuff; x 100) under ``"cityscapes_panoptic_seg"``.
"""
from __future__ import annotations

import contextlib
import io
import itertools
import json
import logging
import os
import tempfile
from collections import OrderedDict
from typing import Dict, List, Optional

import numpy as np
from PIL import Image

from detectron2.data import MetadataCatalog
from detectron2.evaluation import DatasetEvaluator
from detectron2.utils import comm
from detectron2.utils.file_io import PathManager

__all__ = ["CityscapesPanopticEvaluator", "to_dataset_segments"]

logger = logging.getLogger(__name__)


def to_dataset_segments(segments_info: List[dict], contiguous_to_dataset: Dict[int, int]) -> List[dict]:
    """COCO panoptic ``segments_info`` with dataset category ids (Cityscapes ``labelId``) from a
    model's segments with contiguous ``category_id``. Entries without ``isthing`` are taken to
    carry dataset ids already (detectron2's convention). Only the keys the format needs are kept."""
    out = []
    for s in segments_info:
        cat = int(s["category_id"])
        if s.get("isthing") is not None:
            if cat not in contiguous_to_dataset:
                raise KeyError(f"segment {s.get('id')}: contiguous category_id {cat} is not in the dataset metadata")
            cat = contiguous_to_dataset[cat]
        out.append({"id": int(s["id"]), "category_id": int(cat), "iscrowd": int(s.get("iscrowd", 0))})
    return out


class CityscapesPanopticEvaluator(DatasetEvaluator):
    """PQ with cityscapesScripts' official panoptic evaluation (see module docstring).

    Args:
        dataset_name: a Cityscapes panoptic dataset (metadata ``panoptic_json``,
            ``panoptic_root``, ``thing/stuff_dataset_id_to_contiguous_id``).
        output_dir: where the prediction PNGs / JSON and the official results JSON are written
            (a temporary folder, deleted afterwards, if None).

    Every image of the ground-truth JSON needs a prediction (the official script's rule).
    """

    def __init__(self, dataset_name: str, output_dir: Optional[str] = None):
        meta = MetadataCatalog.get(dataset_name)
        for key in ("panoptic_json", "panoptic_root", "thing_dataset_id_to_contiguous_id",
                    "stuff_dataset_id_to_contiguous_id"):
            if not hasattr(meta, key):
                raise ValueError(f"CityscapesPanopticEvaluator: dataset {dataset_name!r} has no metadata {key!r}")
        self._dataset_name = dataset_name
        self._gt_json = meta.panoptic_json
        self._gt_folder = meta.panoptic_root
        inv = {v: k for k, v in meta.stuff_dataset_id_to_contiguous_id.items()}
        inv.update({v: k for k, v in meta.thing_dataset_id_to_contiguous_id.items()})
        self._contiguous_to_dataset = inv
        self._label_divisor = getattr(meta, "label_divisor", 1000)
        self._thing_contiguous = set(meta.thing_dataset_id_to_contiguous_id.values())
        self._output_dir = output_dir
        self.reset()

    def reset(self):
        self._predictions = []

    def _segments_from_label_map(self, seg: np.ndarray):
        """detectron2's ``segments_info=None`` convention: ``seg = category * label_divisor +
        instance`` (contiguous category), -1 = void. Returns (ids map with 0 = void, segments)."""
        labels = np.unique(seg)
        labels = labels[labels != -1]
        segments = [{"id": int(lab) + 1, "category_id": int(lab) // self._label_divisor,
                     "isthing": int(lab) // self._label_divisor in self._thing_contiguous} for lab in labels]
        return seg + 1, segments

    def process(self, inputs, outputs):
        from panopticapi.utils import id2rgb

        for inp, out in zip(inputs, outputs):
            seg, segments_info = out["panoptic_seg"]
            seg = seg.cpu().numpy().astype(np.int64) if hasattr(seg, "cpu") else np.asarray(seg, np.int64)
            if segments_info is None:
                seg, segments_info = self._segments_from_label_map(seg)
            segments = to_dataset_segments(segments_info, self._contiguous_to_dataset)
            image_id = str(inp["image_id"])
            with io.BytesIO() as buf:
                Image.fromarray(id2rgb(seg)).save(buf, format="PNG")
                png = buf.getvalue()
            self._predictions.append(
                {"image_id": image_id, "file_name": f"{image_id}_panoptic.png", "segments_info": segments,
                 "png_string": png}
            )

    def evaluate(self):
        comm.synchronize()
        predictions = list(itertools.chain(*comm.gather(self._predictions)))
        if not comm.is_main_process():
            return None
        with PathManager.open(self._gt_json, "r") as f:
            gt_ids = [a["image_id"] for a in json.load(f)["annotations"]]
        missing = sorted(set(gt_ids) - {p["image_id"] for p in predictions})
        if missing:
            raise ValueError(
                f"CityscapesPanopticEvaluator: {len(missing)} of the {len(gt_ids)} images of {self._gt_json} "
                f"have no prediction (e.g. {missing[:3]}); the official evaluation needs all of them"
            )
        with contextlib.ExitStack() as stack:
            if self._output_dir:
                work = os.path.join(self._output_dir, "cityscapes_panoptic_eval")
                os.makedirs(work, exist_ok=True)
            else:
                work = stack.enter_context(tempfile.TemporaryDirectory(prefix="cityscapes_panoptic_eval_"))
            pred_folder = os.path.join(work, "predictions")
            os.makedirs(pred_folder, exist_ok=True)
            annotations = []
            for p in predictions:
                with open(os.path.join(pred_folder, p["file_name"]), "wb") as f:
                    f.write(p["png_string"])
                annotations.append({k: v for k, v in p.items() if k != "png_string"})
            pred_json = os.path.join(work, "predictions.json")
            with open(pred_json, "w") as f:
                json.dump({"annotations": annotations}, f)
            from cityscapesscripts.evaluation.evalPanopticSemanticLabeling import evaluatePanoptic

            log = io.StringIO()
            with contextlib.redirect_stdout(log):
                results = evaluatePanoptic(
                    PathManager.get_local_path(self._gt_json), PathManager.get_local_path(self._gt_folder),
                    pred_json, pred_folder, os.path.join(work, "results.json"),
                )
        logger.info(f"cityscapesScripts panoptic evaluation of {self._dataset_name}:\n{log.getvalue()}")
        res = {}
        for name, suffix in (("All", ""), ("Things", "_th"), ("Stuff", "_st")):
            for m in ("pq", "sq", "rq"):
                res[m.upper() + suffix] = 100.0 * float(results[name][m])
        return OrderedDict({"cityscapes_panoptic_seg": res})
