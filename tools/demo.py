#!/usr/bin/env python
"""Run a pe_panoptic model on images, a folder, a dataset or a video and save pictures.

Per input image ``<name>`` (file stem; ``<stem>_<ext>`` when two inputs share a stem, e.g.
``same.jpg`` / ``same.png``), in ``--output``. Files are written atomically (temporary file, then
rename; a full disk names ENOSPC and leaves no partial PNG) and an existing output file is never
replaced without ``--overwrite`` (that image fails, naming the file). An ``--input`` that holds no
image is an error:

* ``<name>_panoptic.png``: the panoptic segmentation drawn on the image (detectron2 Visualizer);
* ``<name>_centroids.png``: the instance embedding decoded on the uv-grid (paper Fig. 8): each
  pixel coloured by the grid cell it decodes to (hue from u, brightness from v, void black),
  with the decoded centroid of every thing segment drawn as a dot;
* ``<name>_eds.png``: the Edge Distance Sampling weights (paper Eq. 5, Figs. 2 / 6) of the
  ground-truth instances when ground truth is available (``--dataset``, or ``--gt-json`` +
  ``--gt-root`` for a COCO panoptic JSON and PNG folder), else of the *predicted* instances (the
  caption says which). ``D`` / ``w_min`` are the config's training values (input pixels),
  converted to original-image pixels.

``--video-input`` writes ``<name>_panoptic.mp4`` with the panoptic overlay of every frame.

Images go through the config's test mapper transforms (resize, padding to a multiple of 14) and
the model from the LazyConfig (``--weights`` checkpoint; random init without, with a warning).
The device is CUDA when available (``--device`` to override). Progress bar over the inputs.

    python tools/demo.py --config-file configs/synthetic/pe_tiny.py --weights output/demo/model_final.pth \\
        --input 'images/*.jpg' some_folder/ --output output/vis
    python tools/demo.py --config-file ... --dataset synthetic_panoptic_val --max-inputs 4
    python tools/demo.py --config-file ... --video-input clip.mp4 --output output/vis

The last printed line is a JSON summary (files written, EDS source per image). An image that
cannot be processed (unreadable, corrupt, ground truth of another size, ...) does not stop the
run: the others are processed, the summary lists it under ``"failed"`` (file and error) and the
exit code is 1. Checkpoints are loaded strictly (:mod:`pe_panoptic.engine.checkpoint_io`; ``.pkl`` only
with ``--trust-pickle``) and ``--opts`` are checked against the config
(:mod:`pe_panoptic.engine.config_overrides`).
"""
from __future__ import annotations

import argparse
import glob
import json
import logging
import os
import sys
from typing import Dict, List, Optional, Tuple


import numpy as np  # noqa: E402
import torch  # noqa: E402

import pe_panoptic  # noqa: E402,F401
from pe_panoptic.studies.analysis import segments_with_isthing  # noqa: E402
from pe_panoptic.engine.checkpoint_io import TRUST_PICKLE_HELP  # noqa: E402
from pe_panoptic.engine.cli import parse_tool_args, with_opts  # noqa: E402
from pe_panoptic.engine.predictor import Predictor, load_model  # noqa: E402
from pe_panoptic.data.mapper import read_image_8bit, read_panoptic_ids  # noqa: E402
from pe_panoptic.postprocess import decode_cells, thing_pixel_mask  # noqa: E402
from pe_panoptic.studies.visualize import (  # noqa: E402
    add_caption,
    cells_to_image_xy,
    centroid_colors,
    draw_centroids,
    eds_map,
    panoptic_overlay,
    resize_labels,
    segment_centroid_cells,
    weights_to_rgb,
)

logger = logging.getLogger("pe_panoptic.demo")

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


# --------------------------------------------------------------------------------------------
# inputs
# --------------------------------------------------------------------------------------------
def expand_inputs(patterns: List[str]) -> List[str]:
    """Files, folders (their images, sorted) and glob patterns -> image paths (order kept)."""
    out: List[str] = []
    for p in patterns:
        if os.path.isdir(p):
            out += sorted(os.path.join(p, f) for f in os.listdir(p) if f.lower().endswith(IMAGE_EXTENSIONS))
        elif os.path.isfile(p):
            out.append(p)
        else:
            hits = sorted(glob.glob(os.path.expanduser(p)))
            if not hits:
                raise FileNotFoundError(f"--input {p!r}: no such file, folder or matching files")
            out += [h for h in hits if os.path.isfile(h)]
    return out


def coco_panoptic_gt(gt_json: str, gt_root: str) -> Dict[str, Tuple[str, List[dict]]]:
    """``{image stem: (png path, segments_info)}`` of a COCO panoptic JSON; segments get
    ``isthing`` and a contiguous ``category_id`` (index in the JSON's category list)."""
    with open(gt_json) as f:
        data = json.load(f)
    try:
        cats = {c["id"]: (i, bool(c.get("isthing", 0))) for i, c in enumerate(data["categories"])}
        anns = data["annotations"]
    except (KeyError, TypeError) as e:
        raise ValueError(f"--gt-json {gt_json}: not a COCO panoptic JSON (missing {e})") from None
    out = {}
    for a in anns:
        segs = []
        for s in a["segments_info"]:
            if s["category_id"] not in cats:
                raise ValueError(f"--gt-json {gt_json}: unknown category_id {s['category_id']} in {a['file_name']}")
            cid, thing = cats[s["category_id"]]
            segs.append(dict(s, category_id=cid, isthing=thing))
        out[os.path.splitext(os.path.basename(a["file_name"]))[0]] = (os.path.join(gt_root, a["file_name"]), segs)
    return out


def iter_inputs(args) -> List[dict]:
    """Work items ``{"name", "file_name", "gt": (panoptic PNG path, segments_info) or None}``."""
    items: List[dict] = []
    if args.dataset:
        from detectron2.data import DatasetCatalog, MetadataCatalog

        if args.dataset not in DatasetCatalog.list():
            raise SystemExit(f"--dataset {args.dataset!r} is not a registered dataset")
        meta = MetadataCatalog.get(args.dataset)
        for d in DatasetCatalog.get(args.dataset):
            gt = None
            if "pan_seg_file_name" in d:
                gt = (d["pan_seg_file_name"], segments_with_isthing(d["segments_info"], meta))
            items.append({"file_name": d["file_name"], "gt": gt})
    gt_index = coco_panoptic_gt(args.gt_json, args.gt_root) if args.gt_json else {}
    for f in expand_inputs(args.input or []):
        items.append({"file_name": f, "gt": gt_index.get(os.path.splitext(os.path.basename(f))[0])})
    if args.max_inputs > 0:
        items = items[: args.max_inputs]
    if not items and args.input:
        raise SystemExit(f"--input {' '.join(args.input)}: no image found (extensions {', '.join(IMAGE_EXTENSIONS)})")
    return name_outputs(items)


def name_outputs(items: List[dict]) -> List[dict]:
    """Give every item an output ``name`` unique in the run: the file stem, or ``stem_ext`` for
    every file whose stem another input shares (``same.jpg`` and ``same.png`` -> ``same_jpg`` and
    ``same_png``), then ``_2``, ``_3`` ... for inputs that still collide (same file name in
    different folders)."""
    stems = [os.path.splitext(os.path.basename(it["file_name"]))[0] for it in items]
    counts = {s: stems.count(s) for s in stems}
    used: set = set()
    for it, stem in zip(items, stems):
        ext = os.path.splitext(it["file_name"])[1].lstrip(".").lower()
        name = stem if counts[stem] == 1 else f"{stem}_{ext}" if ext else stem
        base, k = name, 2
        while name in used:
            name, k = f"{base}_{k}", k + 1
        used.add(name)
        it["name"] = name
    return items


# --------------------------------------------------------------------------------------------
# model
# --------------------------------------------------------------------------------------------
class DemoPredictor(Predictor):
    """:class:`pe_panoptic.engine.predictor.Predictor` (test mapper + model + its inference) that
    also keeps the instance embedding decoded on the uv-grid (``code``, at the original size)."""

    def __init__(self, cfg, model, device: str = "auto"):
        super().__init__(cfg, model, device)
        train_targets = cfg.dataloader.get("train", {}).get("mapper", {}).get("panoptic") or {}
        self.eds_D = float(train_targets.get("eds_D", 20.0))
        self.eds_w_min = float(train_targets.get("eds_w_min", 0.0))

    @torch.no_grad()
    def __call__(self, image: np.ndarray, image_format: str = "RGB") -> dict:
        m = self.model
        d, outputs, res = self.run(image, image_format)
        thing_pixels = None
        if m.postprocess_cfg.void_source == "semantic":  # decode exactly as the post-processing does
            thing_pixels = thing_pixel_mask(outputs["sem_logits"][0], m.thing_ids)
        code, _ = decode_cells(outputs["inst"][0].float(), m.encoding, m.postprocess_cfg.grid, thing_pixels)
        res["code"] = resize_labels(code, (d["height"], d["width"]))
        res["input_hw"] = d["input_hw"]
        res["resized_hw"] = d["image_size_unpadded"]
        return res


# --------------------------------------------------------------------------------------------
# pictures
# --------------------------------------------------------------------------------------------
def centroid_picture(res: dict, grid, image_hw) -> np.ndarray:
    colors = centroid_colors(res["code"], grid)
    seg, info = res["panoptic_seg"]
    ids, cells = segment_centroid_cells(seg, res["code"], info)
    xy = cells_to_image_xy(cells, grid, res["input_hw"], res["resized_hw"], image_hw)
    pic = draw_centroids(colors.cpu().numpy(), xy.cpu().numpy(), centroid_colors(cells, grid).cpu().numpy())
    return add_caption(pic, f"decoded centroids ({grid[0]}x{grid[1]} grid), {len(ids)} instances")


def eds_picture(res: dict, gt: Optional[Tuple[np.ndarray, List[dict]]], D: float, w_min: float):
    """EDS weights at the original size (of ``gt = (pan_ids, segments_info)`` when given, else of
    the prediction) and their source; ``D`` in original-image pixels."""
    if gt is not None:
        pan, segments = gt
        source = "ground truth"
    else:
        seg, segments = res["panoptic_seg"]
        pan = seg.cpu().numpy()
        source = "prediction (no ground truth)"
    w = eds_map(pan, segments, D, w_min)
    return add_caption(weights_to_rgb(w), f"EDS weights of the {source}, D={D:.1f}px"), source


def save_rgb(path: str, image: np.ndarray, overwrite: bool = False) -> str:
    """Write ``image`` as a PNG atomically (temporary file in the same folder, then rename): a
    full disk or a kill leaves no partial file. An existing ``path`` is refused unless
    ``overwrite``; ``OSError`` ENOSPC is reported naming the file."""
    import errno
    import tempfile

    from PIL import Image

    if os.path.exists(path) and not overwrite:
        raise FileExistsError(f"{path} exists; refusing to overwrite it (give --overwrite, or another --output)")
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=os.path.dirname(path) or ".")
    try:
        with os.fdopen(fd, "wb") as f:
            Image.fromarray(image).save(f, format="PNG")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        if os.path.exists(tmp):
            os.remove(tmp)
        if e.errno == errno.ENOSPC:
            raise OSError(errno.ENOSPC, f"no space left on the device while writing {path} (ENOSPC); "
                          "nothing was written for it") from e
        raise
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return path


def process_image(pred: DemoPredictor, item: dict, out_dir: str, overwrite: bool = False) -> dict:
    image = read_image_8bit(item["file_name"], "RGB")
    res = pred(image)
    seg, info = res["panoptic_seg"]
    H, W = image.shape[:2]
    grid = pred.model.postprocess_cfg.grid
    scale = res["resized_hw"][0] / H  # input pixels per original pixel
    files = {
        "panoptic": save_rgb(os.path.join(out_dir, f"{item['name']}_panoptic.png"),
                             panoptic_overlay(image, seg, info, pred.metadata), overwrite),
        "centroids": save_rgb(os.path.join(out_dir, f"{item['name']}_centroids.png"),
                              centroid_picture(res, grid, (H, W)), overwrite),
    }
    gt = None
    if item["gt"] is not None:
        gt = (read_panoptic_ids(item["gt"][0]), item["gt"][1])
        if gt[0].shape != (H, W):
            raise ValueError(f"ground truth {item['gt'][0]} does not have the size of {item['file_name']} ({W}x{H})")
    eds, source = eds_picture(res, gt, pred.eds_D / scale, pred.eds_w_min)
    files["eds"] = save_rgb(os.path.join(out_dir, f"{item['name']}_eds.png"), eds, overwrite)
    return {"name": item["name"], "files": files, "eds_source": source, "segments": len(info),
            "instances": sum(1 for s in info if s["isthing"])}


def process_video(pred: DemoPredictor, path: str, out_dir: str, max_frames: int = 0, overwrite: bool = False) -> dict:
    import cv2
    from tqdm import tqdm

    cap = cv2.VideoCapture(path)
    if not cap.isOpened():
        raise FileNotFoundError(f"--video-input {path!r}: cannot open video")
    fps = cap.get(cv2.CAP_PROP_FPS) or 25.0
    total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) or None
    name = os.path.splitext(os.path.basename(path))[0]
    out_path = os.path.join(out_dir, f"{name}_panoptic.mp4")
    if os.path.exists(out_path) and not overwrite:
        raise FileExistsError(f"{out_path} exists; refusing to overwrite it (give --overwrite, or another --output)")
    writer, n = None, 0
    try:
        with tqdm(total=max_frames or total, desc=f"video {name}", unit="frame") as bar:
            while not max_frames or n < max_frames:
                ok, frame = cap.read()
                if not ok:
                    break
                rgb = np.ascontiguousarray(frame[:, :, ::-1])
                seg, info = pred(rgb)["panoptic_seg"]
                vis = panoptic_overlay(rgb, seg, info, pred.metadata)
                if writer is None:
                    fourcc = cv2.VideoWriter_fourcc(*"mp4v")
                    writer = cv2.VideoWriter(out_path, fourcc, fps, (vis.shape[1], vis.shape[0]))
                writer.write(np.ascontiguousarray(vis[:, :, ::-1]))
                n += 1
                bar.update(1)
    finally:
        cap.release()
        if writer is not None:
            writer.release()
    if n == 0:
        raise ValueError(f"--video-input {path!r}: no frame could be read")
    return {"video": out_path, "frames": n, "fps": fps}


# --------------------------------------------------------------------------------------------
def get_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config-file", required=True, help="LazyConfig (.py) of the model")
    ap.add_argument("--weights", default="", help="checkpoint; random init (with a warning) if empty")
    ap.add_argument("--trust-pickle", action="store_true", help=TRUST_PICKLE_HELP)
    ap.add_argument("--input", nargs="+", help="image files, folders or glob patterns")
    ap.add_argument("--video-input", help="a video file (cv2); writes <name>_panoptic.mp4")
    ap.add_argument("--dataset", help="registered detectron2 panoptic dataset: its images, with ground truth")
    ap.add_argument("--gt-json", help="COCO panoptic JSON with ground truth for --input images (by file stem)")
    ap.add_argument("--gt-root", help="folder of the panoptic PNGs of --gt-json")
    ap.add_argument("--max-inputs", type=int, default=0, help="process at most N images / frames (0 = all)")
    ap.add_argument("--output", default="output/demo_vis", help="output folder")
    ap.add_argument("--overwrite", action="store_true",
                    help="replace output files that exist (default: such an image fails, naming the file)")
    ap.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda, cuda:1 ...")
    return with_opts(ap)


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    """The command line, with every ``key=value`` override (``--opts`` or positional) in ``opts``."""
    return parse_tool_args(get_parser(), argv)


def main(argv: Optional[List[str]] = None) -> dict:
    """Run the demo; returns the summary (also printed as the last line). Images that fail are
    listed in ``summary["failed"]`` instead of stopping the run."""
    from tqdm import tqdm

    args = parse_args(argv)
    if not (args.input or args.video_input or args.dataset):
        raise SystemExit("give --input, --video-input or --dataset")
    if bool(args.gt_json) != bool(args.gt_root):
        raise SystemExit("--gt-json and --gt-root go together")
    if not os.path.isfile(args.config_file):
        raise SystemExit(f"--config-file {args.config_file!r} not found")
    items = iter_inputs(args) if (args.input or args.dataset) else []  # fail fast on bad inputs
    cfg, model = load_model(args.config_file, args.opts, args.weights, args.device, args.trust_pickle,
                            missing_weights="ignore")
    if not args.weights:
        logger.warning("no --weights: the model is randomly initialized")
        print("[demo] warning: no --weights, the model is randomly initialized", file=sys.stderr)
    pred = DemoPredictor(cfg, model, args.device)
    device = pred.device
    os.makedirs(args.output, exist_ok=True)
    summary: dict = {"device": device, "images": [], "failed": []}
    for item in tqdm(items, desc="images", unit="img"):
        try:
            r = process_image(pred, item, args.output, args.overwrite)
        except Exception as e:  # noqa: BLE001  (one bad image must not stop the others)
            error = f"{type(e).__name__}: {e}"
            tqdm.write(f"[demo] FAILED {item['file_name']}: {error}")
            logger.debug("traceback of the failure", exc_info=True)
            summary["failed"].append({"name": item["name"], "file_name": item["file_name"], "error": error})
            continue
        if r["eds_source"].startswith("prediction"):
            tqdm.write(f"[demo] {item['name']}: no ground truth, EDS weights computed from the predicted instances")
        summary["images"].append(r)
    if args.video_input:
        summary["video"] = process_video(pred, args.video_input, args.output, args.max_inputs, args.overwrite)
    if summary["failed"]:
        print(f"[demo] {len(summary['failed'])} of {len(items)} images failed:\n"
              + "\n".join(f"  {f['file_name']}: {f['error']}" for f in summary["failed"]), file=sys.stderr)
    print(json.dumps(summary))
    return summary


def cli(argv: Optional[List[str]] = None) -> int:
    """Command-line entry: exit code 1 when any image failed, else 0."""
    return 1 if main(argv)["failed"] else 0


if __name__ == "__main__":
    sys.exit(cli())
