#!/usr/bin/env python
"""Generate pe_panoptic's built-in synthetic panoptic dataset (COCO panoptic format).

    python datasets/prepare_synthetic.py    # -> $DETECTRON2_DATASETS/synthetic_panoptic
    python datasets/prepare_synthetic.py --root /tmp/synth --num-train 50 --num-val 10 --size 112
    python datasets/prepare_synthetic.py --variant small   # -> .../synthetic_panoptic_small (32/16 at 112 px)
    python datasets/prepare_synthetic.py --variant dense   # -> .../synthetic_panoptic_dense (touching small things)
    python datasets/prepare_synthetic.py --variant large   # -> .../synthetic_panoptic_large (things of 1-10 patches)

Idempotent: re-running with the same parameters does nothing (see ``manifest.json``); other
parameters regenerate. The result is registered as ``synthetic_panoptic_train`` /
``synthetic_panoptic_val`` (``--variant small``: ``synthetic_panoptic_small_{train,val}``) when
``pe_panoptic`` is imported with the same ``DETECTRON2_DATASETS``.
"""
import argparse
import os
import time

from pe_panoptic.data.synthetic import SceneConfig, VARIANTS, default_synthetic_root, generate_synthetic_panoptic
from pe_panoptic.data.synthetic.files import ForeignFilesError


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", default=None,
                   help="output folder (default: $DETECTRON2_DATASETS/synthetic_panoptic, "
                        "DETECTRON2_DATASETS defaulting to ./datasets)")
    p.add_argument("--variant", choices=sorted(VARIANTS), default="default",
                   help="'small': the 32 / 16 images at 112 px of synthetic_panoptic_small_{train,val} "
                        "(the flags below override its parameters)")
    p.add_argument("--seed", type=int, default=None, help="default 0 (small: 3)")
    p.add_argument("--num-train", type=int, default=None, help="default 600 (small: 32)")
    p.add_argument("--num-val", type=int, default=None, help="default 60 (small: 16)")
    p.add_argument("--size", type=int, nargs="+", default=None, metavar="PX",
                   help="image size: one value (square) or H W; multiples of 14 suit DINOv2 "
                        "(default 168; small: 112)")
    p.add_argument("--force", action="store_true", help="regenerate even if up to date")
    p.add_argument("--delete-foreign-files", action="store_true",
                   help="when regenerating, also delete files in the dataset's folders that the generator "
                   "did not write (by default it refuses, naming them, and deletes nothing)")
    args = p.parse_args(argv)
    if args.size is not None and len(args.size) not in (1, 2):
        p.error(f"--size takes one value or two (H W), got {args.size}")
    return args


def format_summary(manifest: dict) -> str:
    params, lines = manifest["params"], []
    state = "generated" if manifest["generated"] else "up to date, nothing written"
    lines.append(f"synthetic panoptic dataset at {manifest['root']} ({state})")
    lines.append(f"  seed={params['seed']} image_size={params['image_size']} "
                 f"version={params['generator_version']}")
    for split, s in manifest["stats"].items():
        lines.append(
            f"  {split:5s}: {s['images']} images, {s['things']} thing instances "
            f"({s['small_things']} small, {s['large_things']} large, "
            f"{s['touching_same_class_pairs']} touching same-class pairs), {s['crowd']} crowd, "
            f"{s['stuff']} stuff segments, void {100 * s['void_fraction']:.1f}% of pixels")
    return "\n".join(lines)


def main(argv=None) -> dict:
    args = parse_args(argv)
    folder, params = VARIANTS[args.variant]
    params = {**dict(seed=0, num_train=600, num_val=60, image_size=(168, 168)), **params}
    if isinstance(params.get("scene"), dict):
        params["scene"] = SceneConfig(**params["scene"])
    if args.size is not None:
        params["image_size"] = tuple(args.size) * (2 if len(args.size) == 1 else 1)
    for key in ("seed", "num_train", "num_val"):
        if getattr(args, key) is not None:
            params[key] = getattr(args, key)
    root = args.root or os.path.join(os.path.dirname(default_synthetic_root()), folder)
    t0 = time.time()
    try:
        manifest = generate_synthetic_panoptic(root, force=args.force, progress=True,
                                               delete_foreign=args.delete_foreign_files, **params)
    except ForeignFilesError as e:
        raise SystemExit(f"prepare_synthetic.py: {e}") from e
    print(format_summary(manifest))
    print(f"  ({time.time() - t0:.1f} s)")
    return manifest


if __name__ == "__main__":
    main()
