"""``learning`` section of ``tools/gpu_check.py``: short trainings on the synthetic dataset with
``tools/train_net.py`` in a subprocess (as ``tools/learning_experiments.py`` runs them), val PQ_th
every ``eval_period`` iterations from the run's ``learning_curve.json``. A run past its share of
the cap is stopped; the points it reached are kept."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from typing import List

from pe_panoptic.studies.gpu_check.runner import Budget
from pe_panoptic.studies.gpu_check.settings import LEARNING_VARIANTS, Settings, dataset_overrides

__all__ = ["section_learning", "learning_overrides", "read_run"]


def learning_overrides(s: Settings, out: str) -> List[str]:
    """Overrides every learning run gets: its folder, length, batch, size, the synthetic dataset
    (and in a dry run a 2-block ViT-S without weights; on the GPU bf16 autocast)."""
    L = s.learning
    size = int(L["size"])
    ov = [f"train.output_dir={out}", f"train.max_iter={L['iters']}", f"train.eval_period={L['eval_period']}",
          "train.learning_curve=True", "train.checkpointer.period=100000",
          f"dataloader.train.total_batch_size={L['batch']}", f"dataloader.train.num_workers={L['workers']}",
          f"dataloader.test.num_workers={L['workers']}", f"dataloader.train.mapper.input_size={size}",
          f"dataloader.train.mapper.augmentations.size={size}", f"dataloader.test.mapper.augmentations.size={size}"]
    ov += dataset_overrides("learning", s.synthetic_variant, 0)
    if s.dry_run:
        ov += ["model.backbone.out_indices=[0,1]", "model.backbone.weights=null"]
    else:
        ov += ["train.amp.enabled=True", "train.amp.dtype=bf16"]
    return ov


def read_run(out: str) -> dict:
    """The val PQ / PQ_th points (``[[iteration, value], ...]``) of a run folder and its final metrics."""
    res = {}
    path = os.path.join(out, "learning_curve.json")
    if os.path.isfile(path):
        with open(path) as f:
            curves = json.load(f)
        res["val_PQ_th"] = curves.get("val PQ_th", [])
        res["val_PQ"] = curves.get("val PQ", [])
        losses = curves.get("total_loss") or []
        res["last_iteration"] = int(losses[-1][0]) if losses else None
    path = os.path.join(out, "eval.json")
    if os.path.isfile(path):
        with open(path) as f:
            pan = json.load(f).get("panoptic_seg", {})
        res["final"] = {k: pan.get(k) for k in ("PQ", "PQ_th", "PQ_st")}
    return res


def _tail(path: str, n: int = 1500) -> str:
    with open(path) as f:
        return f.read()[-n:]


def section_learning(budget: Budget, s: Settings, root: str, output: str) -> None:
    for name, (config, extra) in LEARNING_VARIANTS.items():
        budget.check(name)
        out = os.path.join(output, "learning", name)
        os.makedirs(out, exist_ok=True)
        cmd = [sys.executable, os.path.join(root, "tools/train_net.py"), "--config-file", os.path.join(root, config),
               "--overwrite", "--metrics-json", os.path.join(out, "eval.json")] + learning_overrides(s, out) + extra
        timeout = max(1.0, min(float(s.learning["timeout"]), budget.remaining()))
        rec = {"config": config, "overrides": extra, "iters": s.learning["iters"], "batch": s.learning["batch"],
               "eval_period": s.learning["eval_period"], "timeout_s": round(timeout, 1)}
        t0 = time.perf_counter()
        log = os.path.join(out, "log.txt")
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
        with open(log, "w") as f:
            try:
                rc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=root, env=env, timeout=timeout).returncode
                rec["status"] = "ok" if rc == 0 else "failed"
                if rc:
                    rec["error"] = f"tools/train_net.py exited with {rc}"
            except subprocess.TimeoutExpired:
                rec["status"] = "cap_reached"
        rec["wall_s"] = round(time.perf_counter() - t0, 1)
        rec.update(read_run(out))
        if rec["status"] == "failed":
            rec["log_tail"] = _tail(log)
        budget.result[name] = rec
        budget.done(name)
