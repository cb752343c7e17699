"""The criterion: every training loss of the model as a detectron2-style dict of weighted
scalars, per requested task (``"sem"``, ``"inst"``, ``"depth"``)."""
from __future__ import annotations

import contextlib
from typing import Dict, Iterable, Optional

import torch
import torch.nn as nn

from pe_panoptic.encoding import CentroidEncoding
from pe_panoptic.modeling.losses.depth import affine_invariant_disparity_loss, silog_loss
from pe_panoptic.modeling.losses.pixel import NORMALIZATIONS, offset_l1_map, semantic_ce_map, weighted_mean
from pe_panoptic.modeling.losses.regularizers import generalized_dice_loss, instance_codes_from_targets, tv_loss_regression, tv_loss_semantic

__all__ = ["TASKS", "PixelCentroidCriterion"]

#: the tasks of the model (the only definition): semantic, instance, depth
TASKS = ("sem", "inst", "depth")


def _no_autocast(device: torch.device):
    """Disable autocast for the losses (they upcast to float32 themselves)."""
    if device.type in ("cuda", "cpu", "xpu", "mps"):
        return torch.autocast(device_type=device.type, enabled=False)
    return contextlib.nullcontext()


class PixelCentroidCriterion(nn.Module):
    """All training losses of the model as a detectron2-style dict of weighted scalars.

    Per requested task:

    * ``"sem"``: ``loss_sem = sem_weight * weighted_mean(CE, sem_weight_map)`` (Eq. 1) and
      ``loss_sem_tv = tv_weight * tv_loss_semantic`` (Eq. 11).
    * ``"inst"``: ``loss_inst = inst_weight * weighted_mean(encoding.pixel_loss, inst_weight_map)``
      (Eq. 1, 4); ``loss_inst_tv = tv_weight * tv_loss_regression`` (Eq. 10) if
      ``encoding.supports_tv`` (norm ``encoding.tv_norm``: ``"l2"`` for PE, ``"l1"`` for the RGB
      encoding whose main loss is L1, unless ``tv_norm`` is given); ``loss_inst_dice = dice_weight *
      generalized_dice_loss`` (Eq. 12-14) if ``encoding.supports_dice``.
    * ``"depth"``: ``loss_depth = depth_weight * `` the affine-invariant disparity loss (Eq. 6-8;
      ``outputs["depth"]`` and ``targets["depth"]`` are then read as disparities) or the SILog
      loss (Eq. 9, metric depth).

    ``normalize`` is how Eq. (1)'s weighted pixel average reduces a batch (``loss_sem``,
    ``loss_inst``, ``loss_inst_offset``; :func:`~pe_panoptic.modeling.losses.weighted_mean`): ``"batch"``
    (default) divides the batch's weighted loss sum by the batch's weight sum, ``"per_image"``
    applies Eq. (1) to each image and averages the images. The paper writes Eq. (1) for one image
    and does not say which; config key ``model.loss.normalize``.

    TV and DICE terms are omitted when disabled (``use_tv`` / ``use_dice`` False, weight 0, or
    not supported by the encoding). All losses are computed in float32 with autocast disabled.
    """

    def __init__(
        self,
        encoding: CentroidEncoding,
        *,
        num_classes: int,
        ignore_label: int = 255,
        sem_weight: float = 1.0,
        inst_weight: float = 1.0,
        tv_weight: float = 0.1,
        dice_weight: float = 1.0,
        depth_weight: float = 1.0,
        depth_loss: str = "affine_invariant",
        silog_lambda: float = 0.5,
        use_tv: bool = True,
        use_dice: bool = True,
        tv_norm: Optional[str] = None,
        offset_weight: float = 0.0,
        normalize: str = "batch",
    ):
        super().__init__()
        if not isinstance(encoding, CentroidEncoding):
            raise TypeError(f"PixelCentroidCriterion: encoding must be a CentroidEncoding, got {encoding!r}")
        if int(num_classes) < 1:
            raise ValueError(f"PixelCentroidCriterion: num_classes must be >= 1, got {num_classes}")
        if depth_loss not in ("affine_invariant", "silog"):
            raise ValueError(
                f"PixelCentroidCriterion: depth_loss must be 'affine_invariant' or 'silog', got {depth_loss!r}"
            )
        for name, value in dict(sem_weight=sem_weight, inst_weight=inst_weight, tv_weight=tv_weight,
                                dice_weight=dice_weight, depth_weight=depth_weight,
                                offset_weight=offset_weight).items():
            if float(value) < 0:
                raise ValueError(f"PixelCentroidCriterion: {name} must be >= 0, got {value}")
        if normalize not in NORMALIZATIONS:
            raise ValueError(f"PixelCentroidCriterion: normalize must be one of {NORMALIZATIONS}, got {normalize!r}")
        if tv_norm is None:
            tv_norm = encoding.tv_norm
        if tv_norm not in ("l1", "l2"):
            raise ValueError(f"PixelCentroidCriterion: tv_norm must be 'l1' or 'l2', got {tv_norm!r}")
        self.encoding = encoding
        self.num_classes = int(num_classes)
        self.ignore_label = int(ignore_label)
        self.sem_weight = float(sem_weight)
        self.inst_weight = float(inst_weight)
        self.tv_weight = float(tv_weight)
        self.dice_weight = float(dice_weight)
        self.depth_weight = float(depth_weight)
        self.depth_loss = depth_loss
        self.silog_lambda = float(silog_lambda)
        self.use_tv = bool(use_tv) and self.tv_weight > 0
        self.use_dice = bool(use_dice) and self.dice_weight > 0
        self.tv_norm = tv_norm
        self.offset_weight = float(offset_weight)
        self.normalize = normalize

    def extra_repr(self) -> str:
        return (
            f"encoding={self.encoding!r}, num_classes={self.num_classes}, tv={self.use_tv} "
            f"({self.tv_weight}, {self.tv_norm}), dice={self.use_dice} ({self.dice_weight}), "
            f"depth_loss={self.depth_loss}, offset_weight={self.offset_weight}, normalize={self.normalize}"
        )

    @staticmethod
    def _get(d: dict, key: str, where: str, task: str) -> torch.Tensor:
        if key not in d:
            raise KeyError(f"PixelCentroidCriterion: task {task!r} needs {where}[{key!r}]; got keys {sorted(d)}")
        return d[key]

    def forward(self, outputs: dict, targets: dict, tasks: Iterable[str]) -> Dict[str, torch.Tensor]:
        tasks = set(tasks)
        unknown = tasks - set(TASKS)
        if unknown:
            raise ValueError(f"PixelCentroidCriterion: unknown tasks {sorted(unknown)}; choose from {sorted(TASKS)}")
        if not outputs:
            raise ValueError("PixelCentroidCriterion: outputs is empty")
        device = next(iter(outputs.values())).device
        losses: Dict[str, torch.Tensor] = {}
        with _no_autocast(device):
            if "sem" in tasks:
                losses.update(self._semantic(outputs, targets))
            if "inst" in tasks:
                losses.update(self._instance(outputs, targets))
            if "depth" in tasks:
                losses.update(self._depth(outputs, targets))
        return losses

    def _semantic(self, outputs, targets):
        logits = self._get(outputs, "sem_logits", "outputs", "sem").float()
        labels = self._get(targets, "sem_seg", "targets", "sem")
        weight = self._get(targets, "sem_weight", "targets", "sem")
        if logits.dim() != 4 or logits.shape[1] != self.num_classes:
            raise ValueError(
                f"PixelCentroidCriterion: outputs['sem_logits'] must be [B, {self.num_classes}, H, W], "
                f"got {tuple(logits.shape)}"
            )
        out = {"loss_sem": self.sem_weight * weighted_mean(
            semantic_ce_map(logits, labels, self.ignore_label), weight, self.normalize)}
        if self.use_tv:
            out["loss_sem_tv"] = self.tv_weight * tv_loss_semantic(logits)
        return out

    def _instance(self, outputs, targets):
        enc = self.encoding
        pred = self._get(outputs, "inst", "outputs", "inst").float()
        uv = self._get(targets, "inst_uv", "targets", "inst").float()
        valid = self._get(targets, "inst_valid", "targets", "inst").bool()
        weight = self._get(targets, "inst_weight", "targets", "inst")
        if pred.dim() != 4 or pred.shape[1] != enc.num_channels:
            raise ValueError(
                f"PixelCentroidCriterion: outputs['inst'] must be [B, {enc.num_channels}, H, W] for {enc!r}, "
                f"got {tuple(pred.shape)}"
            )
        if uv.dim() != 4 or uv.shape[1] != 2 or uv.shape[0] != pred.shape[0] or uv.shape[-2:] != pred.shape[-2:]:
            raise ValueError(
                f"PixelCentroidCriterion: targets['inst_uv'] {tuple(uv.shape)} must be [B, 2, H, W] matching "
                f"outputs['inst'] {tuple(pred.shape)}"
            )
        out = {"loss_inst": self.inst_weight * weighted_mean(
            enc.pixel_loss(pred, uv, valid), weight, self.normalize)}
        if self.use_tv and enc.supports_tv:
            out["loss_inst_tv"] = self.tv_weight * tv_loss_regression(pred, self.tv_norm)
        if self.use_dice and enc.supports_dice:
            ids = self._get(targets, "inst_ids", "targets", "inst")
            codes = instance_codes_from_targets(uv, ids, enc)
            out["loss_inst_dice"] = self.dice_weight * generalized_dice_loss(pred, ids, codes, enc.num_harmonics)
        if self.offset_weight > 0:
            offset = self._get(outputs, "inst_offset", "outputs (model.inst_position='offset')", "inst").float()
            out["loss_inst_offset"] = self.offset_weight * weighted_mean(
                offset_l1_map(offset, uv, valid), weight, self.normalize)
        return out

    def _depth(self, outputs, targets):
        pred = self._get(outputs, "depth", "outputs", "depth")
        gt = self._get(targets, "depth", "targets", "depth")
        valid = targets.get("depth_valid")
        if valid is None:  # no explicit mask: valid where the label is a positive finite number
            valid = torch.isfinite(gt) & (gt > 0)
        if self.depth_loss == "silog":
            loss = silog_loss(pred, gt, valid, self.silog_lambda)
        else:
            loss = affine_invariant_disparity_loss(pred, gt, valid)
        return {"loss_depth": self.depth_weight * loss}
