"""Monocular depth evaluation under the standard NYUv2 protocol (paper Table 2: RMSE, AbsRel).

Per image, over the valid ground-truth pixels (finite and ``min_depth < gt < max_depth``, i.e.
0.001 m to 10 m for NYUv2; optionally only inside the Eigen crop), with the prediction clipped to
``[min_depth, max_depth]`` (NaN -> ``min_depth``, +inf -> ``max_depth``) as in the evaluation code
of Eigen et al. / BTS / AdaBins / Depth Anything:

* ``AbsRel = mean(|p - g| / g)``, ``SqRel = mean((p - g)^2 / g)``
* ``RMSE = sqrt(mean((p - g)^2))``, ``RMSE_log = sqrt(mean((ln p - ln g)^2))``
* ``log10 = mean(|log10 p - log10 g|)``
* ``SILog = 100 * sqrt(mean(e^2) - mean(e)^2)``, ``e = ln p - ln g``
* ``delta_k = mean(max(p / g, g / p) < 1.25^k)``, ``k = 1, 2, 3``

then averaged over images (images without a valid pixel are skipped and counted). The ground
truth is read at its original resolution from the dataset dict's ``depth_file_name``; the model's
``depth`` output must already be at that size (``PixelCentroidHead`` resizes it to
``height x width``). Everything runs on the prediction's device.
"""
from __future__ import annotations

import itertools
import logging
from collections import OrderedDict
from typing import Dict, Optional

import torch

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.evaluation import DatasetEvaluator
from detectron2.utils import comm

from pe_panoptic.data.depth_labels import DEFAULT_MAX_DEPTH, DEFAULT_MIN_DEPTH, DEPTH_PNG_SCALE, read_metric_depth

__all__ = ["DepthEvaluator", "depth_metrics", "eigen_crop_mask", "METRIC_NAMES", "EIGEN_CROP"]

#: Eigen et al.'s evaluation crop of the 480 x 640 NYUv2 frame: rows [45, 471), columns [41, 601)
EIGEN_CROP = (45, 471, 41, 601)
_EIGEN_FRAME = (480, 640)
METRIC_NAMES = ("AbsRel", "SqRel", "RMSE", "RMSE_log", "log10", "SILog", "delta1", "delta2", "delta3")


def eigen_crop_mask(h: int, w: int, device=None) -> torch.Tensor:
    """Boolean ``[h, w]`` mask of the Eigen crop (exact for 480 x 640, scaled for other sizes)."""
    r0, r1, c0, c1 = EIGEN_CROP
    fy, fx = h / _EIGEN_FRAME[0], w / _EIGEN_FRAME[1]
    mask = torch.zeros((h, w), dtype=torch.bool, device=device)
    mask[round(r0 * fy): round(r1 * fy), round(c0 * fx): round(c1 * fx)] = True
    return mask


def depth_metrics(pred: torch.Tensor, gt: torch.Tensor, valid: torch.Tensor) -> Dict[str, float]:
    """The metrics of the module docstring for ONE image over ``valid`` pixels (float64).
    ``pred`` must be > 0 on valid pixels (clip it first), ``gt`` > 0 there."""
    if pred.shape != gt.shape or valid.shape != gt.shape:
        raise ValueError(f"depth_metrics: shapes differ: pred {tuple(pred.shape)}, gt {tuple(gt.shape)}, "
                         f"valid {tuple(valid.shape)}")
    p = pred[valid].double()
    g = gt[valid].double()
    if p.numel() == 0:
        raise ValueError("depth_metrics: no valid pixel")
    if not bool((p > 0).all() and (g > 0).all()):
        raise ValueError("depth_metrics: pred and gt must be > 0 on valid pixels")
    diff = p - g
    e = torch.log(p) - torch.log(g)
    ratio = torch.maximum(p / g, g / p)
    out = {
        "AbsRel": (diff.abs() / g).mean(),
        "SqRel": (diff.square() / g).mean(),
        "RMSE": diff.square().mean().sqrt(),
        "RMSE_log": e.square().mean().sqrt(),
        "log10": (torch.log10(p) - torch.log10(g)).abs().mean(),
        "SILog": 100.0 * (e.square().mean() - e.mean().square()).clamp_min(0).sqrt(),
    }
    for k in (1, 2, 3):
        out[f"delta{k}"] = (ratio < 1.25 ** k).double().mean()
    return {k: float(v) for k, v in out.items()}


class DepthEvaluator(DatasetEvaluator):
    """Depth metrics of a model's ``depth`` output (metres) against metric ground truth.

    Args:
        dataset_name: registered dataset whose dicts have ``depth_file_name`` (e.g.
            ``nyuv2_depth_test``); its metadata gives the defaults of the arguments below.
        eigen_crop: evaluate inside the Eigen crop only (metadata ``eigen_crop``, else False).
        min_depth, max_depth: valid range (metadata ``min_depth`` / ``max_depth``, else 0.001
            and 10 m).
        depth_scale: depth PNG units per metre (metadata ``depth_scale``, else 1000).
        distributed: gather the per-image metrics of every process.
    """

    def __init__(self, dataset_name: str, *, eigen_crop: Optional[bool] = None, min_depth: Optional[float] = None,
                 max_depth: Optional[float] = None, depth_scale: Optional[float] = None, distributed: bool = True):
        meta = MetadataCatalog.get(dataset_name)
        self._dataset_name = dataset_name
        self._eigen_crop = bool(getattr(meta, "eigen_crop", False) if eigen_crop is None else eigen_crop)
        self._min_depth = float(getattr(meta, "min_depth", DEFAULT_MIN_DEPTH) if min_depth is None else min_depth)
        self._max_depth = float(getattr(meta, "max_depth", DEFAULT_MAX_DEPTH) if max_depth is None else max_depth)
        self._depth_scale = float(getattr(meta, "depth_scale", DEPTH_PNG_SCALE) if depth_scale is None else depth_scale)
        if not 0 < self._min_depth < self._max_depth:
            raise ValueError(f"DepthEvaluator: need 0 < min_depth < max_depth, got {self._min_depth}, {self._max_depth}")
        self._distributed = distributed
        self._gt_files: Optional[Dict[str, str]] = None
        self._logger = logging.getLogger(__name__)
        self.reset()

    def reset(self):
        self._per_image = []
        self._num_skipped = 0

    def _gt_file(self, inp: dict) -> str:
        if inp.get("depth_file_name"):
            return inp["depth_file_name"]
        if self._gt_files is None:
            self._gt_files = {d["file_name"]: d.get("depth_file_name") for d in DatasetCatalog.get(self._dataset_name)}
        gt = self._gt_files.get(inp["file_name"])
        if not gt:
            raise KeyError(f"DepthEvaluator: no depth_file_name for {inp['file_name']} in dataset {self._dataset_name}")
        return gt

    def process(self, inputs, outputs):
        for inp, out in zip(inputs, outputs):
            if "depth" not in out:
                raise KeyError(f"DepthEvaluator: the model output for {inp.get('file_name')} has no 'depth' "
                               "(build the model with depth=True)")
            pred = out["depth"]
            if pred.dim() == 3 and pred.shape[0] == 1:
                pred = pred[0]
            gt_file = self._gt_file(inp)
            gt = torch.from_numpy(read_metric_depth(gt_file, self._depth_scale)).to(pred.device)
            if pred.shape != gt.shape:
                raise ValueError(f"DepthEvaluator: prediction {tuple(pred.shape)} for {inp.get('file_name')} and "
                                 f"ground truth {gt_file} {tuple(gt.shape)} differ in size")
            valid = torch.isfinite(gt) & (gt > self._min_depth) & (gt < self._max_depth)
            if self._eigen_crop:
                valid &= eigen_crop_mask(*gt.shape, device=gt.device)
            if not bool(valid.any()):
                self._num_skipped += 1
                self._logger.warning(f"DepthEvaluator: {gt_file} has no valid depth pixel; image skipped")
                continue
            pred = pred.double()
            pred = torch.nan_to_num(pred, nan=self._min_depth, posinf=self._max_depth, neginf=self._min_depth)
            pred = pred.clamp(self._min_depth, self._max_depth)
            self._per_image.append(depth_metrics(pred, gt.double(), valid))

    def evaluate(self):
        per_image, skipped = self._per_image, [self._num_skipped]
        if self._distributed:
            comm.synchronize()
            per_image = list(itertools.chain(*comm.gather(per_image)))
            skipped = comm.gather(self._num_skipped)
            if not comm.is_main_process():
                return None
        if not per_image:
            self._logger.warning(f"DepthEvaluator on {self._dataset_name}: no image evaluated")
            return OrderedDict()
        res = {k: sum(m[k] for m in per_image) / len(per_image) for k in METRIC_NAMES}
        res["num_images"] = float(len(per_image))
        res["num_skipped"] = float(sum(skipped))
        self._logger.info(f"Depth evaluation on {self._dataset_name} ({len(per_image)} images): "
                          + ", ".join(f"{k}={v:.4f}" for k, v in res.items()))
        return OrderedDict({"depth": res})
