#!/usr/bin/env python
"""Export a pe_panoptic model (LazyConfig + weights) to TorchScript and ONNX.

The exported graph is the network (DINOv2 encoder, decoder, heads): input ``image [B, 3, H, W]``
float32, normalized RGB, zero-padded to multiples of 14; outputs ``sem_logits``, ``inst`` (and
``depth``) at 8/14 of the input. Post-processing stays a torch function
(:func:`pe_panoptic.export.exporter.postprocess`; :class:`pe_panoptic.export.exporter.OnnxPanopticPredictor` runs
ONNX + post-processing on an image). See :mod:`pe_panoptic.export.exporter` for why the panoptic decoding
is not inside the graph and for the ONNX details (legacy exporter, opset 18).

    python tools/export.py --config-file configs/synthetic/pe_tiny.py --weights output/demo/model_final.pth \\
        --output output/export --height 168 --width 168            # dynamic H/W (default)
    python tools/export.py ... --no-dynamic                          # fixed 1 x 3 x 168 x 168

Writes ``<output>/model.onnx``, ``<output>/model.ts`` (TorchScript) and
``<output>/model.export.json`` (normalization, encoding, thing ids, post-processing config).
``--check`` runs the exports (onnxruntime on the CPU, TorchScript) against eager PyTorch at the
export size and, when dynamic, at a second size, and reports the largest absolute differences.
The last printed line is a JSON summary. ``--weights`` are loaded strictly
(:mod:`pe_panoptic.engine.checkpoint_io`; ``.pkl`` only with ``--trust-pickle``) and ``--opts`` are checked
against the config (:mod:`pe_panoptic.engine.config_overrides`).
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import os
from typing import Dict, List, Optional, Tuple


import torch  # noqa: E402

import pe_panoptic  # noqa: E402,F401
from pe_panoptic.engine.checkpoint_io import TRUST_PICKLE_HELP  # noqa: E402
from pe_panoptic.engine.cli import parse_tool_args, with_opts  # noqa: E402
from pe_panoptic.engine import predictor  # noqa: E402
from pe_panoptic.engine.device import resolve_device  # noqa: E402
from pe_panoptic.export.exporter import (  # noqa: E402
    ONNX_OPSET,
    ExportableNetwork,
    export_metadata,
    export_onnx,
    export_torchscript,
)

logger = logging.getLogger("pe_panoptic.export.exporter")


def load_model(config_file: str, weights: Optional[str], opts: List[str], device: str, trust_pickle: bool = False):
    """Model of a LazyConfig in eval mode, with weights loaded strictly (random init without)."""
    if not os.path.isfile(config_file):
        raise FileNotFoundError(f"--config-file {config_file!r} not found")
    if not weights:
        logger.warning("no --weights: exporting a randomly initialized model")
    return predictor.load_model(config_file, opts, weights, device, trust_pickle, missing_weights="ignore")


def config_test_size(cfg) -> Optional[int]:
    """Longest side of the config's test resize (``build_test_augmentations(size)``), if any."""
    try:
        aug = cfg.dataloader.test.mapper.augmentations
        target = aug.get("_target_")
        name = target if isinstance(target, str) else getattr(target, "__name__", "")
        if name.endswith("build_test_augmentations"):
            return int(aug["size"])
    except Exception:  # noqa: BLE001  (configs without a test loader / other augmentations)
        pass
    return None


def config_dataset_name(cfg) -> Optional[str]:
    try:
        names = cfg.dataloader.test.dataset.names
        return names if isinstance(names, str) else list(names)[0]
    except Exception:  # noqa: BLE001
        return cfg.model.get("dataset_name")


def _max_diff(ref, out) -> float:
    return max(float((torch.as_tensor(o).to(r.device).float() - r.float()).abs().max()) for r, o in zip(ref, out))


def check_exports(model, paths: Dict[str, str], sizes: List[Tuple[int, int]]) -> Dict[str, Dict[str, float]]:
    """Largest |export - eager| over all outputs, per format and size (batch of 1)."""
    net = ExportableNetwork(model).eval()
    dev = next(net.parameters()).device
    result: Dict[str, Dict[str, float]] = {k: {} for k in paths}
    sessions = {}
    if "onnx" in paths:
        import onnxruntime as ort

        sessions["onnx"] = ort.InferenceSession(paths["onnx"], providers=["CPUExecutionProvider"])
    if "torchscript" in paths:
        sessions["torchscript"] = torch.jit.load(paths["torchscript"], map_location=dev)
    g = torch.Generator().manual_seed(1)
    for h, w in sizes:
        x = torch.randn(1, 3, h, w, generator=g)
        with torch.no_grad():
            ref = net(x.to(dev))
            for fmt, sess in sessions.items():
                out = sess.run(None, {"image": x.numpy()}) if fmt == "onnx" else sess(x.to(dev))
                result[fmt][f"{h}x{w}"] = _max_diff(ref, out)
    return result


def get_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config-file", required=True, help="LazyConfig (.py) of the model")
    ap.add_argument("--weights", default="", help="checkpoint (detectron2 .pth); random init if empty")
    ap.add_argument("--trust-pickle", action="store_true", help=TRUST_PICKLE_HELP)
    ap.add_argument("--output", default="output/export", help="output folder")
    ap.add_argument("--formats", nargs="+", choices=("onnx", "torchscript"), default=["onnx", "torchscript"])
    ap.add_argument("--height", type=int, default=0, help="example / fixed input height (multiple of 14); "
                    "default: the config's test size rounded up to a multiple of 14")
    ap.add_argument("--width", type=int, default=0, help="example / fixed input width (multiple of 14)")
    ap.add_argument("--dynamic", action=argparse.BooleanOptionalAction, default=True,
                    help="dynamic batch / H / W (default) or a fixed 1 x 3 x H x W graph")
    ap.add_argument("--opset", type=int, default=ONNX_OPSET)
    ap.add_argument("--dynamo", action="store_true", help="torch's dynamo ONNX exporter (needs onnxscript)")
    ap.add_argument("--device", default="cpu", help="device to trace on (cpu, cuda, auto)")
    ap.add_argument("--check", action="store_true", help="compare the exports with eager PyTorch")
    return with_opts(ap)


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    """The command line, with every ``key=value`` override (``--opts`` or positional) in ``opts``."""
    return parse_tool_args(get_parser(), argv)


def main(argv: Optional[List[str]] = None) -> dict:
    args = parse_args(argv)
    device = resolve_device(args.device)
    cfg, model = load_model(args.config_file, args.weights or None, args.opts, device, args.trust_pickle)
    p = int(model.size_divisibility)
    resize = config_test_size(cfg)
    default = int(math.ceil((resize or 518) / p) * p)
    h, w = args.height or default, args.width or default
    if h % p or w % p:
        raise SystemExit(f"--height {h} / --width {w} must be multiples of {p}")
    os.makedirs(args.output, exist_ok=True)
    paths: Dict[str, str] = {}
    if "onnx" in args.formats:
        paths["onnx"] = export_onnx(model, os.path.join(args.output, "model.onnx"), h, w, dynamic=args.dynamic,
                                    opset=args.opset, dynamo=args.dynamo)
    if "torchscript" in args.formats:
        ts_path = os.path.join(args.output, "model.ts")
        export_torchscript(model, ts_path, h, w, dynamic=args.dynamic)
        paths["torchscript"] = ts_path
    meta = export_metadata(model, height=h, width=w, dynamic=args.dynamic, resize=resize,
                           metadata_name=config_dataset_name(cfg))
    meta["exporter"] = {"onnx": "dynamo" if args.dynamo else "legacy (torchscript-based)", "opset": args.opset,
                        "torchscript": "torch.jit.trace"}
    meta_path = os.path.join(args.output, "model.export.json")
    with open(meta_path, "w") as f:
        json.dump(meta, f, indent=2)
    summary = {"files": dict(paths, meta=meta_path), "input_hw": [h, w], "dynamic": args.dynamic,
               "opset": args.opset, "exporter": meta["exporter"]["onnx"], "outputs": meta["outputs"]}
    if args.check:
        sizes = [(h, w)] + ([(h + p, w + 2 * p)] if args.dynamic else [])
        summary["max_abs_diff"] = check_exports(model, paths, sizes)
        for fmt, diffs in summary["max_abs_diff"].items():
            print(f"{fmt}: max |export - eager| " + ", ".join(f"{k}: {v:.2e}" for k, v in diffs.items()))
    for fmt, path in paths.items():
        print(f"wrote {fmt}: {path}")
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
