"""NYUv2 monocular depth: on-disk layout, dataset dicts and registration.

Layout under ``$DETECTRON2_DATASETS/nyuv2`` (written by ``datasets/prepare_nyuv2.py``, and for
the training split from the raw dump by ``datasets/prepare_nyuv2_raw.py``, see
:mod:`datasets/nyu_raw.py`; ``datasets/README.md``)::

    splits/train.txt            one image stem per line (the paper's 47K training split, or the
    splits/test.txt             795 labeled training images; test: the official 654 images)
    train/rgb/<stem>.jpg        RGB image (480 x 640 for NYUv2)
    train/depth/<stem>.png      metric depth, single-channel uint16, millimetres, 0 = no depth
    test/rgb/<stem>.jpg
    test/depth/<stem>.png

Stems are file names without a folder (pseudo-labels are looked up by stem, see
:mod:`pe_panoptic.data.depth_labels`). Dataset dicts: ``file_name``, ``depth_file_name``,
``image_id`` (the stem). Registered as ``nyuv2_depth_train`` / ``nyuv2_depth_test`` with
metadata ``evaluator_type="depth"``, the valid metric range 0.001-10 m (paper Sec. 5), the PNG
scale (1000 units per metre) and ``eigen_crop`` (True for the test split: the standard protocol
evaluates inside the crop of Eigen et al., rows 45:471, columns 41:601 of the 480 x 640 frame).
"""
from __future__ import annotations

import os
from typing import Dict, List, Optional

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.utils.file_io import PathManager

from pe_panoptic.data.depth_labels import DEFAULT_MAX_DEPTH, DEFAULT_MIN_DEPTH, DEPTH_PNG_SCALE

__all__ = [
    "NYUV2_SPLITS",
    "nyuv2_paths",
    "nyuv2_metadata",
    "read_split_list",
    "load_nyuv2_depth",
    "register_nyuv2_depth",
    "register_all_nyuv2_depth",
]

#: registered name -> split folder
NYUV2_SPLITS: Dict[str, str] = {"nyuv2_depth_train": "train", "nyuv2_depth_test": "test"}


def nyuv2_paths(root: str, split: str, stem: str) -> Dict[str, str]:
    """``{"rgb": <root>/<split>/rgb/<stem>.jpg, "depth": <root>/<split>/depth/<stem>.png}``."""
    return {
        "rgb": os.path.join(root, split, "rgb", stem + ".jpg"),
        "depth": os.path.join(root, split, "depth", stem + ".png"),
    }


def nyuv2_metadata(split: str, root: Optional[str] = None) -> dict:
    return dict(
        evaluator_type="depth",
        depth_kind="metric",
        min_depth=DEFAULT_MIN_DEPTH,
        max_depth=DEFAULT_MAX_DEPTH,
        depth_scale=DEPTH_PNG_SCALE,
        eigen_crop=split == "test",
        root=root,
        split=split,
    )


def read_split_list(list_file: str) -> List[str]:
    """Stems of a split list: one per line; blank lines and ``#`` comments are skipped.
    Raises ``FileNotFoundError`` / ``ValueError`` naming the file and the bad line."""
    if not PathManager.exists(list_file):
        raise FileNotFoundError(
            f"NYUv2 split list not found: {list_file} (create the layout with datasets/prepare_nyuv2.py, "
            "see datasets/README.md)"
        )
    with PathManager.open(list_file, "r") as f:
        lines = f.read().splitlines()
    stems, seen = [], set()
    for n, line in enumerate(lines, 1):
        stem = line.strip()
        if not stem or stem.startswith("#"):
            continue
        if "/" in stem or "\\" in stem or " " in stem or stem in (".", ".."):
            raise ValueError(f"{list_file}:{n}: {stem!r} is not a plain file stem (no folders or spaces)")
        if stem in seen:
            raise ValueError(f"{list_file}:{n}: duplicate stem {stem!r}")
        seen.add(stem)
        stems.append(stem)
    if not stems:
        raise ValueError(f"NYUv2 split list {list_file} is empty")
    return stems


def load_nyuv2_depth(root: str, split: str) -> List[dict]:
    """Dataset dicts of one NYUv2 split of the layout above (the first sample's files are checked
    to exist, as detectron2's builtin loaders do; the mapper reports any other missing file)."""
    stems = read_split_list(os.path.join(root, "splits", f"{split}.txt"))
    dicts = []
    for stem in stems:
        p = nyuv2_paths(root, split, stem)
        dicts.append({"file_name": p["rgb"], "depth_file_name": p["depth"], "image_id": stem})
    for key in ("file_name", "depth_file_name"):
        if not PathManager.isfile(dicts[0][key]):
            raise FileNotFoundError(f"NYUv2 {split}: {dicts[0][key]} listed in splits/{split}.txt does not exist")
    return dicts


def register_nyuv2_depth(name: str, root: str, split: str) -> None:
    """Register ``name`` (lazy: files are read when ``DatasetCatalog.get(name)`` is called)."""
    DatasetCatalog.register(name, lambda r=root, s=split: load_nyuv2_depth(r, s))
    MetadataCatalog.get(name).set(**nyuv2_metadata(split, root))


def register_all_nyuv2_depth(datasets_root: Optional[str] = None) -> None:
    """``nyuv2_depth_train`` / ``nyuv2_depth_test`` under ``<datasets_root>/nyuv2``
    (``$DETECTRON2_DATASETS``, default ``datasets``); already registered names are kept."""
    if datasets_root is None:
        datasets_root = os.getenv("DETECTRON2_DATASETS", "datasets")
    root = os.path.join(datasets_root, "nyuv2")
    for name, split in NYUV2_SPLITS.items():
        if name not in DatasetCatalog.list():
            register_nyuv2_depth(name, root, split)


register_all_nyuv2_depth()
