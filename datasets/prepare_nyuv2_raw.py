#!/usr/bin/env python
"""NYU Depth v2 raw dump -> the training split of ``nyuv2_depth_train`` (the paper's ~47K frames).

Input: the extracted raw dump (one folder per scene with ``r-*.ppm`` / ``d-*.pgm`` / ``a-*.dump``
files, as the official site ships it) and a train-scene list (one scene folder name per line,
e.g. BTS's ``train_scenes.txt``: the scenes of the official labelled training split)::

    python datasets/prepare_nyuv2_raw.py --raw-root /data/nyu_raw --scenes train_scenes.txt

Each scene's depth frames are matched to the nearest RGB frame (the toolbox's
``get_synched_frames.m``), every ``--sample-step``-th one is projected onto the RGB frame in
metres (``project_depth_map.m``) and written to ``$DETECTRON2_DATASETS/nyuv2/train/`` with
``splits/train.txt`` (replaced). See :mod:`datasets/nyu_raw.py` for the details and
``datasets/prepare_nyuv2.py`` for the official 654-image test split (the labelled set).

Bad frames are skipped with a warning naming the file (``--strict``: stop at the first); the
last printed line is a JSON summary (frames written / skipped by reason, missing scenes).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys


from nyu_raw import prepare_nyuv2_raw, stats_dict  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--raw-root", required=True, help="folder holding the extracted scene folders of the raw dump")
    p.add_argument("--scenes", required=True, help="train-scene list (one scene folder name per line)")
    p.add_argument("--out", default=None, help="output root (default: $DETECTRON2_DATASETS/nyuv2, "
                   "DETECTRON2_DATASETS defaulting to ./datasets)")
    p.add_argument("--sample-step", type=int, default=7,
                   help="keep every N-th synchronised frame of a scene (default 7, as BTS's sync set)")
    p.add_argument("--max-time-diff", type=float, default=None,
                   help="skip frames whose RGB frame is more than this many seconds away (default: keep all, "
                   "as the toolbox does)")
    p.add_argument("--allow-missing-scenes", action="store_true",
                   help="skip (and count) listed scenes without a folder instead of stopping")
    p.add_argument("--strict", action="store_true", help="stop at the first bad frame instead of skipping it")
    p.add_argument("--no-undistort", action="store_true",
                   help="skip the lens undistortion step of the toolbox (not what the toolbox does)")
    p.add_argument("--jpeg-quality", type=int, default=95)
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    out = args.out or os.path.join(os.getenv("DETECTRON2_DATASETS", "datasets"), "nyuv2")
    stats = prepare_nyuv2_raw(
        args.raw_root, args.scenes, out, sample_step=args.sample_step, max_time_diff=args.max_time_diff,
        allow_missing_scenes=args.allow_missing_scenes, strict=args.strict,
        undistort_images=not args.no_undistort, jpeg_quality=args.jpeg_quality,
    )
    print(json.dumps(dict(out=out, **stats_dict(stats))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
