"""``tools/benchmark.py model``: forward time, GMACs and FLOP/s utilization against the matmul peak."""
from __future__ import annotations

import torch

from pe_panoptic.studies import benchmark as B
from pe_panoptic.studies.benchmark.cli import _check_size, _emit, _model_from_args, _run_fields, _set_threads


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
