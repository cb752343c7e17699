"""Writing the synthetic dataset to disk in COCO panoptic format (images, panoptic and semantic
PNGs, panoptic and instances JSON, a manifest for idempotence)."""
from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
from typing import Dict, Optional, Tuple

import numpy as np
from PIL import Image

from pe_panoptic.data.synthetic.catalog import (
    VARIANTS,
    GENERATOR_VERSION,
    SPLIT_CODE,
    SPLITS,
    SYNTHETIC_CATEGORIES,
    THING_CATEGORIES,
    THING_DATASET_IDS,
    VARIANTS,
    default_synthetic_root,
    synthetic_split_paths,
)
from pe_panoptic.data.synthetic.scene import SceneConfig, render_scene

__all__ = ["generate_synthetic_panoptic", "ensure_synthetic_panoptic", "ForeignFilesError"]


def _image_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """Independent stream per (seed, split, image): image i does not depend on the split size."""
    return np.random.default_rng(np.random.SeedSequence([seed, SPLIT_CODE[split], index]))


def _encode_rle(mask: np.ndarray) -> dict:
    from pycocotools import mask as mask_util

    rle = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


def _adjacent_same_class_pairs(panoptic: np.ndarray, thing_cat: Dict[int, int]) -> int:
    """Number of 4-adjacent pairs of distinct non-crowd thing segments with the same class."""
    a = np.concatenate([panoptic[:, :-1].ravel(), panoptic[:-1, :].ravel()])
    b = np.concatenate([panoptic[:, 1:].ravel(), panoptic[1:, :].ravel()])
    sel = (a != b) & (a > 0) & (b > 0)
    pairs = np.unique(np.sort(np.stack([a[sel], b[sel]], 1), axis=1), axis=0)
    return int(sum(1 for x, y in pairs if x in thing_cat and thing_cat.get(x) == thing_cat.get(y)))


def _write_split(root: str, split: str, num: int, seed: int, image_size, cfg: SceneConfig,
                 progress: bool) -> dict:
    from panopticapi.utils import id2rgb

    paths = synthetic_split_paths(root, split)
    for key in ("image_root", "panoptic_root", "sem_seg_root"):
        os.makedirs(paths[key], exist_ok=True)
    os.makedirs(os.path.dirname(paths["panoptic_json"]), exist_ok=True)
    h, w = image_size
    images, pan_anns, inst_anns = [], [], []
    stats = {"images": num, "things": 0, "crowd": 0, "stuff": 0, "small_things": 0,
             "large_things": 0, "touching_same_class_pairs": 0, "void_fraction": 0.0}
    indices = range(num)
    if progress:
        from tqdm import tqdm

        indices = tqdm(indices, desc=f"synthetic {split}", unit="img")
    for i in indices:
        image_id = i + 1
        stem = f"{image_id:012d}"
        s = render_scene(_image_rng(seed, split, i), (h, w), cfg)
        Image.fromarray(s.image).save(os.path.join(paths["image_root"], stem + ".jpg"), quality=95)
        Image.fromarray(id2rgb(s.panoptic)).save(
            os.path.join(paths["panoptic_root"], stem + ".png"))
        Image.fromarray(s.semantic).save(os.path.join(paths["sem_seg_root"], stem + ".png"))
        images.append({"id": image_id, "file_name": stem + ".jpg", "height": h, "width": w})
        pan_anns.append({"image_id": image_id, "file_name": stem + ".png",
                         "segments_info": s.segments_info})
        thing_cat = {}
        for seg in s.segments_info:
            if seg["category_id"] in THING_DATASET_IDS:
                inst_anns.append({"id": len(inst_anns) + 1, "image_id": image_id,
                                  "category_id": seg["category_id"],
                                  "segmentation": _encode_rle(s.panoptic == seg["id"]),
                                  "area": seg["area"], "bbox": seg["bbox"],
                                  "iscrowd": seg["iscrowd"]})
                if seg["iscrowd"]:
                    stats["crowd"] += 1
                else:
                    thing_cat[seg["id"]] = seg["category_id"]
                    side = max(seg["bbox"][2], seg["bbox"][3])
                    stats["things"] += 1
                    stats["small_things"] += int(side <= 12)
                    stats["large_things"] += int(side >= 48)
            else:
                stats["stuff"] += 1
        stats["touching_same_class_pairs"] += _adjacent_same_class_pairs(s.panoptic, thing_cat)
        stats["void_fraction"] += float((s.panoptic == 0).mean()) / num
    info = {"description": _DESCRIPTION,
            "version": str(GENERATOR_VERSION), "seed": seed, "split": split}
    categories = [dict(c) for c in SYNTHETIC_CATEGORIES]
    with open(paths["panoptic_json"], "w") as f:
        json.dump({"info": info, "images": images, "annotations": pan_anns,
                   "categories": categories}, f)
    with open(paths["instances_json"], "w") as f:
        json.dump({"info": info, "images": images, "annotations": inst_anns,
                   "categories": [{k: c[k] for k in ("id", "name", "supercategory")}
                                  for c in THING_CATEGORIES]}, f)
    return stats


def _manifest_params(seed, num_train, num_val, image_size, cfg: SceneConfig) -> dict:
    params = {"generator_version": GENERATOR_VERSION, "seed": seed, "num_train": num_train,
              "num_val": num_val, "image_size": list(image_size), "scene": dataclasses.asdict(cfg)}
    return json.loads(json.dumps(params))  # tuples -> lists, as read back from disk


def variant_of(params: dict) -> Optional[str]:
    """The name in :data:`VARIANTS` whose generator parameters are ``params`` (a manifest's
    ``params``), else ``None`` (custom parameters)."""
    for name, (_, overrides) in VARIANTS.items():
        v = {**dict(seed=0, num_train=600, num_val=60, image_size=(168, 168)), **overrides}
        scene = SceneConfig(**v["scene"]) if isinstance(v.get("scene"), dict) else SceneConfig()
        if _manifest_params(v["seed"], v["num_train"], v["num_val"], v["image_size"], scene) == params:
            return name
    return None


def read_manifest_params(root: str) -> Optional[dict]:
    """``params`` of ``root/manifest.json``; ``None`` when there is no readable manifest."""
    try:
        with open(os.path.join(root, "manifest.json")) as f:
            return json.load(f).get("params")
    except (OSError, ValueError, AttributeError):
        return None


def _refuse_other_variant(root: str, params: dict) -> None:
    """A folder that holds one named variant is not overwritten by another named variant (e.g.
    the default dataset generated into ``synthetic_panoptic_small``): ``ValueError``."""
    old = read_manifest_params(root)
    old_v, new_v = (variant_of(old) if old else None), variant_of(params)
    if old_v and new_v and old_v != new_v:
        raise ValueError(f"generate_synthetic_panoptic: {os.path.join(root, 'manifest.json')} holds the "
                         f"{old_v!r} variant; refusing to write the {new_v!r} variant into {root} (give "
                         f"--variant {old_v}, or another --root)")


def _existing_manifest(root: str, params: dict, counts: Dict[str, int]) -> Optional[dict]:
    """The manifest if it matches ``params`` and every file it promises is present."""
    path = os.path.join(root, "manifest.json")
    try:
        with open(path) as f:
            manifest = json.load(f)
    except (OSError, ValueError):
        return None
    if manifest.get("params") != params:
        return None
    for split, num in counts.items():
        p = synthetic_split_paths(root, split)
        if not (os.path.isfile(p["panoptic_json"]) and os.path.isfile(p["instances_json"])):
            return None
        for key in ("image_root", "panoptic_root", "sem_seg_root"):
            if not os.path.isdir(p[key]) or len(os.listdir(p[key])) != num:
                return None
    return manifest


#: what the generator writes in each split folder: ``<12-digit image id>.<ext>``
_OWN_NAME = {"image_root": re.compile(r"^\d{12}\.jpg$"), "panoptic_root": re.compile(r"^\d{12}\.png$"),
             "sem_seg_root": re.compile(r"^\d{12}\.png$")}
_DESCRIPTION = "pe_panoptic synthetic panoptic dataset"


class ForeignFilesError(RuntimeError):
    """A folder the generator writes into holds files it did not write; nothing was deleted."""


def _own_json(path: str) -> bool:
    """Whether ``path`` is a JSON written by this generator (its ``info.description``)."""
    try:
        with open(path) as f:
            return json.load(f).get("info", {}).get("description") == _DESCRIPTION
    except (OSError, ValueError, AttributeError):
        return False


def _outputs(root: str) -> Tuple[list, list]:
    """(files this generator wrote, other files) in the places it writes to under ``root``:
    images / PNGs named like its own, and JSONs whose ``info.description`` is its own."""
    own, foreign = [], []
    for split in SPLITS:
        p = synthetic_split_paths(root, split)
        for key, pattern in _OWN_NAME.items():
            if not os.path.isdir(p[key]):
                continue
            for name in sorted(os.listdir(p[key])):
                path = os.path.join(p[key], name)
                mine = pattern.match(name) and os.path.isfile(path) and not os.path.islink(path)
                (own if mine else foreign).append(path)
        for key in ("panoptic_json", "instances_json"):
            if os.path.lexists(p[key]):
                (own if _own_json(p[key]) else foreign).append(p[key])
    return own, foreign


def _remove_outputs(root: str, delete_foreign: bool = False) -> None:
    """Delete only what this generator wrote: its manifest, images, PNGs and JSONs (recognized
    by name and content). If its folders hold anything else, raise :class:`ForeignFilesError`
    naming those files before deleting anything, unless ``delete_foreign`` (then they go too)."""
    own, foreign = _outputs(root)
    if foreign and not delete_foreign:
        more = f" ... ({len(foreign) - 10} more)" if len(foreign) > 10 else ""
        raise ForeignFilesError(
            f"{root}: the synthetic dataset generator would replace its own files here, but these were not "
            f"written by it: {', '.join(foreign[:10])}{more}. Nothing was deleted. Generate into another "
            f"folder (--root), move those files away, or pass --delete-foreign-files to delete them too.")
    manifest = os.path.join(root, "manifest.json")
    if os.path.isfile(manifest):
        os.remove(manifest)
    for path in own:
        os.remove(path)
    for path in foreign:
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        else:
            os.remove(path)


def _check_image_size(image_size) -> Tuple[int, int]:
    try:
        h, w = (int(v) for v in image_size)
        ok = (h, w) == tuple(image_size)
    except (TypeError, ValueError):
        ok = False
    if not ok or h < 32 or w < 32:
        raise ValueError(f"generate_synthetic_panoptic: image_size must be two integers (H, W) "
                         f">= 32, got {image_size!r}")
    return h, w


def generate_synthetic_panoptic(root: Optional[str] = None, *, seed: int = 0, num_train: int = 600,
                                num_val: int = 60, image_size: Tuple[int, int] = (168, 168),
                                scene: Optional[SceneConfig] = None, force: bool = False,
                                progress: bool = False, delete_foreign: bool = False) -> dict:
    """Write the synthetic dataset (both splits) in COCO panoptic format under ``root``.

    Deterministic: image ``i`` of a split depends only on ``(seed, split, i)``, ``image_size``
    and ``scene``; the files are byte-identical across runs. Idempotent: if ``root/manifest.json``
    records the same parameters and all files are present, nothing is written; otherwise earlier
    outputs of this generator under ``root`` are removed and everything is regenerated (the
    manifest is written last, so an interrupted run is redone). Files it did not write in the
    folders it writes to are never deleted: :class:`ForeignFilesError` names them, unless
    ``delete_foreign=True`` (``--delete-foreign-files``). 168 = 12 * 14 fits DINOv2's
    patch size.

    Returns the manifest: ``{"params": ..., "stats": {split: {...}}, "generated": bool,
    "root": root}``.
    """
    root = default_synthetic_root() if root is None else os.fspath(root)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(
            f"generate_synthetic_panoptic: seed must be a non-negative int, got {seed!r}")
    for arg, val in (("num_train", num_train), ("num_val", num_val)):
        if isinstance(val, bool) or not isinstance(val, (int, np.integer)) or val < 1:
            raise ValueError(f"generate_synthetic_panoptic: {arg} must be an int >= 1, got {val!r}")
    image_size = _check_image_size(image_size)
    scene = scene or SceneConfig()
    if not isinstance(scene, SceneConfig):
        raise TypeError(
            f"generate_synthetic_panoptic: scene must be a SceneConfig, got {type(scene)}")
    params = _manifest_params(int(seed), int(num_train), int(num_val), image_size, scene)
    counts = {"train": int(num_train), "val": int(num_val)}
    _refuse_other_variant(root, params)
    if not force:
        manifest = _existing_manifest(root, params, counts)
        if manifest is not None:
            return {**manifest, "generated": False, "root": root}

    _remove_outputs(root, delete_foreign=delete_foreign)
    os.makedirs(root, exist_ok=True)
    stats = {split: _write_split(root, split, n, int(seed), image_size, scene, progress)
             for split, n in counts.items()}
    manifest = {"params": params, "stats": stats}
    with open(os.path.join(root, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)
    return {**manifest, "generated": True, "root": root}


def ensure_synthetic_panoptic(datasets_root: Optional[str] = None, variant: str = "default", **kwargs) -> dict:
    """Make sure the dataset exists where the default registrations look:
    ``<datasets_root>/synthetic_panoptic`` (``variant="small"``:
    ``<datasets_root>/synthetic_panoptic_small``, see :data:`SMALL_VARIANT`; ``"dense"``:
    :data:`DENSE_VARIANT`), ``datasets_root``
    defaulting to ``$DETECTRON2_DATASETS`` (then ``datasets/``). A no-op when up to date;
    ``kwargs`` go to :func:`generate_synthetic_panoptic` (over the variant's parameters)."""
    if variant not in VARIANTS:
        raise ValueError(f"ensure_synthetic_panoptic: variant must be one of {sorted(VARIANTS)}, got {variant!r}")
    folder, params = VARIANTS[variant]
    base = datasets_root
    if base is None:
        base = os.getenv("DETECTRON2_DATASETS", "datasets")
    root = os.path.join(os.path.expanduser(os.fspath(base)), folder)
    params = {**params, **kwargs}
    if isinstance(params.get("scene"), dict):  # the catalog stores SceneConfig fields (no import cycle)
        params["scene"] = SceneConfig(**params["scene"])
    return generate_synthetic_panoptic(root, **params)
