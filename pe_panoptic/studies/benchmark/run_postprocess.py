"""``tools/benchmark.py postprocess``: the post-processing decoders against the naive reference and
the forward; ``postprocess-memory``: the peak RSS post-processing adds at large sizes."""
from __future__ import annotations

import json
import time

import numpy as np
import torch

from pe_panoptic.studies import benchmark as B
from pe_panoptic.studies.benchmark.cli import _check_size, _emit, _model_from_args, _model_name, _set_threads
from pe_panoptic.studies.tables import format_table


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
    print(format_table(["size", "decode_at", "peak MiB", "bytes/pixel", "s"],
                       [[f"{r['height']}x{r['width']}", r["decode_at"], r["peak_mib"], r["bytes_per_pixel"], r["seconds"]]
                        for r in rows]))
    ret = {"subcommand": "postprocess-memory", "num_classes": args.num_classes, "results": rows}
    print(json.dumps(ret))
    return ret
