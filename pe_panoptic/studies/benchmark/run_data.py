"""``tools/benchmark.py data``: images/s of one worker running the training mapper."""
from __future__ import annotations

import cProfile
import pstats
import tempfile
from typing import List

import numpy as np
import torch

from pe_panoptic.studies import benchmark as B
from pe_panoptic.studies.benchmark.cli import _check_size, _emit


def _synthetic_dicts(root: str, num: int, image_size, seed: int) -> List[dict]:
    from pe_panoptic.data.synthetic import generate_synthetic_panoptic, load_synthetic_panoptic

    generate_synthetic_panoptic(root, seed=seed, num_train=num, num_val=1, image_size=tuple(image_size),
                                scene=B.scaled_scene_config(image_size))
    return load_synthetic_panoptic(root, "train")


def run_data(args) -> dict:
    import cv2

    from detectron2.data import DatasetCatalog
    from pe_panoptic.data.mapper import PanopticCentroidDatasetMapper, PanopticTargets, build_train_augmentations

    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    for s in args.sizes:
        _check_size(s, "--sizes")
    if args.rounds < 1 or args.warmup < 0:
        raise SystemExit("--rounds must be >= 1 and --warmup >= 0")
    with tempfile.TemporaryDirectory(prefix="pe_bench_data_") as tmp:
        if args.dataset:
            if args.dataset not in DatasetCatalog.list():
                raise SystemExit(f"--dataset {args.dataset!r} is not registered")
            dicts = DatasetCatalog.get(args.dataset)
            source = args.dataset
        else:
            dicts = _synthetic_dicts(tmp, args.images, args.image_size, args.seed)
            source = f"synthetic {args.image_size[0]}x{args.image_size[1]}"
        if args.images:
            dicts = dicts[: args.images]
        if not dicts:
            raise SystemExit(f"no images in {source}")
        mappers = {
            s: PanopticCentroidDatasetMapper(True, augmentations=build_train_augmentations(s), input_size=s,
                                             panoptic=PanopticTargets(dataset_name=args.dataset or None))
            for s in args.sizes
        }
        rng = np.random.RandomState(args.seed)

        def epoch(mapper):
            def run():
                np.random.seed(rng.randint(2**31))  # detectron2's augmentations draw from np.random
                for d in dicts:
                    mapper(d)
            return run

        prof = cProfile.Profile() if args.profile else None
        fns = {str(s): epoch(m) for s, m in mappers.items()}
        if prof:
            prof.enable()
        times = B.interleaved_times(fns, rounds=args.rounds, warmup=args.warmup)
        if prof:
            prof.disable()
    ips, rows = {}, []
    for s in args.sizes:
        t = B.summarize(times[str(s)])
        ips[str(s)] = len(dicts) / t["median_s"]
        rows.append({"size": s, "images_per_s_per_worker": ips[str(s)],
                     "ms_per_image": t["median_s"] * 1e3 / len(dicts), "min_ms_per_image": t["min_s"] * 1e3 / len(dicts)})
    result = {"subcommand": "data", "images_per_s_per_worker": ips, "source": source, "images": len(dicts),
              "rounds": args.rounds, "threads": 1, "profiled": bool(prof)}
    if prof:
        pstats.Stats(prof).sort_stats("tottime").print_stats(args.profile)
    title = f"training mapper, one worker (1 thread), {len(dicts)} images of {source}, {args.rounds} rounds"
    return _emit(title, rows, ["size", "images_per_s_per_worker", "ms_per_image", "min_ms_per_image"], result)
