"""Learning curves: what the instance head learns over training, as JSON and a PNG plot.

* :func:`instance_code_diagnostics` (pure, on tensors): on thing pixels, the mean norm of the
  predicted PE code (a true code has norm ``sqrt(2 L)``; the void code 0) and, per harmonic, the
  mean cosine between the predicted and the true ``(sin, cos)`` pair of each axis. A model on the
  "void plateau" has a small norm and cosines near 0; one that separates instances has cosines
  near 1 for every harmonic.
* :class:`LearningCurveHook`: every ``period`` iterations and after the last one, writes
  ``<output_dir>/learning_curve.json`` (``{metric: [[iteration, value], ...]}``: every loss term,
  the diagnostics above, and val ``PQ`` / ``PQ_th`` / ``PQ_st`` / mIoU from the evaluations) and
  ``learning_curve.png``.

``PixelCentroidHead`` puts the diagnostics into detectron2's event storage during training
(``inst_diag/norm``, ``inst_diag/cos_u0``, ...), so they are also in ``metrics.json`` and
TensorBoard.
"""
from __future__ import annotations

import json
import os
from typing import Dict, List

import torch
from detectron2.engine import HookBase

__all__ = ["instance_code_diagnostics", "LearningCurveHook", "plot_learning_curve"]

_VAL_KEYS = {"panoptic_seg/PQ": "val PQ", "panoptic_seg/PQ_th": "val PQ_th", "panoptic_seg/PQ_st": "val PQ_st",
             "sem_seg/mIoU": "val mIoU"}


@torch.no_grad()
def instance_code_diagnostics(pred: torch.Tensor, target: torch.Tensor, thing: torch.Tensor, L: int) -> Dict[str, float]:
    """``pred``, ``target`` ``[B, 4L, H, W]`` (PE layout: u block then v block, pairs (sin, cos)
    per harmonic), ``thing [B, H, W]`` bool. Returns ``{"norm": .., "cos_u0": .., "cos_v0": ..,
    ...}``; empty if there is no thing pixel."""
    m = thing.bool()
    if not bool(m.any()):
        return {}
    p = pred.float().permute(0, 2, 3, 1)[m]  # N 4L
    t = target.float().permute(0, 2, 3, 1)[m]
    out = {"norm": float(p.norm(dim=1).mean())}
    pp = p.reshape(-1, 2, L, 2)  # axis, harmonic, (sin, cos)
    tt = t.reshape(-1, 2, L, 2)
    cos = (pp * tt).sum(-1) / (pp.norm(dim=-1) * tt.norm(dim=-1)).clamp_min(1e-8)  # N 2 L
    mean = cos.mean(0)
    for a, axis in enumerate("uv"):
        for l in range(L):
            out[f"cos_{axis}{l}"] = float(mean[a, l])
    return out


def plot_learning_curve(curves: Dict[str, List[List[float]]], path: str, title: str = "") -> None:
    """Three panels: loss terms, instance-code diagnostics, validation metrics."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(16, 4.5))
    groups = (
        ("training losses", [k for k in curves if k.startswith("loss") or k == "total_loss"]),
        ("instance code on thing pixels", [k for k in curves if k.startswith("inst_diag/")]),
        ("validation", [k for k in curves if k in _VAL_KEYS.values()]),
    )
    for ax, (name, keys) in zip(axes, groups):
        for k in sorted(keys):
            xs, ys = zip(*curves[k]) if curves[k] else ((), ())
            ax.plot(xs, ys, marker="o" if name == "validation" else None, ms=3, label=k.replace("inst_diag/", ""))
        ax.set_title(name)
        ax.set_xlabel("iteration")
        if keys:
            ax.legend(fontsize=7, ncol=2)
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


class LearningCurveHook(HookBase):
    """Sample the curves every ``sample_period`` iterations and write ``learning_curve.json`` /
    ``.png`` into ``output_dir`` every ``period`` iterations and after the last one (register it
    after ``EvalHook`` so an evaluation at the same iteration is included). Training metrics are
    smoothed with the median over ``window`` iterations, like detectron2's console log."""

    def __init__(self, output_dir: str, period: int, sample_period: int = 20, window: int = 20, title: str = ""):
        self.output_dir = output_dir
        self.period = max(int(period), 1)
        self.sample_period = max(int(sample_period), 1)
        self.window = int(window)
        self.title = title
        self.curves: Dict[str, List[List[float]]] = {}

    def _sample(self) -> None:
        storage = self.trainer.storage
        it = int(self.trainer.iter)
        for k, hist in storage.histories().items():
            if k.startswith("loss") or k == "total_loss" or k.startswith("inst_diag/"):
                if hist.values() and hist.values()[-1][1] >= it - self.window:
                    self.curves.setdefault(k, []).append([it, float(hist.median(self.window))])
            elif k in _VAL_KEYS:
                v, at = hist.values()[-1]
                series = self.curves.setdefault(_VAL_KEYS[k], [])
                if not series or series[-1][0] != at:
                    series.append([int(at), float(v)])

    def write(self) -> None:
        os.makedirs(self.output_dir, exist_ok=True)
        with open(os.path.join(self.output_dir, "learning_curve.json"), "w") as f:
            json.dump(self.curves, f, indent=1)
        plot_learning_curve(self.curves, os.path.join(self.output_dir, "learning_curve.png"), self.title)

    def after_step(self):
        it = self.trainer.iter + 1
        last = it == self.trainer.max_iter
        if it % self.sample_period == 0 or it % self.period == 0 or last:
            self._sample()
        if it % self.period == 0 or last:
            self.write()

    def after_train(self):
        # detectron2's EvalHook evaluates after the last iteration in its after_train: include it
        self._sample()
        self.write()
