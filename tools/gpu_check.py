#!/usr/bin/env python
"""Every GPU figure of the project from one prepared script (docs/gpu.md, "GPU figures").

    python tools/gpu_check.py [--output output/gpu_check] [--only SECTION ...] [--caps train=90 ...]
    python tools/gpu_check.py --dry-run --output /tmp/gpu_check   # the same code paths on CPU, tiny

Sections, in order, each under its own time cap (``--caps``; 7.5 minutes in all on the GPU), each
recording its own failure (an OOM at a batch size is a result) and, past its cap, how far it got:
``device`` (GPU, versions, measured bf16 matmul TFLOP/s), ``train`` (img/s and ms per step split
into data / forward / backward / optimizer for ViT-B 420 and ViT-L 1008), ``memory`` (peak GiB of
ViT-L 1008 at batch 1 and 2, gradient checkpointing on / off, largest batch), ``eval`` (pipeline
img/s of ours, Mask2Former R50 and EoMT-L on the same synthetic images, and the ViT-L 1008 bf16
forward as % of the matmul peak), ``learning`` (val PQ_th of three short synthetic trainings).
Writes ``<output>/gpu_check.json`` after every section and prints a table.
"""
import argparse
import json
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)


def parse_caps(items):
    caps = {}
    for item in items or []:
        name, sep, value = item.partition("=")
        try:
            caps[name] = float(value)
        except ValueError:
            sep = ""
        if not sep or caps[name] <= 0:
            raise SystemExit(f"--caps: {item!r} is not section=seconds (seconds > 0)")
    return caps


def get_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--output", default=os.path.join(ROOT, "output/gpu_check"), help="folder of gpu_check.json")
    ap.add_argument("--dry-run", action="store_true", help="the same code paths on CPU at tiny sizes")
    ap.add_argument("--only", nargs="+", default=None, help="run only these sections (the others are recorded as skipped)")
    ap.add_argument("--caps", nargs="+", default=None, help="time caps in seconds, e.g. train=90 learning=300")
    return ap


def main(argv=None):
    args = get_parser().parse_args(argv)
    os.environ.setdefault("DETECTRON2_DATASETS", os.path.join(ROOT, "datasets"))

    import torch

    from pe_panoptic.studies.gpu_check import SECTIONS, make_settings, run_section
    from pe_panoptic.studies.gpu_check.device_train import section_device, section_train
    from pe_panoptic.studies.gpu_check.learning import section_learning
    from pe_panoptic.studies.gpu_check.memory_eval import section_eval, section_memory
    from pe_panoptic.studies.gpu_check.report import summary_table

    unknown = set(args.only or []) - set(SECTIONS)
    if unknown:
        raise SystemExit(f"--only: unknown sections {sorted(unknown)}; choose from {list(SECTIONS)}")
    try:
        s = make_settings(args.dry_run, parse_caps(args.caps))
    except ValueError as e:
        raise SystemExit(str(e))
    if not s.dry_run and not torch.cuda.is_available():
        raise SystemExit("tools/gpu_check.py: no CUDA device here; run it on a GPU, or use --dry-run on CPU")
    os.makedirs(args.output, exist_ok=True)
    path = os.path.join(args.output, "gpu_check.json")
    report = {"dry_run": s.dry_run, "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "caps_s": s.caps,
              **{name: {"status": "not_run"} for name in SECTIONS}}

    def ensure_dataset():
        from pe_panoptic.data.synthetic import ensure_synthetic_panoptic

        ensure_synthetic_panoptic(variant=s.synthetic_variant)

    jobs = {
        "device": lambda b: section_device(b, s),
        "train": lambda b: section_train(b, s, ROOT),
        "memory": lambda b: section_memory(b, s, ROOT),
        "eval": lambda b: (ensure_dataset(), section_eval(b, s, ROOT, report["device"].get("matmul_bf16_tflops")))[1],
        "learning": lambda b: (ensure_dataset(), section_learning(b, s, ROOT, args.output))[1],
    }
    t0 = time.perf_counter()
    for name in SECTIONS:
        if args.only and name not in args.only:
            report[name] = {"status": "skipped"}
            continue
        print(f"[gpu_check] {name} (cap {s.caps[name]:.0f} s)", flush=True)
        report[name] = run_section(name, jobs[name], s.caps[name])
        print(f"[gpu_check] {name}: {report[name]['status']} in {report[name]['seconds']:.1f} s", flush=True)
        report["total_s"] = round(time.perf_counter() - t0, 1)
        with open(path, "w") as f:  # after every section: a run killed later keeps what it measured
            json.dump(report, f, indent=1, default=str)
    print(summary_table(report))
    print(f"[gpu_check] wrote {path} ({report['total_s']:.0f} s)")
    return report


if __name__ == "__main__":
    main()
