"""``tools/benchmark.py train``: training step time and peak memory (optionally against overrides)."""
from __future__ import annotations

import argparse
import itertools
import time
from typing import Dict, List, Mapping

import torch

from pe_panoptic.studies import benchmark as B
from pe_panoptic.studies.benchmark.cli import (
    _check_size,
    _config_input_size,
    _emit,
    _model_from_args,
    _run_fields,
    _set_threads,
)


def build_train_model(args, opts, device):
    """``(model, AdamW optimizer)`` of a ``tools/benchmark.py train`` namespace plus ``opts``
    (``key=value`` overrides of its config), in training mode on ``device``, seeded by ``args.seed``."""
    torch.manual_seed(args.seed)
    a = argparse.Namespace(**{**vars(args), "opts": list(args.opts or []) + list(opts)})
    model = _model_from_args(a).train().to(device)
    return model, torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.05)


def make_trainer(args, model, optim, device, size: int, batch: int):
    """A :class:`pe_panoptic.engine.trainer.PETrainer` of ``model`` repeating one synthetic
    training batch of ``batch`` images of ``size`` px (:func:`pe_panoptic.studies.benchmark.training_inputs`),
    with autocast in ``args.dtype`` unless fp32."""
    from pe_panoptic.engine.trainer import PETrainer

    amp = args.dtype != "fp32"
    ncls = int(getattr(model, "num_classes", args.num_classes))
    things = list(getattr(model, "thing_ids", range(args.num_things)))
    inputs = B.training_inputs(batch, size, num_classes=ncls, thing_ids=things, seed=args.seed,
                               depth=bool(getattr(model, "depth", False)))
    return PETrainer(model, itertools.repeat(inputs), optim, amp=amp, amp_dtype=args.dtype if amp else "bf16",
                     device=str(device))


def timed_steps(trainers: Mapping[str, object], storage, *, warmup: int, iters: int, device) -> Dict[str, List[float]]:
    """Seconds of each of ``iters`` training steps (after ``warmup`` untimed ones) of every trainer,
    interleaved step by step (drifts in machine load hit all), inside detectron2's ``storage``."""
    times = {k: [] for k in trainers}
    for i in range(warmup + iters):
        for name, trainer in trainers.items():
            trainer.iter = storage.iter = i
            trainer.storage = storage  # SimpleTrainer.train() sets it; run_step writes diagnostics to it
            B.synchronize(device)
            t0 = time.perf_counter()
            trainer.run_step()
            B.synchronize(device)
            if i >= warmup:
                times[name].append(time.perf_counter() - t0)
    return times


def run_train(args) -> dict:
    """Training step time and peak memory; with ``--against k=v ...`` a second model (the same
    config plus those overrides) is timed in the same run, steps interleaved, and the ratio of the
    median step times is reported (``speedup = against / base``)."""
    from detectron2.utils.events import EventStorage

    device = B.resolve_device(args.device)
    B.resolve_dtype(args.dtype)
    threads = _set_threads(args.threads)
    size = _check_size(args.size or _config_input_size(args.config_file, args.opts) or 420)
    if args.batch < 1 or args.iters < 1 or args.warmup < 0:
        raise SystemExit("--batch and --iters must be >= 1, --warmup >= 0")
    against = list(args.against or [])
    if against and not args.config_file:
        raise SystemExit("--against needs --config-file (its overrides are applied to that config)")

    def make(opts):
        model, optim = build_train_model(args, opts, device)
        return make_trainer(args, model, optim, device, size, args.batch)

    variants = {"base": make([])}
    if against:
        variants["against: " + " ".join(against)] = make(against)
    B.reset_peak_memory(device)
    with EventStorage(0) as storage:
        times = timed_steps(variants, storage, warmup=args.warmup, iters=args.iters, device=device)
        losses = {k: float(v.median(1)) for k, v in storage.histories().items() if k.startswith("loss")}
    mem, mem_kind = B.peak_memory_gb(device)
    stats = {k: B.summarize(v) for k, v in times.items()}
    t = stats["base"]
    result = {
        **_run_fields("train", args, size, device, threads),
        "step_ms": t["median_s"] * 1e3,
        "images_per_s": args.batch / t["median_s"],
        "peak_mem_gb": mem,
        "peak_mem_kind": mem_kind,
        "last_losses": losses,
        "iters": args.iters,
    }
    rows = [{"what": f"train step ({k})", "median_ms": v["median_s"] * 1e3, "min_ms": v["min_s"] * 1e3,
             "images_per_s": args.batch / v["median_s"], "peak_mem_gb": mem, "memory": mem_kind}
            for k, v in stats.items()]
    if against:
        other = stats[list(stats)[1]]
        result["against"] = against
        result["against_step_ms"] = other["median_s"] * 1e3
        result["speedup_base_vs_against"] = other["median_s"] / t["median_s"]
    title = f"training {result['model']} {size}x{size} batch {args.batch} {args.dtype} on {device} ({threads} threads)"
    if against:
        title += f"; base is {result['speedup_base_vs_against']:.2f}x faster than against ({' '.join(against)})"
    return _emit(title, rows, ["what", "median_ms", "min_ms", "images_per_s", "peak_mem_gb", "memory"], result)
