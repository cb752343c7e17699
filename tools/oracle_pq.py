#!/usr/bin/env python
"""Oracle PQ: the ceiling that the instance encoding + post-processing alone allow.

For every image of a registered detectron2 panoptic dataset, perfect network outputs are built
from the ground truth at the model's output resolution, exactly as the model would see it:

* the image goes through :class:`pe_panoptic.data.mapper.PanopticCentroidDatasetMapper` in test
  mode (longer side resized to ``--input-size``, padded to a multiple of 14) and the targets of
  :func:`pe_panoptic.data.targets.panoptic_targets` at ``round(input / output_stride)``;
* instance output = ``encoding.targets(inst_uv, inst_valid)`` (bins: the one-hot targets times a
  large logit so that the softmax is confident); semantic output = one-hot logits of
  ``sem_seg`` (ignore pixels get an all-zero row);
* the region of the output that covers the unpadded image is decoded with
  :func:`pe_panoptic.postprocess.panoptic_from_outputs` and pasted at the original image size
  with :func:`pe_panoptic.postprocess.resize_panoptic` (pixel-center nearest; ``--paste-mode
  nearest`` reproduces torch's legacy nearest), as ``PEPanoptic.inference`` does with
  ``decode_at="output"``;
* detectron2's ``COCOPanopticEvaluator`` scores the result (``process(inputs, outputs)`` with
  ``{"panoptic_seg": (seg, segments_info)}``).

PQ < 100 measures what the representation loses: segments too small to survive downsampling
to the output resolution, instances whose centroids share a grid cell (or neighbouring cells,
``merge_radius``), and the area thresholds of the post-processing.

    python tools/oracle_pq.py --dataset coco_2017_val_panoptic --input-size 1008 --grid 80 80
    python tools/oracle_pq.py --dataset cityscapes_fine_panoptic_val --input-size 1568 --grid 160 320

The last printed line is a JSON object with PQ, SQ, RQ (all / things / stuff), diagnostics and
the settings.
"""
from __future__ import annotations

import argparse
import ast
import copy
import json
import logging
import os
import tempfile
import time
from fractions import Fraction
from types import SimpleNamespace
from typing import Dict, List, Optional, Sequence, Tuple


import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import pe_panoptic  # noqa: E402,F401  (registers the project's datasets)
from detectron2.data import DatasetCatalog, MetadataCatalog  # noqa: E402
from detectron2.evaluation import COCOPanopticEvaluator  # noqa: E402
from pe_panoptic.data.mapper import PanopticCentroidDatasetMapper, PanopticTargets, build_test_augmentations  # noqa: E402
from pe_panoptic.encoding import CentroidEncoding, build_encoding  # noqa: E402
from pe_panoptic.postprocess import PostProcessConfig, panoptic_from_outputs, resize_panoptic  # noqa: E402

logger = logging.getLogger("pe_panoptic.oracle_pq")

#: logit of the true class (semantic) and of the true bins (bins encoding) in the perfect outputs
ORACLE_LOGIT = 20.0


def default_settings(dataset: str) -> Dict:
    """Paper settings (Sec. 5): COCO 1008 px input, 80 x 80 grid; Cityscapes 784 x 1568 input
    (longer side 1568), 160 x 320 grid."""
    if "cityscapes" in dataset:
        return {"input_size": 1568, "grid": (160, 320)}
    return {"input_size": 1008, "grid": (80, 80)}


def oracle_outputs(
    targets: Dict[str, torch.Tensor], encoding: CentroidEncoding, num_classes: int, ignore_label: int = 255
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Perfect per-pixel outputs ``(sem_logits [N, h, w], inst [C, h, w])`` from the targets of
    :func:`pe_panoptic.data.targets.panoptic_targets`."""
    sem = targets["sem_seg"]
    ignore = sem == ignore_label
    if ((sem < 0) | ((sem >= num_classes) & ~ignore)).any():
        bad = sorted(set(sem[(sem >= num_classes) & ~ignore].tolist()))
        raise ValueError(f"sem_seg has class ids {bad} outside [0, {num_classes})")
    logits = F.one_hot(sem.masked_fill(ignore, 0), num_classes).permute(2, 0, 1).float() * ORACLE_LOGIT
    logits[:, ignore] = 0.0
    inst = encoding.targets(targets["inst_uv"][None].float(), targets["inst_valid"][None])[0]
    if encoding.code_is_logits:
        inst = inst * ORACLE_LOGIT
    return logits, inst


def output_crop(unpadded_hw, padded_hw, output_hw) -> Tuple[int, int]:
    """Output region covering the unpadded image (same rounding as ``PEPanoptic.inference``)."""
    return tuple(max(1, int(round(u * o / p))) for u, p, o in zip(unpadded_hw, padded_hw, output_hw))


def decode_image(mapped: Dict, encoding: CentroidEncoding, num_classes: int, thing_ids, cfg: PostProcessConfig,
                 ignore_label: int = 255, paste_mode: str = "nearest-exact"):
    """Oracle panoptic prediction of one mapped sample at its original image size."""
    targets = mapped["targets"]
    logits, inst = oracle_outputs(targets, encoding, num_classes, ignore_label)
    ch, cw = output_crop(mapped["image_size_unpadded"], mapped["image"].shape[-2:], logits.shape[-2:])
    seg, info = panoptic_from_outputs(logits[:, :ch, :cw], inst[:, :ch, :cw], encoding, thing_ids, cfg)
    return resize_panoptic(seg, info, (mapped["height"], mapped["width"]), mode=paste_mode)


class SubsetPanopticEvaluator(COCOPanopticEvaluator):
    """``COCOPanopticEvaluator`` against a GT json restricted to the processed images
    (panopticapi's ``pq_compute`` demands a prediction for every image of the GT json)."""

    def __init__(self, dataset_name: str, output_dir: Optional[str], image_ids: Sequence, tmp_dir: str):
        super().__init__(dataset_name, output_dir)
        with open(self._metadata.panoptic_json) as f:
            gt = json.load(f)
        keep = {str(i) for i in image_ids}
        gt["annotations"] = [a for a in gt["annotations"] if str(a["image_id"]) in keep]
        gt["images"] = [im for im in gt["images"] if str(im["id"]) in keep]
        missing = keep - {str(a["image_id"]) for a in gt["annotations"]}
        if missing:
            raise ValueError(f"{self._metadata.panoptic_json}: no GT annotation for image ids {sorted(missing)}")
        gt_json = os.path.join(tmp_dir, "panoptic_gt_subset.json")
        with open(gt_json, "w") as f:
            json.dump(gt, f)
        self._metadata = SimpleNamespace(
            panoptic_json=gt_json,
            panoptic_root=self._metadata.panoptic_root,
            label_divisor=getattr(self._metadata, "label_divisor", 1000),
            thing_dataset_id_to_contiguous_id=self._metadata.thing_dataset_id_to_contiguous_id,
            stuff_dataset_id_to_contiguous_id=self._metadata.stuff_dataset_id_to_contiguous_id,
        )


def parse_stride(text: str) -> float:
    try:
        v = float(Fraction(text))
    except (ValueError, ZeroDivisionError):
        raise argparse.ArgumentTypeError(f"--output-stride must be a number or a fraction like 14/8, got {text!r}")
    if v <= 0:
        raise argparse.ArgumentTypeError(f"--output-stride must be > 0, got {text!r}")
    return v


def parse_overrides(items: Sequence[str]) -> Dict:
    """``["min_stuff_area=0", "decoder='vote'"]`` -> PostProcessConfig keyword overrides."""
    fields = {f.name for f in PostProcessConfig.__dataclass_fields__.values()}
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or key not in fields:
            raise ValueError(f"--set {item!r}: expected KEY=VALUE with KEY one of {sorted(fields)}")
        try:
            out[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            out[key] = value
    return out


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--dataset", default="coco_2017_val_panoptic", help="registered detectron2 panoptic dataset")
    p.add_argument("--grid", type=int, nargs=2, metavar=("GH", "GW"), default=None,
                   help="decoding grid (default: 80 80 for COCO, 160 320 for Cityscapes)")
    p.add_argument("--input-size", type=int, default=None,
                   help="longer side of the network input (default: 1008 COCO, 1568 Cityscapes)")
    p.add_argument("--output-stride", type=parse_stride, default=14 / 8, help="input / output size (default 14/8)")
    p.add_argument("--encoding", choices=("pe", "rgb", "bins"), default="pe")
    p.add_argument("--num-harmonics", type=int, default=4, help="L of the PE encoding")
    p.add_argument("--num-bins", type=int, default=None, help="bins encoding: bins per axis (default: grid width)")
    p.add_argument("--decoder", choices=("nn", "vote", "painter"), default="nn")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a PostProcessConfig field, e.g. --set min_stuff_area=0 (repeatable)")
    p.add_argument("--paste-mode", choices=("nearest-exact", "nearest"), default="nearest-exact",
                   help="interpolation of the panoptic map to the image size (torch's legacy 'nearest' "
                   "is half an output pixel off the targets' pixel-center sampling)")
    p.add_argument("--max-images", type=int, default=None, help="only the first N images of the dataset")
    p.add_argument("--output-dir", default=None, help="where the evaluator writes predictions.json")
    return p


def run_oracle(args: argparse.Namespace) -> Dict:
    defaults = default_settings(args.dataset)
    grid = tuple(args.grid) if args.grid else defaults["grid"]
    input_size = defaults["input_size"] if args.input_size is None else args.input_size
    if input_size < 14:
        raise ValueError(f"--input-size must be >= 14 (one 14-pixel ViT patch; the input is padded to a multiple "
                         f"of 14), got {input_size}")
    if args.max_images is not None and args.max_images < 1:
        raise ValueError(f"--max-images must be >= 1, got {args.max_images}")
    if args.dataset not in DatasetCatalog.list():
        raise ValueError(f"--dataset {args.dataset!r} is not registered (is DETECTRON2_DATASETS set?)")
    meta = MetadataCatalog.get(args.dataset)
    for key in ("panoptic_json", "panoptic_root", "thing_dataset_id_to_contiguous_id", "stuff_classes"):
        if not hasattr(meta, key):
            raise ValueError(f"dataset {args.dataset!r} metadata has no {key!r}: not a panoptic dataset")
    num_classes = len(meta.stuff_classes)
    thing_ids = sorted(set(meta.thing_dataset_id_to_contiguous_id.values()))
    ignore_label = int(getattr(meta, "ignore_label", 255))

    num_bins = grid[1] if args.num_bins is None else args.num_bins
    encoding = build_encoding(args.encoding, num_harmonics=args.num_harmonics, num_bins=num_bins)
    cfg = PostProcessConfig(**{"decoder": args.decoder, "grid": grid, **parse_overrides(args.overrides)})
    mapper = PanopticCentroidDatasetMapper(
        False, augmentations=build_test_augmentations(input_size), output_stride=args.output_stride,
        panoptic=PanopticTargets(dataset_name=args.dataset, ignore_label=ignore_label, use_eds=False),
        with_targets=True,
    )

    dicts = DatasetCatalog.get(args.dataset)
    if args.max_images is not None:
        dicts = dicts[: args.max_images]
    stats = {"gt_instances": 0, "gt_instances_at_output": 0, "pred_instances": 0, "gt_segments": 0,
             "gt_segments_at_output": 0}
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="oracle_pq") as tmp:
        if len(dicts) < len(DatasetCatalog.get(args.dataset)):
            evaluator = SubsetPanopticEvaluator(args.dataset, args.output_dir, [d["image_id"] for d in dicts], tmp)
        else:
            evaluator = COCOPanopticEvaluator(args.dataset, args.output_dir)
        evaluator.reset()
        out_hw = None
        for d in dicts:
            mapped = mapper(copy.deepcopy(d))
            seg, info = decode_image(mapped, encoding, num_classes, thing_ids, cfg, ignore_label, args.paste_mode)
            out_hw = tuple(mapped["targets"]["sem_seg"].shape)
            # the evaluator pops "isthing" from the dicts it gets: hand it copies
            evaluator.process([mapped], [{"panoptic_seg": (seg, [dict(s) for s in info])}])
            segs = [s for s in d["segments_info"] if not s.get("iscrowd", 0)]
            things = [s for s in segs if s.get("isthing", s["category_id"] in thing_ids)]
            stats["gt_segments"] += len(segs)
            stats["gt_instances"] += len(things)
            stats["gt_instances_at_output"] += int(mapped["targets"]["inst_ids"].max())
            stats["pred_instances"] += sum(s["isthing"] for s in info)
            stats["gt_segments_at_output"] += _segments_at_output(mapped, [s for s in segs if s not in things])
        decode_s = time.perf_counter() - t0
        res = evaluator.evaluate()["panoptic_seg"]
    result = {k: float(v) for k, v in res.items()}
    result.update(stats)
    result.update({
        "dataset": args.dataset, "num_images": len(dicts), "encoding": args.encoding,
        "num_harmonics": args.num_harmonics if args.encoding == "pe" else None,
        "decoder": args.decoder, "grid": list(grid), "input_size": input_size,
        "output_stride": args.output_stride, "paste_mode": args.paste_mode,
        "last_output_hw": list(out_hw) if out_hw else None,
        "postprocess": {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(cfg).items()},
        "seconds_per_image": decode_s / max(1, len(dicts)),
    })
    return result


def _segments_at_output(mapped: Dict, stuff_segs: List[Dict]) -> int:
    """GT (non-crowd) segments that still own >= 1 pixel at the output resolution, counted via
    the targets: instances by ``inst_ids``, stuff segments by their class's presence."""
    t = mapped["targets"]
    n_inst = int(t["inst_ids"].max())
    stuff_cls = {s["category_id"] for s in stuff_segs}
    present = set(t["sem_seg"][t["inst_ids"] == 0].unique().tolist())
    return n_inst + len(stuff_cls & present)


def main(argv: Optional[Sequence[str]] = None) -> Dict:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    result = run_oracle(args)
    print(json.dumps(result, sort_keys=True))
    return result


if __name__ == "__main__":
    main()
