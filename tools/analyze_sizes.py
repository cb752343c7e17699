#!/usr/bin/env python
"""Mean IoU of instances grouped by object area, for one or two models (paper Figs. 4 / 5).

Ground truth comes from a registered detectron2 panoptic dataset (``--dataset``). Each model
(``--model NAME=SOURCE``, once or twice; the first is the baseline A) is either

* a prediction dump in COCO panoptic format: ``NAME=PRED_JSON,PNG_DIR``, e.g. the
  ``predictions.json`` that detectron2's ``COCOPanopticEvaluator`` writes to its ``output_dir``
  plus the folder of the PNGs it names (category ids are the dataset's ids); or
* a model to run: ``NAME=CONFIG.py,WEIGHTS`` (``WEIGHTS`` may be ``none``); its predictions on
  ``--dataset`` are dumped in the same format to ``<output>/<NAME>/`` first (the LazyConfig's
  ``dataloader.test`` with the dataset replaced, ``--opts`` applied to every config).

Predicted thing segments are matched to ground-truth thing segments by IoU > 0.5 (panopticapi's
IoU, predicted pixels on void removed from the union; class-agnostic unless
``--same-category``); each non-crowd ground-truth thing contributes its matched IoU, or for an
unmatched one 0 (``--unmatched zero``) or its best IoU (``--unmatched max``), to the bin of its
area (see :mod:`pe_panoptic.studies.analysis`). With two models the relative improvement
``mIoU_B / mIoU_A - 1`` per bin is reported.

    python tools/analyze_sizes.py --dataset coco_2017_val_panoptic \\
        --model base=out/base/predictions.json,out/base/pngs --model pe=configs/x.py,out/pe/model_final.pth

Writes ``<output>/sizes.png`` and ``<output>/sizes.json``, prints a table; the last printed line
is a JSON object (bins, per-model mean IoU and counts per bin, relative improvement).
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import os
from typing import Dict, List, Optional, Sequence, Tuple


import numpy as np  # noqa: E402

import pe_panoptic  # noqa: E402,F401  (registers the project's datasets)
from detectron2.data import DatasetCatalog, MetadataCatalog  # noqa: E402
from pe_panoptic.studies.analysis import (  # noqa: E402
    DEFAULT_AREA_BINS,
    binned_mean_iou,
    instance_ious,
    panoptic_json_predictions,
    relative_improvement,
    segments_with_contiguous_ids,
    segments_with_isthing,
)
from pe_panoptic.data.mapper import read_panoptic_ids  # noqa: E402
from pe_panoptic.engine.cli import parse_tool_args, with_opts  # noqa: E402

logger = logging.getLogger("pe_panoptic.analyze_sizes")


# --------------------------------------------------------------------------------------------
# model sources
# --------------------------------------------------------------------------------------------
def parse_model_spec(spec: str) -> Tuple[str, str, str]:
    """``NAME=A,B`` -> ``(name, a, b)``."""
    name, sep, rest = spec.partition("=")
    parts = rest.split(",")
    if not sep or not name or len(parts) != 2 or not all(parts):
        raise ValueError(f"--model {spec!r}: expected NAME=PRED_JSON,PNG_DIR or NAME=CONFIG.py,WEIGHTS")
    return name, parts[0], parts[1]


def dump_predictions(
    config_file: str, weights: str, dataset: str, out_dir: str, opts: Sequence[str], trust_pickle: bool = False
) -> Tuple[str, str]:
    """Run a LazyConfig model on ``dataset``; write PNGs + ``predictions.json`` (COCO panoptic,
    dataset category ids) to ``out_dir``. Returns ``(json_path, png_dir)``."""
    import torch
    from detectron2.config import instantiate
    from panopticapi.utils import id2rgb
    from PIL import Image

    from pe_panoptic.engine.predictor import load_model

    no_weights = weights.lower() == "none"
    if no_weights:
        logger.warning(f"{config_file}: no weights, predicting with a randomly initialized model")
    cfg, model = load_model(config_file, opts, "" if no_weights else weights, "auto", trust_pickle,
                            missing_weights="ignore")
    cfg.dataloader.test.dataset.names = dataset
    if "mapper" in cfg.dataloader.test and cfg.dataloader.test.mapper.get("panoptic") is not None:
        cfg.dataloader.test.mapper.panoptic.dataset_name = dataset
    loader = instantiate(cfg.dataloader.test)
    meta = MetadataCatalog.get(dataset)
    to_dataset = {True: {v: k for k, v in meta.thing_dataset_id_to_contiguous_id.items()},
                  False: {v: k for k, v in meta.stuff_dataset_id_to_contiguous_id.items()}}
    png_dir = os.path.join(out_dir, "pngs")
    os.makedirs(png_dir, exist_ok=True)
    anns = []
    with torch.no_grad():
        for batch in loader:
            for inp, out in zip(batch, model(batch)):
                seg, info = out["panoptic_seg"]
                name = os.path.splitext(os.path.basename(inp["file_name"]))[0] + ".png"
                Image.fromarray(id2rgb(seg.cpu().numpy())).save(os.path.join(png_dir, name))
                segs = []
                for s in info:
                    cat = to_dataset[bool(s["isthing"])].get(s["category_id"])
                    if cat is None:
                        raise ValueError(f"{config_file}: predicted class {s['category_id']} (isthing={s['isthing']}) "
                                         f"is not a category of {dataset!r}; does the model belong to this dataset?")
                    segs.append({"id": int(s["id"]), "category_id": int(cat), "iscrowd": 0, "area": int(s["area"])})
                anns.append({"image_id": inp["image_id"], "file_name": name, "segments_info": segs})
    json_path = os.path.join(out_dir, "predictions.json")
    with open(json_path, "w") as f:
        json.dump({"annotations": anns}, f)
    return json_path, png_dir


def resolve_model(spec: str, dataset: str, output: str, opts: Sequence[str],
                  trust_pickle: bool = False) -> Tuple[str, Dict[str, dict]]:
    name, a, b = parse_model_spec(spec)
    if a.endswith(".py"):
        a, b = dump_predictions(a, b, dataset, os.path.join(output, name), opts, trust_pickle)
    return name, panoptic_json_predictions(a, b)


# --------------------------------------------------------------------------------------------
# analysis
# --------------------------------------------------------------------------------------------
def collect_ious(gt_dicts: Sequence[dict], preds: Dict[str, dict], meta, model: str, **match_kw):
    """Areas and IoU values of all ground-truth thing instances over the dataset."""
    areas, ious, matched = [], [], []
    for d in gt_dicts:
        keys = (str(d.get("image_id")), os.path.splitext(os.path.basename(d["file_name"]))[0])
        ann = next((preds[k] for k in keys if k in preds), None)
        if ann is None:
            raise ValueError(f"model {model!r}: no prediction for image {d['file_name']} (image_id {d.get('image_id')})")
        gt = read_panoptic_ids(d["pan_seg_file_name"])
        pred = read_panoptic_ids(ann["png_path"])
        res = instance_ious(gt, segments_with_isthing(d["segments_info"], meta),
                            pred, segments_with_contiguous_ids(ann["segments_info"], meta),
                            name=os.path.basename(ann["png_path"]), **match_kw)
        areas.append(res.areas)
        ious.append(res.ious)
        matched.append(res.matched)
    if not areas:
        return np.zeros(0), np.zeros(0), np.zeros(0, bool)
    return np.concatenate(areas), np.concatenate(ious), np.concatenate(matched)


def bin_labels(bins: Sequence[float]) -> List[str]:
    def fmt(a):
        return "inf" if math.isinf(a) else f"{a:g}"

    return [f"[{fmt(lo)}, {fmt(hi)})" for lo, hi in zip(bins[:-1], bins[1:])]


def _nan_to_none(x):
    return [None if not np.isfinite(v) else float(v) for v in x]


def format_table(labels, names, stats, rel) -> str:
    from pe_panoptic.studies.tables import format_table as markdown_table

    headers = ["area bin (px)", "# GT"] + [f"mIoU {n}" for n in names]
    if rel is not None:
        headers.append(f"{names[1]} vs {names[0]} (%)")
    rows = []
    for i, lab in enumerate(labels + ["all"]):
        row = [lab, int(stats[names[0]]["count"][i])] + [stats[n]["miou"][i] for n in names]
        if rel is not None:
            row.append(100.0 * rel[i])
        rows.append(row)
    return markdown_table(headers, [[_finite(v) for v in row] for row in rows], floatfmt=".4f",
                        align="l" + "r" * (len(headers) - 1))


def _finite(v):
    """numpy scalars as Python numbers (NaN stays NaN: a missing cell)."""
    return v.item() if isinstance(v, np.generic) else v


def plot(labels, names, stats, rel, path: str) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = 2 if rel is not None else 1
    fig, axes = plt.subplots(n, 1, figsize=(8, 3.2 * n), dpi=110, squeeze=False)
    x = np.arange(len(labels))
    width = 0.8 / len(names)
    ax = axes[0, 0]
    for j, name in enumerate(names):
        ax.bar(x + (j - (len(names) - 1) / 2) * width, np.nan_to_num(stats[name]["miou"][:-1]), width, label=name)
    ax.set_xticks(x, labels, fontsize=7)
    ax.set_ylabel("mean IoU")
    ax.set_title("Instance IoU by ground-truth area")
    ax.legend(fontsize=8)
    if rel is not None:
        ax = axes[1, 0]
        ax.bar(x, 100.0 * np.nan_to_num(rel[:-1]), color="C2")
        ax.axhline(0, color="k", linewidth=0.8)
        ax.set_xticks(x, labels, fontsize=7)
        ax.set_ylabel(f"{names[1]} vs {names[0]} (%)")
        ax.set_xlabel("area bin (pixels)")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def get_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", required=True, help="registered detectron2 panoptic dataset (ground truth)")
    ap.add_argument("--model", action="append", required=True, metavar="NAME=SOURCE",
                    help="NAME=PRED_JSON,PNG_DIR or NAME=CONFIG.py,WEIGHTS; once or twice (first = baseline)")
    ap.add_argument("--bins", type=float, nargs="+", default=None,
                    help="area bin edges in pixels (default: sqrt-area 0,16,32,64,96,128,256,inf)")
    ap.add_argument("--same-category", action="store_true", help="match only segments of the same category")
    ap.add_argument("--unmatched", choices=("zero", "max"), default="zero",
                    help="value of an unmatched GT instance: 0, or its best IoU with any prediction")
    ap.add_argument("--max-images", type=int, default=0, help="only the first N images (0 = all)")
    ap.add_argument("--output", default="output/analyze_sizes")
    ap.add_argument("--trust-pickle", action="store_true",
                    help="load .pkl weights (unpickling runs code stored in the file: only files you trust)")
    return with_opts(ap)  # --opts: overrides for the configs of --model


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    """The command line, with every ``key=value`` override (``--opts`` or positional) in ``opts``."""
    return parse_tool_args(get_parser(), argv)


def main(argv: Optional[List[str]] = None) -> dict:
    args = parse_args(argv)
    if not 1 <= len(args.model) <= 2:
        raise SystemExit(f"--model must be given once or twice, got {len(args.model)}")
    bins = tuple(args.bins) if args.bins else DEFAULT_AREA_BINS
    if args.dataset not in DatasetCatalog.list():
        raise SystemExit(f"--dataset {args.dataset!r} is not a registered dataset")
    gt_dicts = DatasetCatalog.get(args.dataset)
    if args.max_images > 0:
        gt_dicts = gt_dicts[: args.max_images]
    meta = MetadataCatalog.get(args.dataset)
    os.makedirs(args.output, exist_ok=True)
    names, stats = [], {}
    for spec in args.model:
        name, preds = resolve_model(spec, args.dataset, args.output, args.opts, args.trust_pickle)
        if name in stats:
            raise SystemExit(f"--model names must differ, got {name!r} twice")
        areas, ious, matched = collect_ious(gt_dicts, preds, meta, name, same_category=args.same_category,
                                            unmatched=args.unmatched)
        miou, count = binned_mean_iou(areas, ious, bins)
        mean_all = float(ious.mean()) if len(ious) else float("nan")
        stats[name] = {"miou": np.append(miou, mean_all), "count": np.append(count, len(ious)),
                       "matched": int(matched.sum())}
        names.append(name)
    rel = relative_improvement(stats[names[0]]["miou"], stats[names[1]]["miou"]) if len(names) == 2 else None
    labels = bin_labels(bins)
    png = plot(labels, names, stats, rel, os.path.join(args.output, "sizes.png"))
    summary = {
        "dataset": args.dataset,
        "num_images": len(gt_dicts),
        "bins": [None if math.isinf(b) else b for b in bins],
        "bin_labels": labels,
        "same_category": args.same_category,
        "unmatched": args.unmatched,
        "models": {n: {"miou": _nan_to_none(stats[n]["miou"][:-1]), "count": stats[n]["count"][:-1].tolist(),
                       "miou_all": _nan_to_none(stats[n]["miou"][-1:])[0], "num_gt": int(stats[n]["count"][-1]),
                       "num_matched": stats[n]["matched"]} for n in names},
        "relative_improvement": None if rel is None else _nan_to_none(rel[:-1]),
        "relative_improvement_all": None if rel is None else _nan_to_none(rel[-1:])[0],
        "plot": png,
    }
    with open(os.path.join(args.output, "sizes.json"), "w") as f:
        json.dump(summary, f, indent=2)
    print(format_table(labels, names, stats, rel))
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
