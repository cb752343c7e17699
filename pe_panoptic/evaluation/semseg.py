"""Semantic mIoU of a panoptic model, with ground truth read from the panoptic annotations.

detectron2's ``SemSegEvaluator`` needs ``sem_seg_file_name`` in every dataset dict, which the
builtin COCO / Cityscapes *panoptic* registrations do not have. This evaluator derives the
semantic ground truth from the panoptic PNG + ``segments_info`` instead (contiguous ids, crowd
regions keep their class, unlabeled pixels are ignored) and reuses ``SemSegEvaluator``'s
confusion-matrix metrics (mIoU, fwIoU, mACC, pACC), so one evaluation run of a panoptic model
reports PQ and mIoU as Mask2Former does.
"""
import logging
import os

import numpy as np
import torch

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.evaluation import SemSegEvaluator

__all__ = ["PanopticSemSegEvaluator", "semantic_from_panoptic", "semantic_labels"]


def semantic_labels(sem_seg: torch.Tensor) -> torch.Tensor:
    """``[H, W]`` class map of a result's ``sem_seg``: ``PixelCentroidHead`` returns the class map
    itself (``[H, W]`` integers, :func:`pe_panoptic.postprocess.batch_results` with
    ``semantic="labels"``: no ``[N, H, W]`` tensor at the original size); detectron2's convention,
    ``[N, H, W]`` scores, is reduced by ``argmax``."""
    if sem_seg.dim() == 2 and not sem_seg.is_floating_point():
        return sem_seg
    if sem_seg.dim() == 3:
        return sem_seg.argmax(dim=0)
    raise ValueError(f"sem_seg must be an [H, W] integer class map or [N, H, W] scores, got "
                     f"{sem_seg.dtype} {tuple(sem_seg.shape)}")


def semantic_from_panoptic(pan_png_path: str, segments_info, ignore_label: int = 255, *,
                           check: bool = False) -> np.ndarray:
    """Contiguous-id semantic map ``[H, W]`` from a COCO-format panoptic PNG. ``check=True`` (the
    evaluator's reading) first refuses a PNG that disagrees with ``segments_info`` (ids on one
    side only, wrong ``area``: :func:`pe_panoptic.evaluation.gt_check.check_gt_segments`), which
    would otherwise change mIoU silently (unknown ids become ignored pixels)."""
    from pe_panoptic.data.panoptic_png import read_panoptic_ids
    from pe_panoptic.evaluation.gt_check import GroundTruthError, check_gt_segments

    if not os.path.isfile(pan_png_path):
        raise FileNotFoundError(f"panoptic PNG missing: {pan_png_path}")
    ids = read_panoptic_ids(pan_png_path)
    if check:
        problems = check_gt_segments(ids, segments_info or [], pan_png_path)
        if problems:
            raise GroundTruthError("ground truth disagrees with its panoptic PNG; refusing to evaluate against it:\n  "
                                   + "\n  ".join(problems[:10]))
    cat_of = {int(s["id"]): int(s["category_id"]) for s in (segments_info or [])}
    uniq, inv = np.unique(ids, return_inverse=True)  # loop below is over segments, not pixels
    lut = np.array([cat_of.get(int(u), ignore_label) for u in uniq], dtype=np.int64)
    sem = lut[inv.reshape(ids.shape)]
    return sem


class PanopticSemSegEvaluator(SemSegEvaluator):
    """``SemSegEvaluator`` whose ground truth comes from panoptic annotations."""

    def __init__(self, dataset_name, distributed=True, output_dir=None):
        self._logger = logging.getLogger(__name__)
        self._dataset_name = dataset_name
        self._distributed = distributed
        self._output_dir = output_dir
        self._cpu_device = torch.device("cpu")
        self._records = {d["file_name"]: d for d in DatasetCatalog.get(dataset_name)}
        meta = MetadataCatalog.get(dataset_name)
        c2d = meta.stuff_dataset_id_to_contiguous_id
        self._contiguous_id_to_dataset_id = {v: k for k, v in c2d.items()}
        self._class_names = meta.stuff_classes
        self._num_classes = len(meta.stuff_classes)
        self._ignore_label = getattr(meta, "ignore_label", 255)

    def process(self, inputs, outputs):
        for inp, out in zip(inputs, outputs):
            pred = semantic_labels(out["sem_seg"]).to(self._cpu_device).numpy().astype(np.int64)
            rec = self._records.get(inp["file_name"])
            if rec is None:
                raise KeyError(f"{inp['file_name']} is not in dataset {self._dataset_name}: the evaluator's dataset "
                               "differs from the test loader's (set dataloader.evaluator.dataset_name to the name "
                               "in dataloader.test.dataset.names)")
            gt = semantic_from_panoptic(rec["pan_seg_file_name"], rec["segments_info"], self._ignore_label, check=True)
            if gt.shape != pred.shape:
                raise ValueError(
                    f"{inp['file_name']}: prediction {pred.shape} and ground truth {gt.shape} differ in size"
                )
            gt[gt == self._ignore_label] = self._num_classes
            self._conf_matrix += np.bincount(
                (self._num_classes + 1) * pred.reshape(-1) + gt.reshape(-1),
                minlength=self._conf_matrix.size,
            ).reshape(self._conf_matrix.shape)
