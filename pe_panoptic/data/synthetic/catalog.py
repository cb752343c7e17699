"""Catalog of the synthetic dataset: categories, metadata, on-disk paths and variants, and its
detectron2 registration (dataset dicts exactly as detectron2 builds them for COCO panoptic)."""
from __future__ import annotations

import os
from typing import Dict, List, Optional, Tuple

__all__ = [
    "GENERATOR_VERSION",
    "SPLITS",
    "SYNTHETIC_CATEGORIES",
    "IGNORE_LABEL",
    "LABEL_DIVISOR",
    "SMALL_VARIANT",
    "DENSE_VARIANT",
    "VARIANTS",
    "synthetic_panoptic_metadata",
    "default_synthetic_root",
    "synthetic_split_paths",
    "load_synthetic_panoptic",
    "register_synthetic_panoptic",
    "register_all_synthetic_panoptic",
]

#: Bump when the rendering changes, so that existing datasets are regenerated.
GENERATOR_VERSION = 1

SPLITS = ("train", "val")
SPLIT_CODE = {"train": 0, "val": 1}

#: Categories in COCO panoptic format; ``color`` is the visualization colour and, for things and
#: stuff, also the base colour the renderer paints with.
SYNTHETIC_CATEGORIES: Tuple[dict, ...] = (
    {"id": 1, "name": "disk", "supercategory": "shape", "isthing": 1, "color": [220, 50, 50]},
    {"id": 2, "name": "square", "supercategory": "shape", "isthing": 1, "color": [240, 200, 40]},
    {"id": 3, "name": "triangle", "supercategory": "shape", "isthing": 1, "color": [190, 60, 210]},
    {"id": 4, "name": "ring", "supercategory": "shape", "isthing": 1, "color": [40, 200, 220]},
    {"id": 11, "name": "sky", "supercategory": "background", "isthing": 0,
     "color": [130, 175, 235]},
    {"id": 12, "name": "grass", "supercategory": "background", "isthing": 0,
     "color": [60, 140, 60]},
    {"id": 13, "name": "wall", "supercategory": "background", "isthing": 0,
     "color": [150, 110, 90]},
)
#: the thing / stuff categories, the thing dataset ids and the contiguous id of every dataset id
THING_CATEGORIES = tuple(c for c in SYNTHETIC_CATEGORIES if c["isthing"])
STUFF_CATEGORIES = tuple(c for c in SYNTHETIC_CATEGORIES if not c["isthing"])
THING_DATASET_IDS = frozenset(c["id"] for c in THING_CATEGORIES)
CONTIGUOUS_ID = {c["id"]: i for i, c in enumerate(SYNTHETIC_CATEGORIES)}
IGNORE_LABEL = 255
LABEL_DIVISOR = 1000


# ----------------------------------------------------------------------------------------------
# metadata and paths
# ----------------------------------------------------------------------------------------------
def synthetic_panoptic_metadata() -> dict:
    """Class metadata in the layout of detectron2's ``coco_panoptic_standard``.

    ``thing_classes``/``stuff_classes`` (and colours) both list *all* categories, indexed by the
    contiguous id (category-list order). ``thing_dataset_id_to_contiguous_id`` holds the thing
    categories. ``stuff_dataset_id_to_contiguous_id`` holds *all* categories (Mask2Former's
    convention for COCO panoptic with semantic labels): detectron2's ``SemSegEvaluator`` maps
    every predicted class through it and fails on thing classes otherwise. Loading is unaffected
    (``load_coco_panoptic_json`` and ``COCOPanopticEvaluator`` consult the thing map first), and
    the thing ids remain ``thing_dataset_id_to_contiguous_id.values()``.
    """
    names = [c["name"] for c in SYNTHETIC_CATEGORIES]
    colors = [list(c["color"]) for c in SYNTHETIC_CATEGORIES]
    return {
        "thing_classes": list(names),
        "thing_colors": [list(c) for c in colors],
        "stuff_classes": list(names),
        "stuff_colors": [list(c) for c in colors],
        "thing_dataset_id_to_contiguous_id": {c["id"]: CONTIGUOUS_ID[c["id"]] for c in THING_CATEGORIES},
        "stuff_dataset_id_to_contiguous_id": dict(CONTIGUOUS_ID),
    }


def default_synthetic_root() -> str:
    """``$DETECTRON2_DATASETS/synthetic_panoptic`` (``datasets/`` if unset, as in detectron2)."""
    return os.path.join(os.path.expanduser(os.getenv("DETECTRON2_DATASETS", "datasets")),
                        "synthetic_panoptic")


def check_split(split: str, what: str) -> None:
    """``ValueError`` naming ``what`` unless ``split`` is one of :data:`SPLITS`."""
    if split not in SPLITS:
        raise ValueError(f"{what}: split must be one of {SPLITS}, got {split!r}")


def synthetic_split_paths(root: str, split: str) -> Dict[str, str]:
    """Paths of one split: ``image_root``, ``panoptic_root``, ``sem_seg_root``, ``panoptic_json``,
    ``instances_json``."""
    check_split(split, "synthetic_split_paths")
    return {
        "image_root": os.path.join(root, split),
        "panoptic_root": os.path.join(root, f"panoptic_{split}"),
        "sem_seg_root": os.path.join(root, f"panoptic_semseg_{split}"),
        "panoptic_json": os.path.join(root, "annotations", f"panoptic_{split}.json"),
        "instances_json": os.path.join(root, "annotations", f"instances_{split}.json"),
    }


#: The small variant ``synthetic_panoptic_small_{train,val}`` (folder ``synthetic_panoptic_small``):
#: 32 / 16 images at 112 px, for the from-scratch learning probe ``configs/synthetic/pe_probe.py``
#: (memorization of the training images vs generalization to unseen ones). Generate it with
#: ``ensure_synthetic_panoptic(variant="small")`` or ``datasets/prepare_synthetic.py --variant small``.
SMALL_VARIANT = dict(seed=3, num_train=32, num_val=16, image_size=(112, 112))
#: The dense variant ``synthetic_panoptic_dense_{train,val}`` (folder ``synthetic_panoptic_dense``):
#: 8-16 small things (8-24 px) per 168 px image, 85% of them placed touching an earlier same-class
#: one (val: 773 touching same-class pairs in 60 images, 73% of them with centroids in the same or
#: adjacent cells of a 16 x 16 grid, 5% on a 48 x 48 grid). It
#: measures the post-processing's merging (docs/experiments.md "Post-processing: the default, measured"); a
#: model trained on the default variant is evaluated on its val split. ``scene`` holds
#: :class:`~pe_panoptic.data.synthetic.scene.SceneConfig` fields.
DENSE_VARIANT = dict(seed=7, num_train=60, num_val=60, image_size=(168, 168),
                     scene=dict(min_instances=8, max_instances=16, min_size=8.0, max_size=24.0, touch_prob=0.85,
                                crowd_prob=0.0))
#: The COCO-scale variant ``synthetic_panoptic_large_{train,val}`` (folder ``synthetic_panoptic_large``):
#: 2-6 things of 14-140 px (1-10 ViT patches of 14 px, as most COCO things at 1008 px) per 224 px
#: image, where most things of the default variant are under one patch. The void study of the
#: paper's instance head runs on it (docs/experiments.md, "Why the ICML void setting stalls").
LARGE_VARIANT = dict(seed=11, num_train=160, num_val=40, image_size=(224, 224),
                     scene=dict(min_instances=2, max_instances=6, min_size=14.0, max_size=140.0,
                                void_radius=(14.0, 56.0), crowd_part_size=(10.0, 20.0),
                                crowd_spread=(12.0, 28.0)))
VARIANTS = {"default": ("synthetic_panoptic", {}), "small": ("synthetic_panoptic_small", SMALL_VARIANT),
            "dense": ("synthetic_panoptic_dense", DENSE_VARIANT), "large": ("synthetic_panoptic_large", LARGE_VARIANT)}


# ----------------------------------------------------------------------------------------------
# detectron2 registration
# ----------------------------------------------------------------------------------------------
def prepare_command(root: str, variant: str = "default") -> str:
    """The command that generates ``variant`` at ``root`` (``datasets/prepare_synthetic.py``)."""
    flag = "" if variant == "default" else f" --variant {variant}"
    return f"python datasets/prepare_synthetic.py --root {root}{flag}"


def _check_variant(root: str, variant: Optional[str]) -> None:
    """Refuse a folder whose manifest holds another named variant than ``variant``."""
    from pe_panoptic.data.synthetic.files import read_manifest_params, variant_of
    from pe_panoptic.data.validation import DatasetError

    params = read_manifest_params(root) if variant else None
    found = variant_of(params) if params else None
    if found and found != variant:
        raise DatasetError(f"{os.path.join(root, 'manifest.json')}: this folder holds the {found!r} synthetic "
                           f"variant ({params['num_train']} / {params['num_val']} images), not {variant!r}; "
                           f"regenerate it with: {prepare_command(root, variant)} --force")


def load_synthetic_panoptic(root: str, split: str, variant: Optional[str] = None) -> List[dict]:
    """Dataset dicts of one split, exactly as detectron2 builds them for COCO panoptic
    (``load_coco_panoptic_json``: contiguous ``category_id`` and ``isthing`` in
    ``segments_info``), plus ``sem_seg_file_name``; the files are checked first
    (:func:`pe_panoptic.data.validation.validate_coco_panoptic`), and with ``variant`` (the
    registered name's variant) a folder holding another variant is refused."""
    from detectron2.data.datasets.coco_panoptic import load_coco_panoptic_json

    from pe_panoptic.data.validation import validate_coco_panoptic

    paths = synthetic_split_paths(root, split)
    _check_variant(root, variant)
    missing = [p for k, p in paths.items() if not os.path.exists(p)]
    if missing:
        raise FileNotFoundError(
            f"synthetic panoptic split {split!r} not found under {root!r} (missing {missing[0]}). "
            f"Generate it with: {prepare_command(root, variant or 'default')}")
    validate_coco_panoptic(paths["panoptic_json"], paths["image_root"], paths["panoptic_root"],
                           synthetic_panoptic_metadata())
    dicts = load_coco_panoptic_json(paths["panoptic_json"], paths["image_root"],
                                    paths["panoptic_root"], synthetic_panoptic_metadata())
    for d in dicts:
        d["sem_seg_file_name"] = os.path.join(paths["sem_seg_root"],
                                              os.path.basename(d["pan_seg_file_name"]))
    return dicts


def register_synthetic_panoptic(name: str, root: str, split: str, variant: Optional[str] = None) -> None:
    """Register split ``split`` of the synthetic dataset at ``root`` as ``name``.

    Same metadata fields as detectron2's ``coco_2017_val_panoptic`` (via
    ``register_coco_panoptic``) plus ``sem_seg_root``. Lazy: files are read when the
    ``DatasetCatalog`` entry is called.
    """
    from detectron2.data import DatasetCatalog, MetadataCatalog

    from pe_panoptic.data.validation import mark_validated

    check_split(split, "register_synthetic_panoptic")
    if name in DatasetCatalog.list():
        raise ValueError(f"register_synthetic_panoptic: dataset {name!r} is already registered")
    root = os.fspath(root)
    paths = synthetic_split_paths(root, split)
    DatasetCatalog.register(name, lambda: load_synthetic_panoptic(root, split, variant))
    mark_validated(name)  # load_synthetic_panoptic validates the files itself
    MetadataCatalog.get(name).set(
        panoptic_root=paths["panoptic_root"],
        image_root=paths["image_root"],
        panoptic_json=paths["panoptic_json"],
        sem_seg_root=paths["sem_seg_root"],
        json_file=paths["instances_json"],
        evaluator_type="coco_panoptic_seg",
        ignore_label=IGNORE_LABEL,
        label_divisor=LABEL_DIVISOR,
        **synthetic_panoptic_metadata(),
    )


def register_all_synthetic_panoptic(root: Optional[str] = None) -> None:
    """Register ``synthetic_panoptic_{train,val}`` and ``synthetic_panoptic_small_{train,val}``
    (skipping names that already exist, so re-imports are harmless). ``root``: the folder of the
    default dataset; the small one lives next to it."""
    from detectron2.data import DatasetCatalog

    root = default_synthetic_root() if root is None else root
    base = os.path.dirname(os.path.abspath(root))
    for variant, (folder, _) in VARIANTS.items():
        vroot = root if variant == "default" else os.path.join(base, folder)
        for split in SPLITS:
            name = f"{folder}_{split}"
            if name not in DatasetCatalog.list():
                register_synthetic_panoptic(name, vroot, split, variant)

