"""``device`` and ``train`` sections of ``tools/gpu_check.py``: the device and its measured bf16
matmul peak (:func:`pe_panoptic.studies.benchmark.matmul_fn`, timed by
:func:`~pe_panoptic.studies.benchmark.interleaved_times`), and training images/s of the configs of
:data:`~.settings.TRAIN_CONFIGS` on synthetic images (the steps of ``tools/benchmark.py train``:
:func:`~pe_panoptic.studies.benchmark.run_train.timed_steps`), each step split into data /
forward / backward / optimizer by hooks (:class:`PhaseTimer`)."""
from __future__ import annotations

import argparse
import os
import platform
import time
from typing import Dict, List

import torch

from pe_panoptic.studies import benchmark as B
from pe_panoptic.studies.gpu_check.runner import Budget, attempt
from pe_panoptic.studies.gpu_check.settings import TRAIN_CONFIGS, Settings

__all__ = ["section_device", "section_train", "PhaseTimer", "train_namespace", "per_gpu_batch"]


def section_device(budget: Budget, s: Settings) -> None:
    dev = torch.device(s.device)
    r = budget.result
    r.update(type=dev.type, torch=torch.__version__, cuda=torch.version.cuda, cudnn=torch.backends.cudnn.version(),
             threads=torch.get_num_threads())
    if dev.type == "cuda":
        p = torch.cuda.get_device_properties(dev)
        r.update(name=p.name, memory_gib=p.total_memory / 2**30, capability=f"{p.major}.{p.minor}",
                 multiprocessors=p.multi_processor_count)
    else:
        r.update(name=platform.processor() or platform.machine() or "cpu", memory_gib=None)
    budget.done("info")
    budget.check("matmul")
    mm, flops = B.matmul_fn(s.matmul_n, dev, torch.bfloat16)
    st = B.summarize(B.interleaved_times({"matmul": mm}, rounds=s.matmul_rounds, warmup=1, device=dev)["matmul"])
    r.update(matmul_n=s.matmul_n, matmul_ms=st["median_s"] * 1e3, matmul_bf16_tflops=flops / st["median_s"] / 1e12,
             matmul_bf16_tflops_best=flops / st["min_s"] / 1e12)
    budget.done("matmul")


def train_namespace(config: str, overrides: List[str], s: Settings) -> argparse.Namespace:
    """The namespace ``tools/benchmark.py train`` would parse for ``config`` in bf16."""
    return argparse.Namespace(config_file=config, opts=list(overrides), backbone="vit_base_patch14_dinov2",
                              model_kwargs=None, decoder_width=256, num_classes=133, num_things=80, depth=False,
                              dtype="bf16", seed=0, lr=1e-4, device=s.device, threads=None)


def per_gpu_batch(config: str, overrides: List[str]) -> int:
    """The config's images per GPU: ``dataloader.train.total_batch_size / train.recipe.num_gpus``."""
    from pe_panoptic.engine.config_overrides import load_config

    cfg = load_config(config, overrides)
    total = int(cfg.dataloader.train.total_batch_size)
    gpus = int((cfg.train.get("recipe") or {}).get("num_gpus", 1))
    if total % gpus:
        raise ValueError(f"{config}: total_batch_size {total} is not a multiple of train.recipe.num_gpus {gpus}")
    return total // gpus


class PhaseTimer:
    """Times the phases of a trainer's steps with hooks, the device synchronized at each mark:
    forward (the model's forward pre- / post-hooks), optimizer (``Optimizer.step`` pre- / post-
    hooks) and backward (from the end of the forward to the optimizer step: the loss sum,
    ``backward()`` and gradient clipping). The data time is the trainer's own ``data_time``."""

    def __init__(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, device):
        self.model, self.optimizer, self.device = model, optimizer, device
        self.marks: List[Dict[str, float]] = []
        self.handles = []

    def _mark(self, key: str):
        def hook(*_args, **_kw):
            B.synchronize(self.device)
            if key == "fwd0":
                self.marks.append({})
            if self.marks:
                self.marks[-1][key] = time.perf_counter()
        return hook

    def __enter__(self):
        self.handles = [self.model.register_forward_pre_hook(self._mark("fwd0")),
                        self.model.register_forward_hook(self._mark("fwd1")),
                        self.optimizer.register_step_pre_hook(self._mark("opt0")),
                        self.optimizer.register_step_post_hook(self._mark("opt1"))]
        return self

    def __exit__(self, *exc):
        for h in self.handles:
            h.remove()
        self.handles = []

    def phases_ms(self, last: int) -> Dict[str, float]:
        """Median ms of forward / backward / optimizer over the ``last`` steps."""
        import statistics

        marks = [m for m in self.marks if len(m) == 4][-last:]
        if not marks:
            return {}
        med = lambda a, b: statistics.median(m[b] - m[a] for m in marks) * 1e3  # noqa: E731
        return {"forward_ms": med("fwd0", "fwd1"), "backward_ms": med("fwd1", "opt0"), "optimizer_ms": med("opt0", "opt1")}


def _train_one(config: str, size: int, s: Settings) -> dict:
    from detectron2.utils.events import EventStorage

    from pe_panoptic.studies.benchmark.run_train import build_train_model, make_trainer, timed_steps

    device = torch.device(s.device)
    args = train_namespace(config, s.backbone_overrides, s)
    batch = s.train_batch or per_gpu_batch(config, s.backbone_overrides)
    model, optim = build_train_model(args, [], device)
    trainer = make_trainer(args, model, optim, device, size, batch)
    B.reset_peak_memory(device)
    with EventStorage(0) as storage, PhaseTimer(model, optim, device) as phases:
        times = timed_steps({"step": trainer}, storage, warmup=s.train_warmup, iters=s.train_iters, device=device)
        data = [v for v, it in storage.history("data_time").values() if it >= s.train_warmup]
    st = B.summarize(times["step"])
    mem, kind = B.peak_memory_gb(device)
    out = {"config": config, "size": size, "batch": batch, "dtype": "bf16", "iters": s.train_iters,
           "step_ms": st["median_s"] * 1e3, "step_ms_min": st["min_s"] * 1e3, "images_per_s": batch / st["median_s"],
           "data_ms": sorted(data)[len(data) // 2] * 1e3 if data else None, **phases.phases_ms(s.train_iters),
           "peak_mem_gib": mem, "peak_mem_kind": kind,
           "grad_checkpointing": bool(getattr(model.backbone.vit, "grad_checkpointing", False))}
    del trainer, model, optim
    return out


def section_train(budget: Budget, s: Settings, root: str) -> None:
    for name, (config, _) in TRAIN_CONFIGS.items():
        budget.check(name)
        budget.result[name] = attempt(lambda: _train_one(os.path.join(root, config), s.train_sizes[name], s))
        budget.done(name)
