"""``tools/benchmark.py pipeline``: evaluation pipeline images/s of several models, interleaved."""
from __future__ import annotations

import itertools
import tempfile
import time

import torch

from pe_panoptic.studies import benchmark as B
from pe_panoptic.studies.benchmark.cli import _emit, _set_threads


def run_pipeline(args) -> dict:
    """Evaluation pipeline images/s (test loader + model + post-processing + PQ / mIoU evaluators,
    i.e. detectron2's ``inference_on_dataset``) of several models on the same images, in one run:
    the entries alternate for ``--rounds`` rounds and each keeps its fastest round. The first
    entry's images/s is divided by each other's (``ratio``). ``args.entry_opts`` (optional,
    ``{name: [key=value, ...]}``) adds overrides to one entry's config after the common ``args.opts``."""
    from detectron2.config import instantiate
    from detectron2.evaluation import inference_on_dataset

    from pe_panoptic.engine.predictor import load_model
    from pe_panoptic.evaluation.panoptic import score_only_predicted

    if len(args.entries) < 2:
        raise SystemExit("--entries needs at least two name=config[:checkpoint] entries to compare")
    if args.images < 0 or args.rounds < 1:
        raise SystemExit("--images must be >= 0 (0: all) and --rounds >= 1")
    device = B.resolve_device(args.device)
    threads = _set_threads(args.threads)
    built, sizes = {}, {}
    for spec in args.entries:
        name, sep, rest = spec.partition("=")
        if not sep or not name or not rest:
            raise SystemExit(f"--entries: {spec!r} is not name=config[:checkpoint]")
        config, _, ckpt = rest.partition(":")
        opts = list(args.opts or []) + list((getattr(args, "entry_opts", None) or {}).get(name, []))
        cfg, model = load_model(config, opts, ckpt, str(device), args.trust_pickle,
                                missing_weights="ignore")
        loader = instantiate(cfg.dataloader.test)
        items = list(itertools.islice(iter(loader), args.images) if args.images else loader)
        if args.images and len(items) < args.images:
            raise SystemExit(f"{name}: the test loader of {config} has only {len(items)} images")
        if sizes and len(items) != next(iter(sizes.values())):
            raise SystemExit(f"{name}: {len(items)} test images, but the first entry has {next(iter(sizes.values()))}: "
                             "compare the entries on the same images")
        sizes[name] = len(items)
        cfg.dataloader.evaluator.output_dir = tempfile.mkdtemp(prefix=f"pe_pipeline_{name}_")
        built[name] = (model, items, cfg.dataloader.evaluator, config, ckpt, opts)
    best = {name: float("inf") for name in built}
    with torch.no_grad():
        for _ in range(args.rounds):
            for name, (model, items, ev_cfg, *_) in built.items():
                evaluator = instantiate(ev_cfg)
                if args.images:  # a subset of the split: score only the images predicted (as tools/compare.py)
                    score_only_predicted(evaluator)
                B.synchronize(device)
                t0 = time.perf_counter()
                inference_on_dataset(model, items, evaluator)
                B.synchronize(device)
                best[name] = min(best[name], time.perf_counter() - t0)
    first = next(iter(built))
    rows, per = [], {}
    for name, (_, _, _, config, ckpt, opts) in built.items():
        ips = sizes[name] / best[name]
        per[name] = {"config": config, "checkpoint": ckpt, "opts": opts, "seconds": best[name], "images_per_s": ips}
        rows.append({"entry": name, "seconds": best[name], "images_per_s": ips,
                     "ratio": (sizes[first] / best[first]) / ips})
    result = {"subcommand": "pipeline", "device": str(device), "threads": threads, "images": sizes[first],
              "rounds": args.rounds, "entries": per,
              "ratios": {r["entry"]: r["ratio"] for r in rows}}
    title = (f"evaluation pipeline (loader + model + post-processing + evaluators) on {sizes[first]} images, "
             f"best of {args.rounds} rounds, {device} ({threads} threads); ratio = {first} images/s / entry images/s")
    return _emit(title, rows, ["entry", "seconds", "images_per_s", "ratio"], result)
