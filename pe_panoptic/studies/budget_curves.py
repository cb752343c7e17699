"""Learning curves of several models on one time axis (``tools/compare.py --curve-points``).

Each equal-budget training run (:func:`pe_panoptic.studies.equal_budget.train_within_budget`
with ``curve_points``) evaluates on the test set several times and writes its
``learning_curve.json`` (:mod:`pe_panoptic.engine.learning_curve`): ``val PQ`` / ``val PQ_th`` /
``val PQ_st`` / ``val mIoU`` as ``[iteration, value]`` and the training clock
(:class:`~pe_panoptic.engine.learning_curve.TrainingClockHook`, evaluations left out) as
``train_seconds``.

Two time axes, both kept:

* ``measured``: the run's own training clock at the evaluation's iteration;
* ``calibrated``: iterations x the seconds per iteration of the run's calibration. On a shared
  machine the measured clock also counts whatever ran beside the training; the calibration runs
  are short and can be run alone, so this axis is the one to compare models by when the machine
  was not idle throughout (say which in the results).
"""
from __future__ import annotations

import bisect
import json
import os
from typing import Dict, List, Optional, Sequence

from pe_panoptic.engine.learning_curve import TRAIN_SECONDS

__all__ = ["VAL_METRICS", "points_on_time_axis", "load_run_points", "plot_budget_curves", "curve_rows"]

#: the validation series of learning_curve.json, and their short names
VAL_METRICS = {"val PQ": "PQ", "val PQ_th": "PQ_th", "val PQ_st": "PQ_st", "val mIoU": "mIoU"}


def _clock_at(clock: Sequence[Sequence[float]], iteration: int) -> float:
    """The training clock at ``iteration`` (0-based): its last sample at or before it."""
    its = [int(i) for i, _ in clock]
    k = bisect.bisect_right(its, iteration) - 1
    if k < 0:
        raise ValueError(f"no {TRAIN_SECONDS} sample at or before iteration {iteration} (first: {its[:1]})")
    return float(clock[k][1])


def points_on_time_axis(curves: Dict[str, List[List[float]]], s_per_iter: Optional[float] = None) -> List[Dict]:
    """One dict per evaluation in a ``learning_curve.json``: ``iteration`` (iterations done),
    ``measured_s`` (the training clock), ``calibrated_s`` (``iteration * s_per_iter``, when given)
    and every validation metric (short names, :data:`VAL_METRICS`)."""
    clock = curves.get(TRAIN_SECONDS) or []
    if not clock:
        raise ValueError(f"learning curve has no {TRAIN_SECONDS!r} series: train with train.learning_curve=True "
                         "(tools/train_net.py registers the training clock with it)")
    # an evaluation during training is stored at the 0-based iteration just finished; the one after
    # the last step (detectron2's EvalHook.after_train) at max_iter: iterations done = min(it + 1, max_iter)
    last = max(int(i) for i, _ in clock) + 1
    by_iter: Dict[int, Dict] = {}
    for key, short in VAL_METRICS.items():
        for it, value in curves.get(key, []):
            done = min(int(it) + 1, last)
            row = by_iter.setdefault(done, {"iteration": done, "measured_s": _clock_at(clock, done - 1)})
            if s_per_iter is not None:
                row["calibrated_s"] = done * float(s_per_iter)
            row[short] = float(value)
    return [by_iter[k] for k in sorted(by_iter)]


def load_run_points(output_dir: str, s_per_iter: Optional[float] = None) -> List[Dict]:
    """:func:`points_on_time_axis` of the ``learning_curve.json`` in a training run's folder."""
    path = os.path.join(output_dir, "learning_curve.json")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} not found: the run was not trained with train.learning_curve=True")
    with open(path) as f:
        curves = json.load(f)
    return points_on_time_axis(curves, s_per_iter)


def curve_rows(points: Dict[str, List[Dict]]) -> List[List[str]]:
    """Table rows (model, iteration, calibrated s, measured s, PQ, PQ_th, PQ_st) of every point."""
    rows = []
    for name, pts in points.items():
        for p in pts:
            rows.append([name, str(p["iteration"]), "{:.0f}".format(p.get("calibrated_s", float("nan"))),
                         "{:.0f}".format(p["measured_s"])] + ["{:.1f}".format(p.get(m, float("nan")))
                                                               for m in ("PQ", "PQ_th", "PQ_st")])
    return rows


def plot_budget_curves(points: Dict[str, List[Dict]], path: str, axis: str = "calibrated",
                       metrics: Sequence[str] = ("PQ_th", "PQ", "PQ_st"), title: str = "") -> None:
    """One panel per metric, one line per model, against training seconds on ``axis``
    (``"calibrated"`` or ``"measured"``); a point at (0, 0) is not drawn (no evaluation there)."""
    if axis not in ("calibrated", "measured"):
        raise ValueError(f"axis must be 'calibrated' or 'measured', got {axis!r}")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(metrics), figsize=(5.2 * len(metrics), 4.2), squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        for name, pts in points.items():
            xs = [p[f"{axis}_s"] for p in pts if f"{axis}_s" in p and metric in p]
            ys = [p[metric] for p in pts if f"{axis}_s" in p and metric in p]
            ax.plot(xs, ys, marker="o", ms=4, label=name)
        ax.set_title(f"val {metric}")
        ax.set_xlabel(f"training seconds ({axis})")
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
