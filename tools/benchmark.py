#!/usr/bin/env python
"""Benchmarks of pe_panoptic as ratios measured within one run.

Subcommands (each prints a table and, as its LAST line, a JSON object with the figures):

``model``
    Forward time per image and images/s of a model (``--config-file`` LazyConfig or
    ``--backbone`` DINOv2 name: the paper's architecture) at ``--size``, ``--batch``, ``--dtype``
    on ``--device``; GMACs (fvcore: one multiply-add = one "flop") and GFLOPs (2 x MACs);
    achieved FLOP/s against the peak matmul FLOP/s (``2 n^3 / t``, same dtype and device)
    measured interleaved with the forward: ``flops_utilization`` (0..1), ``images_per_s``.
``postprocess``
    Time per image of the post-processing decoders (:func:`pe_panoptic.postprocess.panoptic_from_outputs`)
    on realistic outputs (synthetic panoptic scenes at ``--size``, perfect outputs + noise at the
    output resolution, ``--grid``) against the naive reference (full ``gh * gw``-way
    nearest-neighbour search, Painter-style per-colour thresholding into dense masks, Matrix
    NMS; :func:`pe_panoptic.studies.benchmark.naive_panoptic`) and against the forward of a DINOv2 ViT-S
    model at ``--forward-size``: ``speedup_vs_naive`` and ``fraction_of_forward``.
``data``
    Images/s of ONE worker (1 thread) running the training mapper (decode, augment, semantic,
    PE and EDS targets) at each of ``--sizes``: ``images_per_s_per_worker``.
``train``
    Images/s and peak memory of training steps (:class:`pe_panoptic.engine.trainer.PETrainer`,
    autocast in ``--dtype``) on synthetic inputs: ``images_per_s``, ``peak_mem_gb``.

Examples (the figures of the note)::

    python tools/benchmark.py model --backbone vit_base_patch14_dinov2 --size 420 --dtype fp32
    python tools/benchmark.py postprocess --size 420 --grid 80 80
    python tools/benchmark.py data --sizes 420 1008
    python tools/benchmark.py train --backbone vit_large_patch14_dinov2 --size 616 --batch 8 --dtype bf16
    python tools/benchmark.py train --config-file configs/coco/vitl_stage3.py --batch 4 --dtype bf16

CPU timings on a shared machine: ``--threads 1`` gives the most stable ratios (with several
threads, a descheduled OpenMP thread stalls every parallel op).
"""
from __future__ import annotations

import argparse
import cProfile
import itertools
import json
import logging
import os
import pstats
import tempfile
import time
from typing import List, Optional


import numpy as np  # noqa: E402
import torch  # noqa: E402

import pe_panoptic  # noqa: E402,F401  (registers datasets and the meta-architecture)
from pe_panoptic.studies import benchmark as B  # noqa: E402

# ------------------------------------------------------------------------------------------------
# common
# ------------------------------------------------------------------------------------------------


def _json_arg(text: Optional[str], name: str) -> dict:
    if not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise SystemExit(f"{name}: not valid JSON ({e}): {text!r}")
    if not isinstance(value, dict):
        raise SystemExit(f"{name}: expected a JSON object, got {text!r}")
    return value


def _set_threads(n: Optional[int]) -> int:
    if n is not None:
        if n < 1:
            raise SystemExit(f"--threads must be >= 1, got {n}")
        torch.set_num_threads(n)
    return torch.get_num_threads()


def _check_size(size: int, name: str = "--size", div: int = 14) -> int:
    if size < div or size % div:
        raise SystemExit(f"{name} {size}: must be a positive multiple of the patch size {div}")
    return size


def _model_from_args(args, prefix: str = "") -> torch.nn.Module:
    """The benchmarked model from ``--{prefix}config-file`` (+ overrides) or ``--{prefix}backbone``."""
    kwargs_flag = f"--{prefix.replace('_', '-')}model-kwargs"
    return B.build_benchmark_model(
        config_file=getattr(args, prefix + "config_file"),
        overrides=getattr(args, prefix + "opts", None) or (),
        backbone=getattr(args, prefix + "backbone"),
        model_kwargs=_json_arg(getattr(args, prefix + "model_kwargs"), kwargs_flag),
        decoder_width=args.decoder_width,
        num_classes=args.num_classes,
        num_things=args.num_things,
        depth=args.depth,
    )


def _config_input_size(config_file: Optional[str], opts) -> Optional[int]:
    """``dataloader.train.mapper.input_size`` of a LazyConfig (an int or ``(H, W)`` with H == W)."""
    if not config_file:
        return None
    from pe_panoptic.engine.config_overrides import load_config

    cfg = load_config(config_file, opts or [])
    try:
        size = cfg.dataloader.train.mapper.input_size
    except (AttributeError, KeyError):
        return None
    if isinstance(size, int):
        return size
    try:
        h, w = size
    except (TypeError, ValueError):
        return None
    return int(h) if h == w else None


def _model_name(args, prefix: str = "") -> str:
    cfg = getattr(args, prefix + "config_file")
    return cfg if cfg else getattr(args, prefix + "backbone")


def _run_fields(subcommand: str, args, size, device, threads) -> dict:
    """The settings every model / train result reports."""
    return {"subcommand": subcommand, "model": _model_name(args), "size": size, "batch": args.batch,
            "dtype": args.dtype, "device": str(device), "threads": threads}


def _emit(title: str, rows: List[dict], columns: List[str], result: dict) -> dict:
    print(title)
    print(B.format_table(rows, columns))
    print(json.dumps(result, sort_keys=True), flush=True)
    return result


# ------------------------------------------------------------------------------------------------
# model
# ------------------------------------------------------------------------------------------------


def run_model(args) -> dict:
    device = B.resolve_device(args.device)
    dtype = B.resolve_dtype(args.dtype)
    threads = _set_threads(args.threads)
    size = _check_size(args.size)
    if args.batch < 1:
        raise SystemExit(f"--batch must be >= 1, got {args.batch}")
    model = _model_from_args(args).eval().to(device=device, dtype=dtype)
    x = torch.randn(args.batch, 3, size, size, generator=torch.Generator().manual_seed(0)).to(device, dtype)
    wrapped = B.ForwardFeatures(model)
    with torch.inference_mode():
        macs, uncounted = B.count_macs(wrapped, (x,))
    n = args.matmul_size or (8192 if device.type == "cuda" else 2048)
    mm, mm_flops = B.matmul_fn(n, device, dtype, repeats=args.matmul_repeats)

    def forward():
        with torch.inference_mode():
            return wrapped(x)

    times = B.interleaved_times({"forward": forward, "matmul": mm}, rounds=args.iters, warmup=args.warmup,
                                device=device)
    fwd, mmt = B.summarize(times["forward"]), B.summarize(times["matmul"])
    flops = 2.0 * macs  # per batch
    achieved = flops / fwd["median_s"]
    peak = mm_flops / mmt["median_s"]
    result = {
        **_run_fields("model", args, size, device, threads),
        "gmacs_per_image": macs / args.batch / 1e9,
        "gflops_per_image": flops / args.batch / 1e9,
        "forward_ms": fwd["median_s"] * 1e3,
        "forward_ms_min": fwd["min_s"] * 1e3,
        "ms_per_image": fwd["median_s"] * 1e3 / args.batch,
        "images_per_s": args.batch / fwd["median_s"],
        "achieved_tflops": achieved / 1e12,
        "matmul_size": n,
        "peak_matmul_tflops": peak / 1e12,
        "flops_utilization": achieved / peak,
        "flops_utilization_best": (flops / fwd["min_s"]) / (mm_flops / mmt["min_s"]),
        "uncounted_ops": uncounted,
        "iters": args.iters,
    }
    rows = [
        {"what": "forward", "median_ms": fwd["median_s"] * 1e3, "min_ms": fwd["min_s"] * 1e3,
         "TFLOP/s": achieved / 1e12, "note": f"{flops / 1e9:.1f} GFLOP/batch (2 x {macs / 1e9:.1f} GMAC)"},
        {"what": f"matmul {n}^3", "median_ms": mmt["median_s"] * 1e3, "min_ms": mmt["min_s"] * 1e3,
         "TFLOP/s": peak / 1e12, "note": "peak"},
    ]
    title = (f"model {result['model']} {size}x{size} batch {args.batch} {args.dtype} on {device} ({threads} threads): "
             f"{result['images_per_s']:.3g} images/s, FLOP/s utilization {result['flops_utilization']:.1%}")
    return _emit(title, rows, ["what", "median_ms", "min_ms", "TFLOP/s", "note"], result)


# ------------------------------------------------------------------------------------------------
# postprocess
# ------------------------------------------------------------------------------------------------


def run_postprocess(args) -> dict:
    from pe_panoptic.encoding import build_encoding
    from pe_panoptic.postprocess import DECODERS, PostProcessConfig, panoptic_from_outputs
    from pe_panoptic.data.targets import panoptic_targets

    device = B.resolve_device(args.device)
    threads = _set_threads(args.threads)
    size = _check_size(args.size)
    out = args.output_size or int(round(size * 8 / 14))
    if not 0 < out <= size:
        raise SystemExit(f"--output-size {out}: must be in (0, --size]")
    bad = [d for d in args.decoders if d not in DECODERS]
    if bad or args.decoder not in args.decoders:
        raise SystemExit(f"--decoders {args.decoders} / --decoder {args.decoder}: choose from {DECODERS}, "
                         "and --decoder must be one of --decoders")
    if args.images < 1:
        raise SystemExit(f"--images must be >= 1, got {args.images}")
    enc = build_encoding(args.encoding, args.num_harmonics)
    things = list(range(args.num_things))
    g = torch.Generator().manual_seed(args.seed)
    inputs = []
    for i in range(args.images):
        _, pan, segs = B.synthetic_panoptic_sample((size, size), args.seed + i, num_classes=args.num_classes,
                                                   num_things=args.num_things)
        t = panoptic_targets(pan, segs, input_hw=(size, size), output_hw=(out, out))
        sem, inst = B.noisy_outputs(t, enc, args.num_classes, noise=args.noise, generator=g)
        inputs.append((sem.to(device), inst.to(device), int(t["inst_ids"].max())))
    cfgs = {d: PostProcessConfig(decoder=d, grid=tuple(args.grid)) for d in args.decoders}

    def ours(cfg):
        return lambda: [panoptic_from_outputs(s, i, enc, things, cfg) for s, i, _ in inputs]

    naive_cfg = PostProcessConfig(decoder="painter", grid=tuple(args.grid))
    fns = {d: ours(c) for d, c in cfgs.items()}
    fns["naive"] = lambda: [B.naive_panoptic(s, i, enc, things, naive_cfg) for s, i, _ in inputs]
    fwd_model = None
    if not args.no_forward:
        fwd_size = _check_size(args.forward_size or size, "--forward-size")
        fwd_model = _model_from_args(args, "forward_").eval().to(device)
        x = torch.randn(1, 3, fwd_size, fwd_size, generator=torch.Generator().manual_seed(0)).to(device)

        def forward():
            with torch.inference_mode():
                return fwd_model.forward_features(x)

        def backbone():
            with torch.inference_mode():
                return fwd_model.backbone(x)

        fns["forward"] = forward
        fns["backbone"] = backbone
    with torch.inference_mode():
        times = B.interleaved_times(fns, rounds=args.iters, warmup=args.warmup, device=device)
        # the naive reference follows the painter rules: check that it gives the same panoptic maps
        same = all(
            torch.equal(panoptic_from_outputs(s, i, enc, things, naive_cfg)[0],
                        B.naive_panoptic(s, i, enc, things, naive_cfg)[0])
            for s, i, _ in inputs
        )
    per_img = {k: B.summarize(v)["median_s"] / (1 if k in ("forward", "backbone") else len(inputs))
               for k, v in times.items()}
    fwd_s, bb_s = per_img.get("forward"), per_img.get("backbone")
    rows, dec_res = [], {}
    for d in args.decoders:
        r = {"ms_per_image": per_img[d] * 1e3, "speedup_vs_naive": per_img["naive"] / per_img[d]}
        if fwd_s:
            r["fraction_of_forward"] = per_img[d] / fwd_s
        dec_res[d] = r
        rows.append({"what": f"decoder {d}", **r})
    rows.append({"what": "naive reference", "ms_per_image": per_img["naive"] * 1e3, "speedup_vs_naive": 1.0,
                 **({"fraction_of_forward": per_img["naive"] / fwd_s} if fwd_s else {})})
    if fwd_s:
        rows.append({"what": f"forward {_model_name(args, 'forward_')} {fwd_size}", "ms_per_image": fwd_s * 1e3})
        rows.append({"what": "  of which the backbone", "ms_per_image": bb_s * 1e3})
    head = dec_res[args.decoder]
    result = {
        "subcommand": "postprocess",
        "decoder": args.decoder,
        "speedup_vs_naive": head["speedup_vs_naive"],
        "fraction_of_forward": head.get("fraction_of_forward"),
        "ms_per_image": head["ms_per_image"],
        "naive_ms_per_image": per_img["naive"] * 1e3,
        "forward_ms": fwd_s * 1e3 if fwd_s else None,
        "backbone_forward_ms": bb_s * 1e3 if bb_s else None,
        "fraction_of_backbone_forward": head["ms_per_image"] / (bb_s * 1e3) if bb_s else None,
        "forward_model": _model_name(args, "forward_") if fwd_s else None,
        "decoders": dec_res,
        "naive_matches_painter": bool(same),
        "output_size": out,
        "grid": list(args.grid),
        "images": len(inputs),
        "instances_per_image": float(np.mean([k for _, _, k in inputs])),
        "noise": args.noise,
        "device": str(device),
        "threads": threads,
        "iters": args.iters,
    }
    title = (f"post-processing at {out}x{out}, grid {args.grid[0]}x{args.grid[1]}, {len(inputs)} images "
             f"({result['instances_per_image']:.1f} instances each) on {device} ({threads} threads)")
    return _emit(title, rows, ["what", "ms_per_image", "speedup_vs_naive", "fraction_of_forward"], result)


# ------------------------------------------------------------------------------------------------
# data
# ------------------------------------------------------------------------------------------------


def _synthetic_dicts(root: str, num: int, image_size, seed: int) -> List[dict]:
    from pe_panoptic.data.synthetic import generate_synthetic_panoptic, load_synthetic_panoptic

    generate_synthetic_panoptic(root, seed=seed, num_train=num, num_val=1, image_size=tuple(image_size),
                                scene=B.scaled_scene_config(image_size))
    return load_synthetic_panoptic(root, "train")


def run_data(args) -> dict:
    import cv2

    from detectron2.data import DatasetCatalog
    from pe_panoptic.data.mapper import PanopticCentroidDatasetMapper, PanopticTargets, build_train_augmentations

    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    for s in args.sizes:
        _check_size(s, "--sizes")
    if args.rounds < 1 or args.warmup < 0:
        raise SystemExit("--rounds must be >= 1 and --warmup >= 0")
    with tempfile.TemporaryDirectory(prefix="pe_bench_data_") as tmp:
        if args.dataset:
            if args.dataset not in DatasetCatalog.list():
                raise SystemExit(f"--dataset {args.dataset!r} is not registered")
            dicts = DatasetCatalog.get(args.dataset)
            source = args.dataset
        else:
            dicts = _synthetic_dicts(tmp, args.images, args.image_size, args.seed)
            source = f"synthetic {args.image_size[0]}x{args.image_size[1]}"
        if args.images:
            dicts = dicts[: args.images]
        if not dicts:
            raise SystemExit(f"no images in {source}")
        mappers = {
            s: PanopticCentroidDatasetMapper(True, augmentations=build_train_augmentations(s), input_size=s,
                                             panoptic=PanopticTargets(dataset_name=args.dataset or None))
            for s in args.sizes
        }
        rng = np.random.RandomState(args.seed)

        def epoch(mapper):
            def run():
                np.random.seed(rng.randint(2**31))  # detectron2's augmentations draw from np.random
                for d in dicts:
                    mapper(d)
            return run

        prof = cProfile.Profile() if args.profile else None
        fns = {str(s): epoch(m) for s, m in mappers.items()}
        if prof:
            prof.enable()
        times = B.interleaved_times(fns, rounds=args.rounds, warmup=args.warmup)
        if prof:
            prof.disable()
    ips, rows = {}, []
    for s in args.sizes:
        t = B.summarize(times[str(s)])
        ips[str(s)] = len(dicts) / t["median_s"]
        rows.append({"size": s, "images_per_s_per_worker": ips[str(s)],
                     "ms_per_image": t["median_s"] * 1e3 / len(dicts), "min_ms_per_image": t["min_s"] * 1e3 / len(dicts)})
    result = {"subcommand": "data", "images_per_s_per_worker": ips, "source": source, "images": len(dicts),
              "rounds": args.rounds, "threads": 1, "profiled": bool(prof)}
    if prof:
        pstats.Stats(prof).sort_stats("tottime").print_stats(args.profile)
    title = f"training mapper, one worker (1 thread), {len(dicts)} images of {source}, {args.rounds} rounds"
    return _emit(title, rows, ["size", "images_per_s_per_worker", "ms_per_image", "min_ms_per_image"], result)


# ------------------------------------------------------------------------------------------------
# train
# ------------------------------------------------------------------------------------------------


def run_train(args) -> dict:
    """Training step time and peak memory; with ``--against k=v ...`` a second model (the same
    config plus those overrides) is timed in the same run, steps interleaved, and the ratio of the
    median step times is reported (``speedup = against / base``)."""
    from detectron2.utils.events import EventStorage
    from pe_panoptic.engine.trainer import PETrainer

    device = B.resolve_device(args.device)
    B.resolve_dtype(args.dtype)
    threads = _set_threads(args.threads)
    size = _check_size(args.size or _config_input_size(args.config_file, args.opts) or 420)
    if args.batch < 1 or args.iters < 1 or args.warmup < 0:
        raise SystemExit("--batch and --iters must be >= 1, --warmup >= 0")
    against = list(args.against or [])
    if against and not args.config_file:
        raise SystemExit("--against needs --config-file (its overrides are applied to that config)")
    amp = args.dtype != "fp32"

    def make(opts):
        torch.manual_seed(args.seed)
        a = argparse.Namespace(**{**vars(args), "opts": list(args.opts or []) + list(opts)})
        model = _model_from_args(a).train().to(device)
        optim = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.05)
        ncls = int(getattr(model, "num_classes", args.num_classes))
        things = list(getattr(model, "thing_ids", range(args.num_things)))
        batch = B.training_inputs(args.batch, size, num_classes=ncls, thing_ids=things, seed=args.seed,
                                  depth=bool(getattr(model, "depth", False)))
        return PETrainer(model, itertools.repeat(batch), optim, amp=amp, amp_dtype=args.dtype if amp else "bf16",
                         device=str(device))

    variants = {"base": make([])}
    if against:
        variants["against: " + " ".join(against)] = make(against)
    B.reset_peak_memory(device)
    times = {k: [] for k in variants}
    losses = {}
    with EventStorage(0) as storage:
        for i in range(args.warmup + args.iters):
            for name, trainer in variants.items():  # interleaved: drifts in machine load hit both
                trainer.iter = storage.iter = i
                B.synchronize(device)
                t0 = time.perf_counter()
                trainer.run_step()
                B.synchronize(device)
                if i >= args.warmup:
                    times[name].append(time.perf_counter() - t0)
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


# ------------------------------------------------------------------------------------------------
# CLI
# ------------------------------------------------------------------------------------------------


def _add_model_args(p: argparse.ArgumentParser, prefix: str = "", default_backbone: str = "vit_base_patch14_dinov2"):
    dash = f"--{prefix}"
    p.add_argument(f"{dash}config-file", default=None, help="LazyConfig with a `model` node (else --backbone)")
    p.add_argument(f"{dash}backbone", default=default_backbone, help="DINOv2 model name (timm), without a config")
    p.add_argument(f"{dash}model-kwargs", default=None,
                   help='JSON timm overrides of the backbone, e.g. \'{"depth": 2, "embed_dim": 48, "num_heads": 2}\'')


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    sub = p.add_subparsers(dest="cmd", required=True)

    def common(sp):
        sp.add_argument("--decoder-width", type=int, default=256)
        sp.add_argument("--num-classes", type=int, default=133)
        sp.add_argument("--num-things", type=int, default=80)
        sp.add_argument("--depth", action="store_true", help="add the depth head (without a config)")
        sp.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda, cuda:1")
        sp.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
        sp.add_argument("--seed", type=int, default=0)

    m = sub.add_parser("model", help="forward images/s and FLOP/s utilization")
    _add_model_args(m)
    common(m)
    m.add_argument("--size", type=int, default=420)
    m.add_argument("--batch", type=int, default=1)
    m.add_argument("--dtype", default="fp32", choices=sorted(B.DTYPES))
    m.add_argument("--iters", type=int, default=10, help="interleaved timing rounds")
    m.add_argument("--warmup", type=int, default=2)
    m.add_argument("--matmul-size", type=int, default=None, help="n of the n x n matmul peak (8192 cuda, 2048 cpu)")
    m.add_argument("--matmul-repeats", type=int, default=1)
    m.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides key=value")

    pp = sub.add_parser("postprocess", help="post-processing vs naive reference and vs the forward")
    _add_model_args(pp, "forward-", "vit_small_patch14_dinov2")
    common(pp)
    pp.add_argument("--size", type=int, default=420, help="network input size of the scenes")
    pp.add_argument("--output-size", type=int, default=None, help="default: round(size * 8 / 14) = 240")
    pp.add_argument("--forward-size", type=int, default=None, help="input size of the forward (default --size)")
    pp.add_argument("--no-forward", action="store_true", help="skip the forward (no fraction_of_forward)")
    pp.add_argument("--grid", type=int, nargs=2, default=(80, 80), metavar=("GH", "GW"))
    pp.add_argument("--decoders", nargs="+", default=["nn", "vote", "painter"])
    pp.add_argument("--decoder", default="nn", help="decoder of the headline figures")
    pp.add_argument("--encoding", default="pe", choices=["pe", "rgb", "bins"])
    pp.add_argument("--num-harmonics", type=int, default=4)
    pp.add_argument("--images", type=int, default=3)
    pp.add_argument("--noise", type=float, default=0.1, help="std of the Gaussian noise on the instance code")
    pp.add_argument("--iters", type=int, default=3)
    pp.add_argument("--warmup", type=int, default=1)

    d = sub.add_parser("data", help="training mapper images/s per worker")
    d.add_argument("--sizes", type=int, nargs="+", default=[420, 1008])
    d.add_argument("--dataset", default=None, help="registered panoptic dataset (default: synthetic images)")
    d.add_argument("--images", type=int, default=8, help="images (synthetic: generated; dataset: first N)")
    d.add_argument("--image-size", type=int, nargs=2, default=(480, 640), metavar=("H", "W"))
    d.add_argument("--rounds", type=int, default=3, help="interleaved passes over the images per size")
    d.add_argument("--warmup", type=int, default=1)
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--profile", type=int, default=0, metavar="N", help="print the N top cProfile entries")

    mm = sub.add_parser("postprocess-memory", help="peak memory of post-processing one large original image")
    mm.add_argument("--sizes", nargs="+", default=["3000x4000", "4000x6000"], help="original sizes HxW")
    mm.add_argument("--decode-at", nargs="+", default=["output"], choices=["output", "image"])
    mm.add_argument("--num-classes", type=int, default=133)

    pl = sub.add_parser("pipeline", help="evaluation pipeline images/s of several models, same images, one run")
    pl.add_argument("--entries", nargs="+", required=True, metavar="NAME=CONFIG[:CHECKPOINT]")
    pl.add_argument("--images", type=int, default=0,
                    help="first N images of each config's test loader (0: all; the panoptic evaluator scores "
                         "against the whole split, so a subset only works with evaluators that allow it)")
    pl.add_argument("--rounds", type=int, default=2)
    pl.add_argument("--device", default="auto")
    pl.add_argument("--threads", type=int, default=None)
    pl.add_argument("--trust-pickle", action="store_true", help="allow .pkl checkpoints (a pickle runs code)")
    pl.add_argument("--opts", nargs="*", default=[], help="config overrides key=value applied to every entry")

    t = sub.add_parser("train", help="training images/s and peak memory")
    _add_model_args(t)
    common(t)
    t.add_argument("--size", type=int, default=None,
                   help="input size (default: the config's dataloader.train.mapper.input_size, else 420)")
    t.add_argument("--batch", type=int, default=2)
    t.add_argument("--dtype", default="bf16", choices=sorted(B.DTYPES), help="autocast dtype (fp32: no autocast)")
    t.add_argument("--iters", type=int, default=5)
    t.add_argument("--warmup", type=int, default=2)
    t.add_argument("--lr", type=float, default=1e-4)
    t.add_argument("--against", action="append", default=None, metavar="KEY=VALUE",
                   help="also time the config with this override (repeat for several), steps interleaved, "
                        "and report the ratio (e.g. --against model.decoder.upsample_impl=convtranspose)")
    t.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides key=value")
    return p


def run_pipeline(args) -> dict:
    """Evaluation pipeline images/s (test loader + model + post-processing + PQ / mIoU evaluators,
    i.e. detectron2's ``inference_on_dataset``) of several models on the same images, in one run:
    the entries alternate for ``--rounds`` rounds and each keeps its fastest round. The first
    entry's images/s is divided by each other's (``ratio``)."""
    from detectron2.config import instantiate
    from detectron2.evaluation import inference_on_dataset

    from pe_panoptic.engine.checkpoint_io import load_weights
    from pe_panoptic.engine.config_overrides import load_config

    if len(args.entries) < 2:
        raise SystemExit("--entries needs at least two name=config[:checkpoint] entries to compare")
    if args.images < 0 or args.rounds < 1:
        raise SystemExit("--images must be >= 0 (0: all) and --rounds >= 1")
    device = B.resolve_device(args.device)
    threads = _set_threads(args.threads)
    built, sizes = {}, {}
    for spec in args.entries:
        name, sep, rest = spec.partition("=")
        if not sep or not name or not rest:
            raise SystemExit(f"--entries: {spec!r} is not name=config[:checkpoint]")
        config, _, ckpt = rest.partition(":")
        cfg = load_config(config, list(args.opts or []))
        model = instantiate(cfg.model).to(device).eval()
        if ckpt:
            load_weights(model, ckpt, trust_pickle=args.trust_pickle)
        loader = instantiate(cfg.dataloader.test)
        items = list(itertools.islice(iter(loader), args.images) if args.images else loader)
        if args.images and len(items) < args.images:
            raise SystemExit(f"{name}: the test loader of {config} has only {len(items)} images")
        if sizes and len(items) != next(iter(sizes.values())):
            raise SystemExit(f"{name}: {len(items)} test images, but the first entry has {next(iter(sizes.values()))}: "
                             "compare the entries on the same images")
        sizes[name] = len(items)
        cfg.dataloader.evaluator.output_dir = tempfile.mkdtemp(prefix=f"pe_pipeline_{name}_")
        built[name] = (model, items, cfg.dataloader.evaluator, config, ckpt)
    best = {name: float("inf") for name in built}
    with torch.no_grad():
        for _ in range(args.rounds):
            for name, (model, items, ev_cfg, _, _) in built.items():
                evaluator = instantiate(ev_cfg)
                B.synchronize(device)
                t0 = time.perf_counter()
                inference_on_dataset(model, items, evaluator)
                B.synchronize(device)
                best[name] = min(best[name], time.perf_counter() - t0)
    first = next(iter(built))
    rows, per = [], {}
    for name, (_, _, _, config, ckpt) in built.items():
        ips = sizes[name] / best[name]
        per[name] = {"config": config, "checkpoint": ckpt, "seconds": best[name], "images_per_s": ips}
        rows.append({"entry": name, "seconds": best[name], "images_per_s": ips,
                     "ratio": (sizes[first] / best[first]) / ips})
    result = {"subcommand": "pipeline", "device": str(device), "threads": threads, "images": sizes[first],
              "rounds": args.rounds, "entries": per,
              "ratios": {r["entry"]: r["ratio"] for r in rows}}
    title = (f"evaluation pipeline (loader + model + post-processing + evaluators) on {sizes[first]} images, "
             f"best of {args.rounds} rounds, {device} ({threads} threads); ratio = {first} images/s / entry images/s")
    return _emit(title, rows, ["entry", "seconds", "images_per_s", "ratio"], result)


def run_postprocess_memory(args) -> dict:
    """Peak RSS that post-processing adds for one image per size x decode_at, each in a fresh
    process (pe_panoptic.studies.benchmark.postprocess_peak_memory)."""
    rows = []
    for size in args.sizes:
        try:
            h, w = (int(v) for v in size.lower().split("x"))
        except ValueError:
            raise SystemExit(f"--sizes: {size!r} is not HxW (e.g. 4000x6000)") from None
        if h < 1 or w < 1:
            raise SystemExit(f"--sizes: {size!r} must be positive")
        for mode in args.decode_at:
            t0 = time.perf_counter()
            peak = B.postprocess_peak_memory(h, w, mode, args.num_classes)
            rows.append({"height": h, "width": w, "decode_at": mode, "peak_mib": round(peak / 2**20, 1),
                         "bytes_per_pixel": round(peak / (h * w), 2), "seconds": round(time.perf_counter() - t0, 1)})
    print(f"post-processing peak memory above the network outputs ({args.num_classes} classes)")
    print("| size | decode_at | peak MiB | bytes/pixel | s |\n|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['height']}x{r['width']} | {r['decode_at']} | {r['peak_mib']} | {r['bytes_per_pixel']} | {r['seconds']} |")
    ret = {"subcommand": "postprocess-memory", "num_classes": args.num_classes, "results": rows}
    print(json.dumps(ret))
    return ret


COMMANDS = {"pipeline": run_pipeline, "model": run_model, "postprocess": run_postprocess, "data": run_data, "train": run_train,
            "postprocess-memory": run_postprocess_memory}


def main(argv=None) -> dict:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    return COMMANDS[args.cmd](args)


if __name__ == "__main__":
    main()
