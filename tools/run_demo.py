#!/usr/bin/env python
"""End-to-end demo behind ``make demo``: synthetic data -> train on CPU -> evaluate -> visualize.

1. generates the built-in synthetic panoptic dataset under ``$DETECTRON2_DATASETS`` if missing,
2. fine-tunes the ``PixelCentroidHead`` of ``configs/synthetic/pe_vits.py`` (real DINOv2 ViT-S/14
   weights from ``make weights``, first 6 blocks) with ``tools/train_net.py`` (progress with ETA in
   the log, ``learning_curve.{json,png}`` in the output folder),
3. evaluates it with ``COCOPanopticEvaluator`` + semantic mIoU and writes
   ``<output>/metrics.json`` (PQ, PQ_th, PQ_st, SQ, RQ, mIoU, ...),
4. scores every post-processing variant (decoder x void_source) of the same checkpoint with
   ``tools/eval_postprocess.py`` -> ``<output>/postprocess_variants.json``,
5. saves panoptic visualizations of a few val images (detectron2 ``Visualizer``) next to it.

A second run into an output folder that already holds a demo run refuses up front (before any
work), naming the folder: ``make clean-demo`` first, or ``--overwrite`` to retrain and replace it
(passed on to ``tools/train_net.py``). Replacing a finished 15-minute run is a decision, so
``make demo`` does not pass ``--overwrite`` by itself.

Overrides (passed on to every step): ``--opts key=value ...``, or ``key=value`` tokens anywhere on the
line (:mod:`pe_panoptic.engine.cli`).
"""
import argparse
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def flatten_metrics(results: dict) -> dict:
    out = {}
    pan = results.get("panoptic_seg", {})
    for k in ("PQ", "SQ", "RQ", "PQ_th", "SQ_th", "RQ_th", "PQ_st", "SQ_st", "RQ_st"):
        if k in pan:
            out[k] = float(pan[k])
    sem = results.get("sem_seg", {})
    for k in ("mIoU", "fwIoU", "mACC", "pACC"):
        if k in sem:
            out[k] = float(sem[k])
    return out


def _backbone_weights(config_file: str, opts) -> str:
    from pe_panoptic.engine.config_overrides import load_config

    cfg = load_config(config_file, opts)
    return str(cfg.model.backbone.get("weights") or "")


def visualize(config_file: str, checkpoint: str, out_dir: str, num_images: int, opts) -> list:
    import numpy as np
    import torch
    from PIL import Image

    import pe_panoptic  # noqa: F401
    from detectron2.data import DatasetCatalog
    from detectron2.utils.visualizer import ColorMode, Visualizer

    from pe_panoptic.engine.predictor import Predictor

    pred = Predictor.from_config(config_file, opts, checkpoint, device="cpu", missing_weights="error")
    names = pred.cfg.dataloader.test.dataset.names
    dataset = DatasetCatalog.get(names if isinstance(names, str) else names[0])
    meta = pred.metadata
    paths = []
    with torch.no_grad():
        for i, d in enumerate(dataset[:num_images]):
            out = pred(d["file_name"])
            img = np.asarray(Image.open(d["file_name"]).convert("RGB"))
            seg, info = out["panoptic_seg"]
            vis = Visualizer(img, meta, scale=2.0, instance_mode=ColorMode.IMAGE)
            drawn = vis.draw_panoptic_seg(seg.cpu(), info).get_image()
            path = os.path.join(out_dir, f"vis_{i:02d}_{os.path.splitext(os.path.basename(d['file_name']))[0]}.png")
            Image.fromarray(np.concatenate([np.asarray(Image.fromarray(img).resize(drawn.shape[1::-1])), drawn], 1)).save(path)
            paths.append(path)
    return paths


def get_parser() -> argparse.ArgumentParser:
    from pe_panoptic.engine.cli import with_opts  # here: importing pe_panoptic loads torch

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config-file", default=os.path.join(ROOT, "configs/synthetic/pe_vits.py"))
    ap.add_argument("--output", default=os.path.join(ROOT, "output/demo"))
    ap.add_argument("--num-vis", type=int, default=4)
    ap.add_argument("--skip-variants", action="store_true",
                    help="do not score the other post-processing variants (tools/eval_postprocess.py)")
    ap.add_argument("--overwrite", action="store_true",
                    help="retrain and replace a demo run already in --output (default: refuse)")
    return with_opts(ap)


def parse_args(argv=None) -> argparse.Namespace:
    """The command line, with every ``key=value`` override (``--opts`` or positional) in ``opts``."""
    from pe_panoptic.engine.cli import parse_tool_args

    return parse_tool_args(get_parser(), argv)


def main(argv=None):
    args = parse_args(argv)
    from pe_panoptic.engine.run_dir import existing_run

    found = existing_run(args.output)
    if found and not args.overwrite:
        raise SystemExit(f"[demo] {args.output} already holds {found}. Remove it first (make clean-demo for "
                         f"output/demo) or pass --overwrite (tools/run_demo.py --overwrite) to retrain and replace it.")
    weights = _backbone_weights(args.config_file, args.opts)
    if weights and not os.path.isfile(weights):
        raise SystemExit(f"[demo] the pretrained weights {weights} are missing: run `make weights` "
                         f"(tools/get_weights.py) first, or set PE_PANOPTIC_WEIGHTS to their folder")
    os.environ.setdefault("DETECTRON2_DATASETS", os.path.join(ROOT, "datasets"))
    t0 = time.time()

    from pe_panoptic.data.synthetic import ensure_synthetic_panoptic

    ensure_synthetic_panoptic(os.environ["DETECTRON2_DATASETS"])
    print(f"[demo] synthetic dataset ready ({time.time() - t0:.1f}s)", flush=True)

    os.makedirs(args.output, exist_ok=True)
    metrics_path = os.path.join(args.output, "metrics.json")
    raw_path = os.path.join(args.output, "metrics_raw.json")
    opts = [f"train.output_dir={args.output}"] + list(args.opts)
    cmd = [sys.executable, os.path.join(ROOT, "tools/train_net.py"), "--config-file", args.config_file,
           "--metrics-json", raw_path] + (["--overwrite"] if args.overwrite else []) + opts
    print("[demo] " + " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)
    with open(raw_path) as f:
        metrics = flatten_metrics(json.load(f))
    missing = {"PQ", "PQ_th", "PQ_st", "SQ", "RQ", "mIoU"} - set(metrics)
    if missing:
        raise SystemExit(f"[demo] evaluation did not produce {sorted(missing)}; see {raw_path}")
    metrics["train_eval_seconds"] = round(time.time() - t0, 1)
    with open(metrics_path, "w") as f:
        json.dump(metrics, f, indent=2)
    if not args.skip_variants:
        # trained PQ of every decoder x void_source on the same checkpoint (one forward pass)
        vcmd = [sys.executable, os.path.join(ROOT, "tools/eval_postprocess.py"), "--config-file", args.config_file,
                "--checkpoint", os.path.join(args.output, "model_final.pth"),
                "--metrics-json", os.path.join(args.output, "postprocess_variants.json")] + opts
        print("[demo] " + " ".join(vcmd), flush=True)
        subprocess.run(vcmd, check=True)
    paths = visualize(args.config_file, os.path.join(args.output, "model_final.pth"), args.output, args.num_vis, opts)
    print(f"[demo] visualizations: {', '.join(os.path.basename(p) for p in paths)}")
    print(f"[demo] metrics ({metrics_path}): " + json.dumps(metrics))
    print(f"[demo] total {time.time() - t0:.0f}s")


if __name__ == "__main__":
    main()
