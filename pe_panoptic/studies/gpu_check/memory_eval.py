"""``memory`` and ``eval`` sections of ``tools/gpu_check.py``.

* memory: peak GiB of one ViT-L 1008 training step (``tools/benchmark.py train``'s model and
  trainer) at batch 1 and 2 with gradient checkpointing on and off (timm's
  ``set_grad_checkpointing``, which the backbone's ``grad_checkpointing=`` calls), and the largest
  batch that fits with the config's setting (on): a bounded doubling-then-bisection search, each
  OOM a recorded probe.
* eval: ``tools/benchmark.py pipeline`` (loader + model + post-processing + evaluators) of
  :data:`~.settings.EVAL_CONFIGS` on the same synthetic val images in one run, with ratios, and
  ``tools/benchmark.py model`` (bf16 forward TFLOP/s, fvcore FLOPs) of ViT-L 1008.
"""
from __future__ import annotations

import argparse
import os
from typing import Dict, List

import torch

from pe_panoptic.studies import benchmark as B
from pe_panoptic.studies.gpu_check.device_train import train_namespace
from pe_panoptic.studies.gpu_check.runner import Budget, attempt
from pe_panoptic.studies.gpu_check.settings import EVAL_CONFIGS, TRAIN_CONFIGS, Settings, dataset_overrides

__all__ = ["section_memory", "largest_batch", "section_eval", "eval_overrides"]


def largest_batch(fits, start: int, max_batch: int, check=lambda step: None) -> dict:
    """Largest ``b`` in ``[start, max_batch]`` with ``fits(b)`` (a probe: a dict with ``ok``),
    assuming fitting is monotone: double from ``start`` until a probe fails or ``max_batch``,
    then bisect between the last fit and the first failure. ``check(step)`` runs before each probe
    (a time cap). Returns ``{"largest": b or None, "bound_reached": bool, "probes": {b: probe}}``."""
    probes: Dict[int, dict] = {}

    def probe(b):
        check(f"batch {b}")
        probes[b] = fits(b)
        return probes[b]["ok"]

    ok, bad, b = None, None, start
    while True:
        if probe(b):
            ok = b
            if b >= max_batch:
                break
            b = min(2 * b, max_batch)
        else:
            bad = b
            break
    while ok is not None and bad is not None and bad - ok > 1:
        mid = (ok + bad) // 2
        if probe(mid):
            ok = mid
        else:
            bad = mid
    return {"largest": ok, "bound_reached": ok == max_batch, "max_batch": max_batch,
            "probes": {str(k): v for k, v in sorted(probes.items())}}


def section_memory(budget: Budget, s: Settings, root: str) -> None:
    from detectron2.utils.events import EventStorage

    from pe_panoptic.studies.benchmark.run_train import build_train_model, make_trainer

    config = os.path.join(root, TRAIN_CONFIGS["vitl_1008"][0])
    size = s.train_sizes["vitl_1008"]
    device = torch.device(s.device)
    args = train_namespace(config, s.backbone_overrides, s)
    model, optim = build_train_model(args, [], device)
    vit = model.backbone.vit
    r = budget.result
    r.update(config=config, size=size, dtype="bf16")

    def step(batch: int, ckpt: bool) -> dict:
        vit.set_grad_checkpointing(ckpt)
        try:
            trainer = make_trainer(args, model, optim, device, size, batch)
            B.synchronize(device)
            B.reset_peak_memory(device)
            with EventStorage(0) as trainer.storage:
                trainer.run_step()
            B.synchronize(device)
            mem, kind = B.peak_memory_gb(device)
            return {"peak_gib": mem, "kind": kind}
        finally:
            optim.zero_grad(set_to_none=True)

    for ckpt in (True, False):
        for b in s.memory_batches:
            key = f"batch{b}_ckpt_{'on' if ckpt else 'off'}"
            budget.check(key)
            r[key] = attempt(lambda: step(b, ckpt))
            budget.done(key)
    fits = [b for b in s.memory_batches if r.get(f"batch{b}_ckpt_on", {}).get("ok")]
    r["largest_batch_ckpt_on"] = {"largest": None, "probes": {}}  # filled as the search goes
    res = largest_batch(lambda b: attempt(lambda: step(b, True)), max(fits) if fits else 1, s.memory_max_batch,
                        check=budget.check)
    r["largest_batch_ckpt_on"] = res
    budget.done("largest_batch")
    vit.set_grad_checkpointing(True)


def eval_overrides(family: str, s: Settings, num_classes: int) -> List[str]:
    """An eval entry's overrides: the synthetic dataset, and in a dry run a tiny model at a small size."""
    ov = dataset_overrides(family, s.synthetic_variant, num_classes)
    size = s.eval_sizes[family]
    if family == "ours":
        ov += list(s.backbone_overrides) + [f"dataloader.test.mapper.augmentations.size={size}"]
    if s.dry_run and family in ("mask2former", "eomt"):
        ov += [f"dataloader.test.mapper.augmentations.0.short_edge_length={size}",
               f"dataloader.test.mapper.augmentations.0.max_size={size}"]
    if s.dry_run and family == "eomt":
        ov += ["model.backbone.model_name=vit_small_patch14_reg4_dinov2", "model.backbone.out_indices=[1]",
               "model.num_blocks=1", f"model.input_size={size}"]
    return ov


def section_eval(budget: Budget, s: Settings, root: str, matmul_tflops=None) -> None:
    from pe_panoptic.data.synthetic import synthetic_panoptic_metadata
    from pe_panoptic.studies.benchmark.run_model import run_model
    from pe_panoptic.studies.benchmark.run_pipeline import run_pipeline

    ncls = len(synthetic_panoptic_metadata()["stuff_classes"])
    entry_opts = {name: eval_overrides(family, s, ncls) for name, (_, family) in EVAL_CONFIGS.items()}
    args = argparse.Namespace(entries=[f"{n}={os.path.join(root, c)}" for n, (c, _) in EVAL_CONFIGS.items()],
                              opts=[], entry_opts=entry_opts, device=s.device, threads=None, images=s.eval_images,
                              rounds=s.eval_rounds, trust_pickle=False)
    r = budget.result
    budget.check("pipeline")
    pipe = run_pipeline(args)
    r["pipeline"] = {"images": pipe["images"], "rounds": pipe["rounds"], "num_classes": ncls,
                     "dataset": f"synthetic ({s.synthetic_variant})", "entries": pipe["entries"],
                     "ratios_ours_over": pipe["ratios"], "overrides": entry_opts}
    budget.done("pipeline")
    budget.check("forward_flops")
    size = s.train_sizes["vitl_1008"]
    margs = argparse.Namespace(**{**vars(train_namespace(os.path.join(root, TRAIN_CONFIGS["vitl_1008"][0]),
                                                         s.backbone_overrides, s)),
                                  "size": size, "batch": 1, "iters": s.flops_iters, "warmup": 1,
                                  "matmul_size": s.matmul_n, "matmul_repeats": 1})
    m = run_model(margs)
    fwd = {k: m[k] for k in ("size", "batch", "gflops_per_image", "forward_ms", "images_per_s", "achieved_tflops",
                             "peak_matmul_tflops", "flops_utilization")}
    if matmul_tflops:
        fwd["utilization_of_device_peak"] = m["achieved_tflops"] / matmul_tflops
    r["forward_vitl_1008"] = fwd
    budget.done("forward_flops")
