"""Learning curves: what the instance head learns over training, as JSON and a PNG plot.

* :func:`~pe_panoptic.encoding.instance_code_diagnostics` (pure, on tensors; in
  :mod:`pe_panoptic.encoding`, re-exported here): on thing pixels, the mean norm of the
  predicted PE code (a true code has norm ``sqrt(2 L)``; the void code 0) and, per harmonic, the
  mean cosine between the predicted and the true ``(sin, cos)`` pair of each axis. A model on the
  "void plateau" has a small norm and cosines near 0; one that separates instances has cosines
  near 1 for every harmonic.
* :class:`LearningCurveHook`: every ``period`` iterations and after the last one, writes
  ``<output_dir>/learning_curve.json`` (``{metric: [[iteration, value], ...]}``: every loss term,
  the diagnostics above, and val ``PQ`` / ``PQ_th`` / ``PQ_st`` / mIoU from the evaluations) and
  ``learning_curve.png``.
* :class:`TrainingClockHook`: the seconds spent training so far (forward, backward, optimizer
  step and the hooks registered before it; not the evaluations), as ``train_seconds`` in the event
  storage and in ``learning_curve.json``, so that curves of models of different speeds can be put
  on one time axis (``tools/compare.py --curve-points``).

``PixelCentroidHead`` returns the diagnostics in its training output (``diag/inst/norm``,
``diag/inst/cos_u0``, ...; detached, not losses) and :class:`pe_panoptic.engine.trainer.PETrainer`
puts them into detectron2's event storage, so they are also in ``metrics.json`` and TensorBoard.
"""
from __future__ import annotations

import json
import logging
import os
import time
from typing import Dict, List, Optional

import torch
from detectron2.engine import HookBase

from pe_panoptic.encoding import instance_code_diagnostics

__all__ = ["instance_code_diagnostics", "LearningCurveHook", "TrainingClockHook", "TRAIN_SECONDS", "plot_learning_curve", "void_plateau_warning", "PLATEAU_NORM"]

#: the instance-code diagnostics' names in the event storage (``PixelCentroidHead``'s ``diag/inst/...``)
_DIAG = "diag/inst/"
#: the training clock's name in the event storage and in learning_curve.json (:class:`TrainingClockHook`)
TRAIN_SECONDS = "train_seconds"

_VAL_KEYS = {"panoptic_seg/PQ": "val PQ", "panoptic_seg/PQ_th": "val PQ_th", "panoptic_seg/PQ_st": "val PQ_st",
             "sem_seg/mIoU": "val mIoU"}


def plot_learning_curve(curves: Dict[str, List[List[float]]], path: str, title: str = "") -> None:
    """Three panels: loss terms, instance-code diagnostics, validation metrics."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(16, 4.5))
    groups = (
        ("training losses", [k for k in curves if k.startswith("loss") or k == "total_loss"]),
        ("instance code on thing pixels", [k for k in curves if k.startswith(_DIAG)]),
        ("validation", [k for k in curves if k in _VAL_KEYS.values()]),
    )
    for ax, (name, keys) in zip(axes, groups):
        for k in sorted(keys):
            xs, ys = zip(*curves[k]) if curves[k] else ((), ())
            ax.plot(xs, ys, marker="o" if name == "validation" else None, ms=3, label=k.replace(_DIAG, ""))
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


#: the void plateau (docs/experiments.md, "Why the ICML void setting stalls"): the thing pixels'
#: instance codes held near the zero void code. Measured on the learning probe: plateau norms
#: 0.21-0.44 (DICE 0.999), learning runs 1.05-1.51; a true PE code has norm sqrt(2L) = 2.83 at L = 4.
PLATEAU_NORM = 0.6
#: the fraction of the schedule after which a code norm under PLATEAU_NORM is reported
PLATEAU_AFTER = 0.1


def void_plateau_warning(curves: Dict[str, List[List[float]]], iteration: int, max_iter: int) -> Optional[str]:
    """A warning when, past ``PLATEAU_AFTER`` of the schedule, the smoothed thing-code norm
    (``diag/inst/norm``) is still under ``PLATEAU_NORM``: the instance head sits on the void
    plateau; ``None`` otherwise (also without diagnostics)."""
    norm = curves.get(_DIAG + "norm")
    if not norm or iteration < PLATEAU_AFTER * max_iter:
        return None
    value = norm[-1][1]
    if value >= PLATEAU_NORM:
        return None
    return (f"iteration {iteration}/{max_iter}: the thing pixels' instance-code norm is {value:.2f} (< {PLATEAU_NORM}; "
            "a true PE code has sqrt(2L)): the instance head is on the void plateau (docs/experiments.md, \"Why the "
            "ICML void setting stalls\"). Options: dataloader.train.mapper.panoptic.include_void=False (paper_v1's "
            "no-void setting) or model.encoding.norm=squared for this stage")


class TrainingClockHook(HookBase):
    """Cumulative training seconds, put into the event storage as ``train_seconds`` after every
    step. Register it before ``EvalHook``: hooks run their ``after_step`` in registration order, so
    the time of the evaluations (and of every hook after this one) is left out. The first step's
    time (data-loader start-up included) counts, as it does for every model. A resumed run
    starts again from 0."""

    def __init__(self):
        self.seconds = 0.0
        self._t0: Optional[float] = None

    def before_step(self):
        self._t0 = time.perf_counter()

    def after_step(self):
        if self._t0 is None:
            return
        if torch.cuda.is_available():  # the step's kernels are part of its time
            torch.cuda.synchronize()
        self.seconds += time.perf_counter() - self._t0
        self._t0 = None
        self.trainer.storage.put_scalar(TRAIN_SECONDS, self.seconds, smoothing_hint=False)


class LearningCurveHook(HookBase):
    """Sample the curves every ``sample_period`` iterations and write ``learning_curve.json`` /
    ``.png`` into ``output_dir`` every ``period`` iterations and after the last one (register it
    after ``EvalHook`` so an evaluation at the same iteration is included). Training metrics are
    smoothed with the median over ``window`` iterations, like detectron2's console log. Logs a
    warning once when the instance codes sit on the void plateau (:func:`void_plateau_warning`)."""

    def __init__(self, output_dir: str, period: int, sample_period: int = 20, window: int = 20, title: str = ""):
        self.warned = False
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
            if k == TRAIN_SECONDS:  # cumulative: its last value (at the iteration it was put), not a median
                if hist.values():
                    v, at = hist.values()[-1]
                    series = self.curves.setdefault(k, [])
                    if not series or series[-1][0] != at:
                        series.append([int(at), float(v)])
            elif k.startswith("loss") or k == "total_loss" or k.startswith(_DIAG):
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
            warning = None if self.warned else void_plateau_warning(self.curves, it, self.trainer.max_iter)
            if warning:
                logging.getLogger(__name__).warning(warning)
                self.warned = True
        if it % self.period == 0 or last:
            self.write()

    def after_train(self):
        # detectron2's EvalHook evaluates after the last iteration in its after_train: include it
        self._sample()
        self.write()
