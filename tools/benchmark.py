#!/usr/bin/env python
"""Benchmarks of pe_panoptic as ratios measured within one run.

Subcommands (each prints a table and, as its LAST line, a JSON object with the figures):

``model``
    Forward time per image and images/s of a model (``--config-file`` LazyConfig or
    ``--backbone`` DINOv2 name: the paper's architecture) at ``--size``, ``--batch``, ``--dtype``
    on ``--device``; GMACs (fvcore: one multiply-add = one "flop") and GFLOPs (2 x MACs);
    achieved FLOP/s against the peak matmul FLOP/s (``2 n^3 / t``, same dtype and device)
    measured interleaved with the forward: ``flops_utilization`` (0..1), ``images_per_s``.
``postprocess``
    Time per image of the post-processing decoders (:func:`pe_panoptic.postprocess.panoptic_from_outputs`)
    on realistic outputs (synthetic panoptic scenes at ``--size``, perfect outputs + noise at the
    output resolution, ``--grid``) against the naive reference (full ``gh * gw``-way
    nearest-neighbour search, Painter-style per-colour thresholding into dense masks, Matrix
    NMS; :func:`pe_panoptic.studies.benchmark.naive_panoptic`) and against the forward of a DINOv2 ViT-S
    model at ``--forward-size``: ``speedup_vs_naive`` and ``fraction_of_forward``.
``data``
    Images/s of ONE worker (1 thread) running the training mapper (decode, augment, semantic,
    PE and EDS targets) at each of ``--sizes``: ``images_per_s_per_worker``.
``train``
    Images/s and peak memory of training steps (:class:`pe_panoptic.engine.trainer.PETrainer`,
    autocast in ``--dtype``) on synthetic inputs: ``images_per_s``, ``peak_mem_gb``.

Examples (the figures of the note)::

    python tools/benchmark.py model --backbone vit_base_patch14_dinov2 --size 420 --dtype fp32
    python tools/benchmark.py postprocess --size 420 --grid 80 80
    python tools/benchmark.py data --sizes 420 1008
    python tools/benchmark.py train --backbone vit_large_patch14_dinov2 --size 616 --batch 8 --dtype bf16
    python tools/benchmark.py train --config-file configs/coco/vitl_stage3.py --batch 4 --dtype bf16

Config overrides (``model`` and ``train``; ``pipeline`` applies them to every entry): ``--opts
KEY=VALUE ...``, or ``KEY=VALUE`` tokens anywhere on the line (:mod:`pe_panoptic.engine.cli`).

CPU timings on a shared machine: ``--threads 1`` gives the most stable ratios (with several
threads, a descheduled OpenMP thread stalls every parallel op).
"""
from __future__ import annotations

import argparse
import logging

import pe_panoptic  # noqa: E402,F401  (registers datasets and the meta-architecture)
from pe_panoptic.engine.cli import add_opts_argument, parse_entry_opts, parse_tool_args, with_opts  # noqa: E402
from pe_panoptic.studies import benchmark as B  # noqa: E402
from pe_panoptic.studies.benchmark.run_data import run_data  # noqa: E402
from pe_panoptic.studies.benchmark.run_model import run_model  # noqa: E402
from pe_panoptic.studies.benchmark.run_pipeline import run_pipeline  # noqa: E402
from pe_panoptic.studies.benchmark.run_postprocess import run_postprocess, run_postprocess_memory  # noqa: E402
from pe_panoptic.studies.benchmark.run_train import run_train  # noqa: E402

# ------------------------------------------------------------------------------------------------
# CLI (each subcommand runs in pe_panoptic/studies/benchmark/run_<subcommand>.py)
# ------------------------------------------------------------------------------------------------


def _add_model_args(p: argparse.ArgumentParser, prefix: str = "", default_backbone: str = "vit_base_patch14_dinov2"):
    dash = f"--{prefix}"
    p.add_argument(f"{dash}config-file", default=None, help="LazyConfig with a `model` node (else --backbone)")
    p.add_argument(f"{dash}backbone", default=default_backbone, help="DINOv2 model name (timm), without a config")
    p.add_argument(f"{dash}model-kwargs", default=None,
                   help='JSON timm overrides of the backbone, e.g. \'{"depth": 2, "embed_dim": 48, "num_heads": 2}\'')


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    sub = p.add_subparsers(dest="cmd", required=True)

    def common(sp):
        sp.add_argument("--decoder-width", type=int, default=256)
        sp.add_argument("--num-classes", type=int, default=133)
        sp.add_argument("--num-things", type=int, default=80)
        sp.add_argument("--depth", action="store_true", help="add the depth head (without a config)")
        sp.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda, cuda:1")
        sp.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
        sp.add_argument("--seed", type=int, default=0)

    m = sub.add_parser("model", help="forward images/s and FLOP/s utilization")
    _add_model_args(m)
    common(m)
    m.add_argument("--size", type=int, default=420)
    m.add_argument("--batch", type=int, default=1)
    m.add_argument("--dtype", default="fp32", choices=sorted(B.DTYPES))
    m.add_argument("--iters", type=int, default=10, help="interleaved timing rounds")
    m.add_argument("--warmup", type=int, default=2)
    m.add_argument("--matmul-size", type=int, default=None, help="n of the n x n matmul peak (8192 cuda, 2048 cpu)")
    m.add_argument("--matmul-repeats", type=int, default=1)
    add_opts_argument(m)

    pp = sub.add_parser("postprocess", help="post-processing vs naive reference and vs the forward")
    _add_model_args(pp, "forward-", "vit_small_patch14_dinov2")
    common(pp)
    pp.add_argument("--size", type=int, default=420, help="network input size of the scenes")
    pp.add_argument("--output-size", type=int, default=None, help="default: round(size * 8 / 14) = 240")
    pp.add_argument("--forward-size", type=int, default=None, help="input size of the forward (default --size)")
    pp.add_argument("--no-forward", action="store_true", help="skip the forward (no fraction_of_forward)")
    pp.add_argument("--grid", type=int, nargs=2, default=(80, 80), metavar=("GH", "GW"))
    pp.add_argument("--decoders", nargs="+", default=["nn", "vote", "painter"])
    pp.add_argument("--decoder", default="nn", help="decoder of the headline figures")
    pp.add_argument("--encoding", default="pe", choices=["pe", "rgb", "bins"])
    pp.add_argument("--num-harmonics", type=int, default=4)
    pp.add_argument("--images", type=int, default=3)
    pp.add_argument("--noise", type=float, default=0.1, help="std of the Gaussian noise on the instance code")
    pp.add_argument("--iters", type=int, default=3)
    pp.add_argument("--warmup", type=int, default=1)

    d = sub.add_parser("data", help="training mapper images/s per worker")
    d.add_argument("--sizes", type=int, nargs="+", default=[420, 1008])
    d.add_argument("--dataset", default=None, help="registered panoptic dataset (default: synthetic images)")
    d.add_argument("--images", type=int, default=8, help="images (synthetic: generated; dataset: first N)")
    d.add_argument("--image-size", type=int, nargs=2, default=(480, 640), metavar=("H", "W"))
    d.add_argument("--rounds", type=int, default=3, help="interleaved passes over the images per size")
    d.add_argument("--warmup", type=int, default=1)
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--profile", type=int, default=0, metavar="N", help="print the N top cProfile entries")

    mm = sub.add_parser("postprocess-memory", help="peak memory of post-processing one large original image")
    mm.add_argument("--sizes", nargs="+", default=["3000x4000", "4000x6000"], help="original sizes HxW")
    mm.add_argument("--decode-at", nargs="+", default=["output"], choices=["output", "image"])
    mm.add_argument("--num-classes", type=int, default=133)

    pl = sub.add_parser("pipeline", help="evaluation pipeline images/s of several models, same images, one run")
    pl.add_argument("--entries", nargs="+", required=True, metavar="NAME=CONFIG[:CHECKPOINT]")
    pl.add_argument("--images", type=int, default=0,
                    help="first N images of each config's test loader (0: all; the panoptic evaluator scores "
                         "against the whole split, so a subset only works with evaluators that allow it)")
    pl.add_argument("--rounds", type=int, default=2)
    pl.add_argument("--device", default="auto")
    pl.add_argument("--threads", type=int, default=None)
    pl.add_argument("--trust-pickle", action="store_true", help="allow .pkl checkpoints (a pickle runs code)")
    pl.add_argument("--opts", nargs="*", default=[], help="config overrides key=value applied to every entry")
    pl.add_argument("--entry-opts", action="append", default=[], metavar="NAME:KEY=VALUE",
                    help="an override for one entry (e.g. m2f_r50:model.object_mask_threshold=0.5); repeat for more")

    t = sub.add_parser("train", help="training images/s and peak memory")
    _add_model_args(t)
    common(t)
    t.add_argument("--size", type=int, default=None,
                   help="input size (default: the config's dataloader.train.mapper.input_size, else 420)")
    t.add_argument("--batch", type=int, default=2)
    t.add_argument("--dtype", default="bf16", choices=sorted(B.DTYPES), help="autocast dtype (fp32: no autocast)")
    t.add_argument("--iters", type=int, default=5)
    t.add_argument("--warmup", type=int, default=2)
    t.add_argument("--lr", type=float, default=1e-4)
    t.add_argument("--against", action="append", default=None, metavar="KEY=VALUE",
                   help="also time the config with this override (repeat for several), steps interleaved, "
                        "and report the ratio (e.g. --against model.decoder.upsample_impl=convtranspose)")
    add_opts_argument(t)
    return with_opts(p)


def parse_args(argv=None) -> argparse.Namespace:
    """The command line, with every ``key=value`` override (``--opts`` or positional) in ``opts``;
    ``pipeline --entries name=config.py ...`` values stay entries."""
    return parse_tool_args(build_parser(), argv, verbatim=("--entries",))


COMMANDS = {"pipeline": run_pipeline, "model": run_model, "postprocess": run_postprocess, "data": run_data, "train": run_train,
            "postprocess-memory": run_postprocess_memory}


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.cmd == "pipeline":  # {name: [key=value, ...]} for run_pipeline
        args.entry_opts = parse_entry_opts(args.entry_opts, [e.partition("=")[0] for e in args.entries])
    logging.basicConfig(level=logging.WARNING)
    return COMMANDS[args.cmd](args)


if __name__ == "__main__":
    main()
