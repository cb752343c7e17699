"""Train several configs for the same wall-clock budget (``tools/compare.py --train-budget-s``).

An equal budget is given in *training iterations that fit the budget*, not by stopping a run
mid-schedule: for every config, a short calibration run of ``tools/train_net.py`` measures the
seconds per iteration on this machine (detectron2's ``IterationTimer``, "Overall training speed",
which leaves out the first 3 iterations and the hooks), then the real run trains
``max_iter = floor(budget / (s / iteration))`` iterations, so that every model gets its complete
learning-rate schedule (the synthetic configs' schedules are fractions of ``train.max_iter``)
within about the same time. Each run is a separate ``tools/train_net.py`` process; its peak
resident memory (the largest of the process and the data-loader workers it waited for, from
``os.wait4``) is reported with its training speed.
"""
from __future__ import annotations

import json
import logging
import math
import os
import re
import subprocess
import sys
import time
from typing import Dict, List, Optional, Sequence

__all__ = ["TrainRun", "run_train_net", "training_speed", "calibrate", "has_finished_run", "train_within_budget",
           "budget_columns"]

logger = logging.getLogger(__name__)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the checkout (pe_panoptic/studies/..)
TRAIN_NET = os.path.join(ROOT, "tools", "train_net.py")
_SPEED = re.compile(r"Overall training speed: (\d+) iterations in \S+ \(([0-9.]+) s / it\)")


class TrainRun(dict):
    """Result of one ``tools/train_net.py`` run: ``output_dir``, ``max_iter``, ``s_per_iter``,
    ``wall_s`` (the whole process), ``peak_rss_mib``."""


def training_speed(output_dir: str, required: bool = True) -> Optional[float]:
    """Seconds per iteration of the run in ``output_dir`` (its ``log.txt``), as detectron2's
    ``IterationTimer`` reports it at the end of training (runs of up to 3 iterations are not
    timed: ``None`` unless ``required``)."""
    log = os.path.join(output_dir, "log.txt")
    if not os.path.isfile(log):
        raise FileNotFoundError(f"{log} not found: the training run wrote no log")
    with open(log) as f:
        found = _SPEED.findall(f.read())
    if not found:
        if not required:
            return None
        raise ValueError(f"{log}: no 'Overall training speed' line (a run needs more than 3 iterations to be timed)")
    return float(found[-1][1])


def run_train_net(config: str, output_dir: str, overrides: Sequence[str] = (), *, env: Optional[Dict] = None,
                  python: str = sys.executable, log_file: Optional[str] = None, timed: bool = True) -> TrainRun:
    """Run ``tools/train_net.py --config-file config`` into ``output_dir`` (``--overwrite``) and
    measure it (``timed=False``: ``s_per_iter`` may be ``None``, see :func:`training_speed`).
    Raises ``RuntimeError`` with the end of its output if it fails."""
    os.makedirs(output_dir, exist_ok=True)
    log_file = log_file or os.path.join(output_dir, "train_net.out")
    cmd = [python, TRAIN_NET, "--overwrite", "--config-file", config, *overrides, f"train.output_dir={output_dir}"]
    t0 = time.perf_counter()
    with open(log_file, "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        with open(log_file) as f:
            tail = f.read()[-4000:]
        raise RuntimeError(f"tools/train_net.py failed for {config} (exit {proc.returncode}); "
                           f"output in {log_file}:\n{tail}")
    return TrainRun(output_dir=output_dir, s_per_iter=training_speed(output_dir, required=timed), wall_s=wall,
                    peak_rss_mib=usage.ru_maxrss / 1024.0)  # Linux: KiB


def calibrate(name: str, config: str, output_root: str, overrides: Sequence[str] = (), *,
              calibration_iters: int = 8, env: Optional[Dict] = None) -> float:
    """Seconds per iteration of ``config`` on this machine: a ``calibration_iters``-iteration run of
    ``tools/train_net.py`` into ``output_root/<name>/calibration`` (detectron2's timing leaves the
    first 3 iterations out)."""
    if calibration_iters < 4:
        raise ValueError(f"train_within_budget: calibration_iters must be >= 4 (detectron2 leaves the first 3 "
                         f"iterations out of its timing), got {calibration_iters}")
    base = list(overrides) + ["train.eval_period=0", "train.log_period=1", f"train.max_iter={calibration_iters}"]
    return run_train_net(config, os.path.join(output_root, name, "calibration"), base, env=env)["s_per_iter"]


def has_finished_run(name: str, output_root: str) -> bool:
    """Whether ``output_root/<name>`` holds the record of a finished :func:`train_within_budget` run."""
    return os.path.isfile(os.path.join(output_root, name, "budget_run.json"))


def train_within_budget(name: str, config: str, budget_s: float, output_root: str,
                        overrides: Sequence[str] = (), *, calibration_iters: int = 8,
                        env: Optional[Dict] = None, curve_points: int = 0, reuse: bool = False,
                        s_per_iter: Optional[float] = None) -> TrainRun:
    """Calibrate, then train ``config`` for the iterations that fit ``budget_s`` seconds (at least
    one). Runs go to ``output_root/<name>/calibration`` and ``output_root/<name>/train``; the
    returned run's ``checkpoint`` is the trained ``model_final.pth``.

    ``curve_points`` > 0: the run evaluates on the test set every ``ceil(max_iter / curve_points)``
    iterations and after the last one, and writes ``learning_curve.json`` with its training clock
    (:mod:`pe_panoptic.studies.budget_curves`). Each finished run is recorded in
    ``output_root/<name>/budget_run.json`` with its settings; ``reuse=True`` returns that record
    instead of training again when the settings are the same (a comparison interrupted after some
    entries continues with the next one). A record with other settings is refused, not
    overwritten silently.

    ``s_per_iter``: the speed measured by an earlier :func:`calibrate` (``tools/compare.py``
    calibrates every entry before training any, so that no calibration runs beside a training)."""
    if budget_s <= 0:
        raise ValueError(f"train_within_budget: the budget must be positive, got {budget_s} s")
    if calibration_iters < 4:
        raise ValueError(f"train_within_budget: calibration_iters must be >= 4 (detectron2 leaves the first 3 "
                         f"iterations out of its timing), got {calibration_iters}")
    if curve_points < 0:
        raise ValueError(f"train_within_budget: curve_points must be >= 0, got {curve_points}")
    settings = {"config": os.path.abspath(config), "budget_s": float(budget_s), "overrides": list(overrides),
                "calibration_iters": int(calibration_iters), "curve_points": int(curve_points)}
    record = os.path.join(output_root, name, "budget_run.json")
    if reuse and os.path.isfile(record):
        with open(record) as f:
            saved = json.load(f)
        if saved.get("settings") != settings:
            raise ValueError(f"{record} records a run with other settings ({saved.get('settings')}) than this one "
                             f"({settings}): use another --output-dir, or delete {os.path.join(output_root, name)}")
        if not os.path.isfile(saved["run"]["checkpoint"]):
            raise FileNotFoundError(f"{record}: its checkpoint {saved['run']['checkpoint']} is missing")
        logger.info(f"{name}: reusing the finished run recorded in {record}")
        return TrainRun(saved["run"])
    if os.path.isfile(record):
        raise FileExistsError(f"{record}: a finished equal-budget run of {name!r} is already there; continue the "
                              "comparison with --resume (reuses it), or choose another --output-dir")
    base = list(overrides) + ["train.eval_period=0", "train.log_period=1"]
    if s_per_iter is None:
        s_per_iter = calibrate(name, config, output_root, overrides, calibration_iters=calibration_iters, env=env)
    calib = {"s_per_iter": float(s_per_iter)}
    max_iter = max(1, int(math.floor(budget_s / calib["s_per_iter"])))
    logger.info(f"{name}: {calib['s_per_iter']:.3f} s / iteration -> {max_iter} iterations in {budget_s:.0f} s")
    curve = []
    if curve_points:
        curve = [f"train.eval_period={max(1, math.ceil(max_iter / curve_points))}", "train.learning_curve=True"]
    run = run_train_net(config, os.path.join(output_root, name, "train"),
                        base + [f"train.max_iter={max_iter}", f"train.checkpointer.period={max_iter}"] + curve,
                        env=env, timed=False)
    if run["s_per_iter"] is None:  # 3 iterations or fewer: detectron2 did not time them
        run["s_per_iter"] = calib["s_per_iter"]
    checkpoint = os.path.join(run["output_dir"], "model_final.pth")
    if not os.path.isfile(checkpoint):
        raise FileNotFoundError(f"{name}: training finished but {checkpoint} is missing")
    run.update(name=name, max_iter=max_iter, checkpoint=checkpoint, budget_s=float(budget_s),
               calibration_s_per_iter=calib["s_per_iter"], train_s=max_iter * run["s_per_iter"])
    with open(record, "w") as f:
        json.dump({"settings": settings, "run": dict(run)}, f, indent=1)
    return run


def budget_columns(run: TrainRun) -> Dict[str, float]:
    """The columns :func:`train_within_budget` adds to a ``tools/compare.py`` row."""
    return {"train_iters": run["max_iter"], "train_s_per_iter": run["s_per_iter"],
            "train_min": run["train_s"] / 60.0, "peak_rss_mib": run["peak_rss_mib"],
            "calibration_s_per_iter": run["calibration_s_per_iter"]}

