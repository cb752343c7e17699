#!/usr/bin/env python
"""Choose the post-processing default by measurement (docs/experiments.md "Post-processing: the default,
measured"): trained PQ of one checkpoint under every instance decoder, on several datasets.

    python tools/postprocess_study.py --config-file configs/synthetic/pe_vits.py \\
        --checkpoint output/demo/model_final.pth [--datasets synthetic_panoptic_val synthetic_panoptic_dense_val] \\
        [--output output/postprocess_study] [--opts key=value ...]

Overrides: ``--opts key=value ...``, or ``key=value`` tokens anywhere on the line, also right after
``--datasets`` (:mod:`pe_panoptic.engine.cli`).

Variants (:data:`VARIANTS`): ``nn`` with ``merge_radius`` 0 and 1 (the merge of candidates in
adjacent grid cells), ``vote`` and ``painter``, each with the instance head's void and the
config's grid and thresholds; one forward pass per batch scores all of them
(:mod:`pe_panoptic.evaluation.variants`). ``synthetic_panoptic_dense_val`` is the built-in dense
variant (touching small same-class things; ``datasets/prepare_synthetic.py --variant dense``,
generated here if missing). Writes ``<output>/results.json`` and prints one Markdown table.
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
from pe_panoptic.engine.predictor import load_model  # noqa: E402
from pe_panoptic.engine.trainer import jsonable  # noqa: E402
from pe_panoptic.evaluation.variants import evaluate_postprocess_variants, variant_name  # noqa: E402
from pe_panoptic.studies.tables import format_table  # noqa: E402

#: the decoders compared: PostProcessConfig field overrides
VARIANTS = (
    {"decoder": "nn", "merge_radius": 0},
    {"decoder": "nn", "merge_radius": 1},
    {"decoder": "vote"},
    {"decoder": "painter"},
)
COLUMNS = ("PQ", "PQ_th", "PQ_st", "SQ_th", "RQ_th")


def set_dataset(cfg, name: str) -> None:
    """Point the test loader, its mapper and the evaluator at dataset ``name``."""
    cfg.dataloader.test.dataset.names = name
    cfg.dataloader.test.mapper.panoptic.dataset_name = name
    cfg.dataloader.evaluator.dataset_name = name


def ensure_dataset(name: str) -> None:
    if name.startswith("synthetic_panoptic"):
        from pe_panoptic.data.synthetic import VARIANTS as DATA_VARIANTS, ensure_synthetic_panoptic

        for variant, (folder, _) in DATA_VARIANTS.items():
            if name in (f"{folder}_train", f"{folder}_val"):
                ensure_synthetic_panoptic(variant=variant)


def table(results: dict) -> str:
    rows = []
    for dataset, per in results.items():
        for name, res in per.items():
            pan = res.get("panoptic_seg", {})
            rows.append([dataset, name] + [None if pan.get(k) is None else float(pan[k]) for k in COLUMNS]
                        + [float(res["postprocess_ms_per_image"])])
    return format_table(["dataset", "decoder", *COLUMNS, "post ms/img"], rows, floatfmt=".1f")


def get_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config-file", required=True)
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--datasets", nargs="+", default=["synthetic_panoptic_val", "synthetic_panoptic_dense_val"])
    ap.add_argument("--output", default="output/postprocess_study")
    ap.add_argument("--trust-pickle", action="store_true", help=TRUST_PICKLE_HELP)
    return with_opts(ap)


def parse_args(argv=None) -> argparse.Namespace:
    """The command line, with every ``key=value`` override (``--opts`` or positional, also right after
    ``--datasets a b``) in ``opts``."""
    return parse_tool_args(get_parser(), argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    setup_logger(name="pe_panoptic")
    if not os.path.isfile(args.checkpoint):
        raise SystemExit(f"checkpoint not found: {args.checkpoint}")
    cfg, model = load_model(args.config_file, args.opts, args.checkpoint, None, args.trust_pickle)
    results = {}
    for dataset in args.datasets:
        ensure_dataset(dataset)
        set_dataset(cfg, dataset)
        loader = instantiate(cfg.dataloader.test)
        with tempfile.TemporaryDirectory() as tmp:
            def make_evaluator(name):
                cfg.dataloader.evaluator.output_dir = os.path.join(tmp, name.replace(",", "_").replace("=", "-"))
                return instantiate(cfg.dataloader.evaluator)

            res = evaluate_postprocess_variants(model, loader, make_evaluator, VARIANTS)
        results[dataset] = jsonable(res)
    os.makedirs(args.output, exist_ok=True)
    with open(os.path.join(args.output, "results.json"), "w") as f:
        json.dump({"checkpoint": args.checkpoint, "config": args.config_file, "opts": list(args.opts),
                   "variants": [variant_name(v) for v in VARIANTS], "results": results}, f, indent=2)
    logging.getLogger("pe_panoptic.postprocess_study").info(f"checkpoint {args.checkpoint}")
    print(table(results))
    return results


if __name__ == "__main__":
    main()
