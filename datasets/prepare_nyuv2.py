#!/usr/bin/env python
"""Convert NYU Depth v2 to pe_panoptic's layout (``$DETECTRON2_DATASETS/nyuv2``, see README.md).

Official labeled set (1449 images; the official split: 795 train / 654 test)::

    python datasets/prepare_nyuv2.py --mat nyu_depth_v2_labeled.mat --splits splits.mat

``nyu_depth_v2_labeled.mat`` is MATLAB v7.3 (HDF5): reading it needs ``h5py``
(``pip install h5py``). ``splits.mat`` holds ``trainNdxs`` / ``testNdxs`` (1-based indices into
the labeled set). Image ``i`` (1-based) becomes ``<split>/rgb/<i:05d>.jpg`` and
``<split>/depth/<i:05d>.png`` (uint16 millimetres, 0 = no depth; the labeled set's in-painted
``depths``, in metres in the .mat).

A larger training split given as a list file (e.g. the paper's 47K frames; format of the BTS /
Depth Anything lists: ``<rgb path> <depth path> [focal]`` per line, relative to ``--src-root``,
depth as 16-bit PNG in millimetres) replaces ``splits/train.txt``::

    python datasets/prepare_nyuv2.py --train-list nyu_train_47k.txt --src-root /data/nyu_sync

Its stems are the RGB paths without extension, with ``/`` replaced by ``__`` (unique, no folders).
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
from typing import Iterable, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image

try:
    from tqdm import tqdm
except ImportError:  # pragma: no cover
    def tqdm(it, **kw):
        return it

DEPTH_SCALE = 1000.0  # PNG units per metre


# --------------------------------------------------------------------------- reading the .mat files
def open_labeled_mat(path: str, depth_key: str = "depths"):
    """``(images, depths)`` h5py datasets of ``nyu_depth_v2_labeled.mat`` (MATLAB v7.3 = HDF5),
    in its on-disk (transposed) layout: images ``[N, 3, W, H]`` uint8, depths ``[N, W, H]``
    metres. Wrap them in :class:`LabeledSamples`. The file stays open while they are used."""
    try:
        import h5py
    except ImportError:
        raise SystemExit(
            f"reading {path} (MATLAB v7.3 = HDF5) needs h5py: pip install h5py"
        ) from None
    f = h5py.File(path, "r")
    for key in ("images", depth_key):
        if key not in f:
            raise ValueError(f"{path}: no dataset {key!r} (keys: {sorted(f.keys())}); is it nyu_depth_v2_labeled.mat?")
    return f["images"], f[depth_key]


class LabeledSamples:
    """Sequence of ``(rgb [H, W, 3] uint8, depth [H, W] float32 metres)`` over arrays in the
    MATLAB v7.3 layout (column-major, so h5py sees every array transposed):
    ``images [N, 3, W, H]``, ``depths [N, W, H]``. Works on h5py datasets (read lazily, one
    image at a time) and on numpy arrays."""

    def __init__(self, images, depths):
        if len(images.shape) != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be [N, 3, W, H] (MATLAB v7.3 layout), got shape {images.shape}")
        if len(depths.shape) != 3 or depths.shape[0] != images.shape[0] or depths.shape[1:] != images.shape[2:]:
            raise ValueError(f"depths must be [N, W, H] matching images {images.shape}, got {depths.shape}")
        self.images, self.depths = images, depths

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def __getitem__(self, i: int) -> Tuple[np.ndarray, np.ndarray]:
        rgb = np.ascontiguousarray(np.asarray(self.images[i]).transpose(2, 1, 0)).astype(np.uint8)
        depth = np.ascontiguousarray(np.asarray(self.depths[i]).T).astype(np.float32)
        return rgb, depth


def read_split_indices(path: str, key: str = "testNdxs") -> np.ndarray:
    """0-based indices of ``key`` in the official ``splits.mat`` (stored 1-based)."""
    from scipy.io import loadmat

    try:
        mat = loadmat(path)
        if key not in mat:
            raise ValueError(f"{path}: no variable {key!r} (has {sorted(k for k in mat if not k.startswith('__'))})")
        idx = np.asarray(mat[key]).reshape(-1)
    except NotImplementedError:  # a v7.3 (HDF5) file
        import h5py

        with h5py.File(path, "r") as f:
            idx = np.asarray(f[key]).reshape(-1)
    idx = idx.astype(np.int64)
    if idx.size == 0 or idx.min() < 1:
        raise ValueError(f"{path}: {key} must hold 1-based indices, got min {idx.min() if idx.size else None}")
    return idx - 1


# --------------------------------------------------------------------------- writing the layout
def depth_to_png_array(depth_m: np.ndarray, scale: float = DEPTH_SCALE) -> np.ndarray:
    """Metres -> uint16 ``round(depth * scale)``; non-finite, non-positive or out-of-range
    (> 65535 units) depths become 0 = no depth."""
    d = np.asarray(depth_m, dtype=np.float64) * scale
    ok = np.isfinite(d) & (d > 0) & (d <= 65535)
    return np.where(ok, np.rint(np.where(ok, d, 0)), 0).astype(np.uint16)


def write_sample(out_root: str, split: str, stem: str, rgb: np.ndarray, depth_m: np.ndarray,
                 jpeg_quality: int = 95) -> None:
    for sub in ("rgb", "depth"):
        os.makedirs(os.path.join(out_root, split, sub), exist_ok=True)
    if rgb.shape[:2] != depth_m.shape:
        raise ValueError(f"{split}/{stem}: rgb {rgb.shape[:2]} and depth {depth_m.shape} differ in size")
    Image.fromarray(rgb).save(os.path.join(out_root, split, "rgb", stem + ".jpg"), quality=jpeg_quality)
    Image.fromarray(depth_to_png_array(depth_m)).save(os.path.join(out_root, split, "depth", stem + ".png"))


def write_split_list(out_root: str, split: str, stems: Sequence[str]) -> str:
    os.makedirs(os.path.join(out_root, "splits"), exist_ok=True)
    path = os.path.join(out_root, "splits", f"{split}.txt")
    with open(path, "w") as f:
        f.write("".join(s + "\n" for s in stems))
    return path


def convert_labeled(samples, test_indices: Iterable[int], out_root: str, jpeg_quality: int = 95,
                    progress: bool = True) -> dict:
    """Write every sample of ``samples`` (:class:`LabeledSamples`) to ``test`` if its 0-based
    index is in ``test_indices``, else to ``train``; stems ``<1-based index:05d>``. Writes both
    split lists; returns ``{"train": n, "test": n}``."""
    test = set(int(i) for i in test_indices)
    bad = [i for i in test if not 0 <= i < len(samples)]
    if bad:
        raise ValueError(f"test indices {sorted(bad)[:5]} are outside the {len(samples)} labeled images")
    stems = {"train": [], "test": []}
    for i in tqdm(range(len(samples)), desc="NYUv2 labeled", disable=not progress):
        rgb, depth = samples[i]
        split = "test" if i in test else "train"
        stem = f"{i + 1:05d}"
        write_sample(out_root, split, stem, rgb, depth, jpeg_quality)
        stems[split].append(stem)
    for split, s in stems.items():
        write_split_list(out_root, split, s)
    return {k: len(v) for k, v in stems.items()}


def list_stem(rgb_rel: str) -> str:
    """Stem of a list entry: RGB path without extension, folders joined by ``__``."""
    parts = [p for p in os.path.splitext(rgb_rel.replace("\\", "/"))[0].split("/") if p not in ("", ".")]
    if not parts or ".." in parts:
        raise ValueError(f"bad RGB path in list: {rgb_rel!r}")
    return "__".join(parts)


def import_list(list_file: str, src_root: str, out_root: str, split: str = "train",
                depth_scale: float = DEPTH_SCALE, progress: bool = True) -> int:
    """Copy the ``<rgb> <depth> [...]`` pairs of ``list_file`` (paths relative to ``src_root``;
    depth: 16-bit PNG with ``depth_scale`` units per metre) into ``<out_root>/<split>`` and write
    ``splits/<split>.txt``. JPEG images are copied as they are, others re-encoded."""
    with open(list_file) as f:
        entries = [line.split() for line in f if line.strip() and not line.lstrip().startswith("#")]
    stems: List[str] = []
    seen = set()
    for sub in ("rgb", "depth"):
        os.makedirs(os.path.join(out_root, split, sub), exist_ok=True)
    for n, parts in enumerate(tqdm(entries, desc=f"NYUv2 {split} list", disable=not progress), 1):
        if len(parts) < 2:
            raise ValueError(f"{list_file}:{n}: expected '<rgb path> <depth path> [focal]', got {' '.join(parts)!r}")
        rgb_rel, depth_rel = parts[0], parts[1]
        stem = list_stem(rgb_rel)
        if stem in seen:
            raise ValueError(f"{list_file}:{n}: duplicate entry {rgb_rel}")
        seen.add(stem)
        rgb_src, depth_src = os.path.join(src_root, rgb_rel.lstrip("/")), os.path.join(src_root, depth_rel.lstrip("/"))
        for p in (rgb_src, depth_src):
            if not os.path.isfile(p):
                raise FileNotFoundError(f"{list_file}:{n}: {p} not found")
        rgb_dst = os.path.join(out_root, split, "rgb", stem + ".jpg")
        if os.path.splitext(rgb_src)[1].lower() in (".jpg", ".jpeg"):
            shutil.copyfile(rgb_src, rgb_dst)
        else:
            Image.open(rgb_src).convert("RGB").save(rgb_dst, quality=95)
        with Image.open(depth_src) as im:
            if im.mode not in ("I;16", "I;16L", "I;16B", "I"):
                raise ValueError(f"{depth_src}: mode {im.mode!r}, expected a 16-bit depth PNG")
            depth = np.asarray(im).astype(np.float64) / depth_scale
        Image.fromarray(depth_to_png_array(depth)).save(os.path.join(out_root, split, "depth", stem + ".png"))
        stems.append(stem)
    write_split_list(out_root, split, stems)
    return len(stems)


# --------------------------------------------------------------------------- command line
def parse_args(argv: Optional[Sequence[str]] = None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=None, help="output root (default: $DETECTRON2_DATASETS/nyuv2, "
                   "DETECTRON2_DATASETS defaulting to ./datasets)")
    p.add_argument("--mat", help="nyu_depth_v2_labeled.mat")
    p.add_argument("--splits", help="splits.mat of the official train/test split (needed with --mat)")
    p.add_argument("--depth-key", default="depths", help="depth variable of the .mat (default: in-painted 'depths')")
    p.add_argument("--train-list", help="list file of a training split (<rgb> <depth> [focal] per line)")
    p.add_argument("--src-root", help="root of the paths in --train-list")
    p.add_argument("--list-depth-scale", type=float, default=DEPTH_SCALE, help="PNG units per metre in --train-list")
    p.add_argument("--jpeg-quality", type=int, default=95)
    args = p.parse_args(argv)
    if not args.mat and not args.train_list:
        p.error("give --mat (with --splits) and/or --train-list (with --src-root)")
    if args.mat and not args.splits:
        p.error("--mat needs --splits (splits.mat, the official split)")
    if args.train_list and not args.src_root:
        p.error("--train-list needs --src-root")
    return args


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    out = args.out or os.path.join(os.getenv("DETECTRON2_DATASETS", "datasets"), "nyuv2")
    if args.mat:
        images, depths = open_labeled_mat(args.mat, args.depth_key)
        counts = convert_labeled(LabeledSamples(images, depths), read_split_indices(args.splits), out,
                                 args.jpeg_quality)
        print(f"NYUv2 labeled set -> {out}: {counts['train']} train, {counts['test']} test images")
    if args.train_list:
        n = import_list(args.train_list, args.src_root, out, "train", args.list_depth_scale)
        print(f"{args.train_list} -> {out}/train: {n} images (splits/train.txt replaced)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
