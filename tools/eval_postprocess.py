#!/usr/bin/env python
"""Compare post-processing variants of one trained checkpoint: trained PQ per decoder
(``nn``, ``vote``, ``painter``) and per ``void_source`` (``instance``, ``semantic``), all from a
single forward pass per batch (:mod:`pe_panoptic.evaluation.variants`).

    python tools/eval_postprocess.py --config-file configs/synthetic/pe_tiny.py \\
        --checkpoint output/demo/model_final.pth [--decoders nn vote] [--void-sources instance] \\
        [--opts key=value ...]

Overrides: ``--opts key=value ...`` (positional ``key=value`` tokens anywhere on the line are the same
overrides, even right after ``--decoders`` / ``--void-sources``; :mod:`pe_panoptic.engine.cli`).

Prints a table (PQ / PQ_th / PQ_st / SQ / RQ / mIoU / post-processing ms per image) and, as its
last line, the results as JSON. ``tools/oracle_pq.py`` gives the same comparison for perfect
predictions. The checkpoint is loaded strictly (:mod:`pe_panoptic.engine.checkpoint_io`; ``.pkl`` only
with ``--trust-pickle``) and the overrides are checked against the config
(:mod:`pe_panoptic.engine.config_overrides`).
"""
import argparse
import json
import logging
import os
import tempfile


import pe_panoptic  # noqa: E402,F401  (registers everything)
from detectron2.config import instantiate  # noqa: E402
from detectron2.utils.logger import setup_logger  # noqa: E402
from pe_panoptic.engine.checkpoint_io import TRUST_PICKLE_HELP  # noqa: E402
from pe_panoptic.engine.cli import parse_tool_args, with_opts  # noqa: E402
from pe_panoptic.engine.config_overrides import load_config  # noqa: E402
from pe_panoptic.engine.predictor import load_model  # noqa: E402
from pe_panoptic.engine.trainer import jsonable  # noqa: E402
from pe_panoptic.evaluation.build import check_evaluator_dataset  # noqa: E402
from pe_panoptic.evaluation.variants import evaluate_postprocess_variants, variant_grid  # noqa: E402
from pe_panoptic.postprocess import DECODERS, VOID_SOURCES  # noqa: E402
from pe_panoptic.studies.tables import format_table  # noqa: E402

KEYS = (("panoptic_seg", "PQ"), ("panoptic_seg", "PQ_th"), ("panoptic_seg", "PQ_st"), ("panoptic_seg", "SQ"),
        ("panoptic_seg", "RQ"), ("sem_seg", "mIoU"))


def table(results: dict) -> str:
    rows = [[name] + [_float(res.get(group, {}).get(key)) for group, key in KEYS]
            + [float(res["postprocess_ms_per_image"])] for name, res in results.items()]
    return format_table(["variant", *(k for _, k in KEYS), "post ms/img"], rows, floatfmt=".1f")


def _float(v):
    return None if v is None else float(v)


def get_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config-file", required=True)
    ap.add_argument("--checkpoint", default=None, help="weights to evaluate (default: train.init_checkpoint)")
    ap.add_argument("--decoders", nargs="+", default=list(DECODERS), choices=DECODERS)
    ap.add_argument("--void-sources", nargs="+", default=list(VOID_SOURCES), choices=VOID_SOURCES)
    ap.add_argument("--output-dir", default=None, help="evaluator outputs, one folder per variant (default: a temp dir)")
    ap.add_argument("--metrics-json", default="", help="also write the results to this JSON file")
    ap.add_argument("--trust-pickle", action="store_true", help=TRUST_PICKLE_HELP)
    return with_opts(ap)


def parse_args(argv=None) -> argparse.Namespace:
    """The command line, with every ``key=value`` override (``--opts`` or positional) in ``opts``."""
    return parse_tool_args(get_parser(), argv)


def main(argv=None):
    args = parse_args(argv)
    setup_logger(name="pe_panoptic")
    logger = logging.getLogger("pe_panoptic.eval_postprocess")

    cfg = load_config(args.config_file, args.opts)
    checkpoint = args.checkpoint or cfg.train.get("init_checkpoint", "")
    if not checkpoint:
        raise SystemExit("give --checkpoint (or train.init_checkpoint=...): evaluating random weights is meaningless")
    if not os.path.isfile(checkpoint):
        raise SystemExit(f"checkpoint not found: {checkpoint}")
    check_evaluator_dataset(cfg)
    cfg, model = load_model(args.config_file, args.opts, checkpoint, None, args.trust_pickle)
    loader = instantiate(cfg.dataloader.test)

    with tempfile.TemporaryDirectory() as tmp:
        root = args.output_dir or tmp

        def make_evaluator(name):
            ev_cfg = cfg.dataloader.evaluator
            ev_cfg.output_dir = os.path.join(root, name.replace(",", "_").replace("=", "-"))
            return instantiate(ev_cfg)

        results = evaluate_postprocess_variants(model, loader, make_evaluator,
                                                variant_grid(args.decoders, args.void_sources))
    results = jsonable(results)
    logger.info(f"checkpoint {checkpoint}")
    print(table(results))
    if args.metrics_json:
        os.makedirs(os.path.dirname(os.path.abspath(args.metrics_json)), exist_ok=True)
        with open(args.metrics_json, "w") as f:
            json.dump(results, f, indent=2)
    print(json.dumps(results))
    return results


if __name__ == "__main__":
    main()
