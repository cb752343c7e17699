"""Built-in synthetic panoptic dataset, written in COCO panoptic format.

A procedural, seed-deterministic stand-in for COCO panoptic that a tiny model can learn on a CPU
in minutes, yet contains what makes panoptic segmentation hard:

* 4 thing classes (``disk``, ``square``, ``triangle``, ``ring``) with a class colour jittered per
  instance plus shading and pixel noise; 2-8 instances per image, sizes log-uniform between
  ~8 px and ~64 px (``size`` = square root of the unoccluded area); same-class instances placed
  touching / overlapping; painted in depth order so an occluded instance keeps only its visible
  pixels; instances whose visible area is tiny become void.
* 3 textured stuff classes (``sky``: smooth clouds, ``grass``: stripes, ``wall``: checker) over
  irregular regions (argmax of low-frequency noise fields); one segment per class per image.
* void regions (panoptic id 0; irregular blobs of grey high-frequency noise, at a random depth so
  they may occlude things) and crowd regions (``iscrowd=1``: several small shapes of one thing
  class lumped into one segment).

On disk (under ``root``, normally ``$DETECTRON2_DATASETS/synthetic_panoptic``)::

    {split}/000000000001.jpg                   RGB image (JPEG: detectron2's COCO panoptic
                                               loader hard-codes the ".jpg" extension)
    panoptic_{split}/000000000001.png          COCO panoptic PNG (id = R + 256 G + 256^2 B,
                                               random segment ids as in COCO, 0 = void)
    panoptic_semseg_{split}/000000000001.png   semantic PNG: contiguous class id, 255 = void
                                               (crowd pixels carry their class, as in the
                                               panoptic->semantic converters for COCO)
    annotations/panoptic_{split}.json          COCO panoptic JSON (images, annotations with
                                               segments_info, categories with isthing/color)
    annotations/instances_{split}.json         COCO instances JSON (RLE masks of the things),
                                               the ``json_file`` of the metadata
    manifest.json                              generation parameters (idempotence)

Categories use non-contiguous dataset ids (things 1-4, stuff 11-13) so that code which confuses
dataset ids with contiguous ids fails here as it would on COCO. Registration mirrors detectron2's
"standard" COCO panoptic registration (``coco_2017_val_panoptic``): one contiguous id space over
all categories in category-list order, dataset dicts from
:func:`detectron2.data.datasets.coco_panoptic.load_coco_panoptic_json`, plus ``sem_seg_root`` /
``sem_seg_file_name`` so that :class:`detectron2.evaluation.SemSegEvaluator` works too.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
from typing import Callable, Dict, List, NamedTuple, Optional, Sequence, Tuple

import cv2
import numpy as np
from PIL import Image
from scipy import ndimage

__all__ = [
    "SYNTHETIC_CATEGORIES",
    "SPLITS",
    "SceneConfig",
    "SyntheticSample",
    "synthetic_panoptic_metadata",
    "default_synthetic_root",
    "synthetic_split_paths",
    "render_scene",
    "generate_synthetic_panoptic",
    "ensure_synthetic_panoptic",
    "load_synthetic_panoptic",
    "register_synthetic_panoptic",
    "register_all_synthetic_panoptic",
]

#: Bump when the rendering changes, so that existing datasets are regenerated.
GENERATOR_VERSION = 1

SPLITS = ("train", "val")
_SPLIT_CODE = {"train": 0, "val": 1}

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
_THINGS = tuple(c for c in SYNTHETIC_CATEGORIES if c["isthing"])
_STUFF = tuple(c for c in SYNTHETIC_CATEGORIES if not c["isthing"])
_THING_IDS = frozenset(c["id"] for c in _THINGS)
_CONTIGUOUS = {c["id"]: i for i, c in enumerate(SYNTHETIC_CATEGORIES)}
_VOID_GREY = 128.0
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
        "thing_dataset_id_to_contiguous_id": {c["id"]: _CONTIGUOUS[c["id"]] for c in _THINGS},
        "stuff_dataset_id_to_contiguous_id": dict(_CONTIGUOUS),
    }


def default_synthetic_root() -> str:
    """``$DETECTRON2_DATASETS/synthetic_panoptic`` (``datasets/`` if unset, as in detectron2)."""
    return os.path.join(os.path.expanduser(os.getenv("DETECTRON2_DATASETS", "datasets")),
                        "synthetic_panoptic")


def _check_split(split: str, what: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"{what}: split must be one of {SPLITS}, got {split!r}")


def synthetic_split_paths(root: str, split: str) -> Dict[str, str]:
    """Paths of one split: ``image_root``, ``panoptic_root``, ``sem_seg_root``, ``panoptic_json``,
    ``instances_json``."""
    _check_split(split, "synthetic_split_paths")
    return {
        "image_root": os.path.join(root, split),
        "panoptic_root": os.path.join(root, f"panoptic_{split}"),
        "sem_seg_root": os.path.join(root, f"panoptic_semseg_{split}"),
        "panoptic_json": os.path.join(root, "annotations", f"panoptic_{split}.json"),
        "instances_json": os.path.join(root, "annotations", f"instances_{split}.json"),
    }


# ----------------------------------------------------------------------------------------------
# scene configuration
# ----------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class SceneConfig:
    """Knobs of the procedural scenes (sizes in pixels; ``size`` = sqrt of unoccluded area)."""

    min_instances: int = 2
    max_instances: int = 8
    min_size: float = 8.0
    max_size: float = 64.0
    #: probability that an instance is placed touching/overlapping an earlier same-class one
    touch_prob: float = 0.35
    #: probability that an image contains one crowd region
    crowd_prob: float = 0.3
    crowd_parts: Tuple[int, int] = (5, 12)
    crowd_part_size: Tuple[float, float] = (5.0, 10.0)
    crowd_spread: Tuple[float, float] = (6.0, 14.0)
    #: probability that an image contains void blobs, and their count / radius ranges
    void_prob: float = 0.6
    max_void_blobs: int = 2
    void_radius: Tuple[float, float] = (8.0, 32.0)
    #: segments (things, crowd, stuff) with fewer visible pixels become void
    min_visible_area: int = 16
    #: probabilities of 1, 2, 3 stuff classes in an image
    stuff_count_probs: Tuple[float, float, float] = (0.15, 0.45, 0.40)

    def __post_init__(self):
        def bad(field, why):
            raise ValueError(f"SceneConfig.{field}: {why} (got {getattr(self, field)!r})")

        if not 1 <= self.min_instances <= self.max_instances:
            bad("max_instances", "need 1 <= min_instances <= max_instances")
        if not 0 < self.min_size <= self.max_size:
            bad("min_size", "need 0 < min_size <= max_size")
        for f in ("touch_prob", "crowd_prob", "void_prob"):
            if not 0.0 <= getattr(self, f) <= 1.0:
                bad(f, "must be a probability in [0, 1]")
        for f in ("crowd_parts", "crowd_part_size", "crowd_spread", "void_radius"):
            lo, hi = getattr(self, f)
            if not 0 < lo <= hi:
                bad(f, "must be a range (lo, hi) with 0 < lo <= hi")
        if self.max_void_blobs < 1:
            bad("max_void_blobs", "must be >= 1")
        if self.min_visible_area < 1:
            bad("min_visible_area", "must be >= 1")
        p = self.stuff_count_probs
        if len(p) != 3 or min(p) < 0 or not math.isclose(sum(p), 1.0, abs_tol=1e-6):
            bad("stuff_count_probs", "must be 3 non-negative probabilities summing to 1")


# ----------------------------------------------------------------------------------------------
# geometry: boolean masks from a coordinate grid (pixel centers at integer coordinates)
# ----------------------------------------------------------------------------------------------
def pixel_grid(height: int, width: int) -> Tuple[np.ndarray, np.ndarray]:
    """``(yy, xx)`` float32 coordinate grids of shape ``[H, W]``."""
    yy, xx = np.mgrid[0:height, 0:width]
    return yy.astype(np.float32), xx.astype(np.float32)


def disk_mask(grid, center, radius: float) -> np.ndarray:
    yy, xx = grid
    return (xx - center[0]) ** 2 + (yy - center[1]) ** 2 <= radius ** 2


def ring_mask(grid, center, r_out: float, r_in: float) -> np.ndarray:
    yy, xx = grid
    d2 = (xx - center[0]) ** 2 + (yy - center[1]) ** 2
    return (d2 <= r_out ** 2) & (d2 > r_in ** 2)


def regular_polygon(center, circumradius: float, n: int, angle: float) -> np.ndarray:
    """``[n, 2]`` (x, y) vertices with increasing polar angle."""
    phi = angle + 2.0 * np.pi * np.arange(n) / n
    return np.stack([center[0] + circumradius * np.cos(phi),
                     center[1] + circumradius * np.sin(phi)], axis=1)


def convex_polygon_mask(grid, vertices: np.ndarray) -> np.ndarray:
    """Pixels inside a convex polygon whose vertices have increasing polar angle (all edge cross
    products non-negative)."""
    yy, xx = grid
    a = vertices[:, None, None, :]
    e = (np.roll(vertices, -1, axis=0) - vertices)[:, None, None, :]
    cross = e[..., 0] * (yy[None] - a[..., 1]) - e[..., 1] * (xx[None] - a[..., 0])
    return (cross >= 0).all(axis=0)


def blob_mask(grid, center, radius: float, amps: np.ndarray, phases: np.ndarray) -> np.ndarray:
    """Irregular star-shaped blob: ``r(theta) = radius * (1 + sum_k a_k cos(k theta + p_k))``,
    harmonics ``k = 2 .. len(amps) + 1``."""
    yy, xx = grid
    dx, dy = xx - center[0], yy - center[1]
    theta = np.arctan2(dy, dx)
    k = np.arange(2, len(amps) + 2, dtype=np.float32)[:, None, None]
    wobble = (amps[:, None, None] * np.cos(k * theta[None] + phases[:, None, None])).sum(0)
    r = radius * (1.0 + wobble)
    return dx ** 2 + dy ** 2 <= r ** 2


def shape_extent(name: str, size: float) -> float:
    """Circumradius of a thing of class ``name`` whose unoccluded area is ``size ** 2``."""
    if name == "disk":
        return size / math.sqrt(math.pi)
    if name == "square":
        return size / math.sqrt(2.0)
    if name == "triangle":  # equilateral: area = 3 sqrt(3) / 4 R^2
        return size * math.sqrt(4.0 / (3.0 * math.sqrt(3.0)))
    if name == "ring":  # annulus with r_in = 0.5 R: area = pi R^2 (1 - 0.25)
        return size / math.sqrt(0.75 * math.pi)
    raise ValueError(f"shape_extent: unknown thing class {name!r}")


def windowed_mask(grid, center, radius: float, mask_fn: Callable) -> np.ndarray:
    """Full-image mask of ``mask_fn(sub_grid)`` evaluated only on the window of ``grid`` within
    ``radius`` of ``center`` (``mask_fn`` must be False outside that disk)."""
    yy, xx = grid
    h, w = yy.shape
    y0 = max(int(math.floor(center[1] - radius)), 0)
    y1 = min(int(math.ceil(center[1] + radius)) + 1, h)
    x0 = max(int(math.floor(center[0] - radius)), 0)
    x1 = min(int(math.ceil(center[0] + radius)) + 1, w)
    mask = np.zeros((h, w), bool)
    if y0 < y1 and x0 < x1:
        mask[y0:y1, x0:x1] = mask_fn((yy[y0:y1, x0:x1], xx[y0:y1, x0:x1]))
    return mask


def shape_mask(grid, name: str, center, size: float, angle: float) -> np.ndarray:
    """Mask of a thing of class ``name``, unoccluded area ~``size ** 2``, rotated by ``angle``."""
    r = shape_extent(name, size)
    if name == "disk":
        fn = lambda g: disk_mask(g, center, r)  # noqa: E731
    elif name == "ring":
        fn = lambda g: ring_mask(g, center, r, 0.5 * r)  # noqa: E731
    else:
        poly = regular_polygon(center, r, 4 if name == "square" else 3, angle)
        fn = lambda g: convex_polygon_mask(g, poly)  # noqa: E731
    return windowed_mask(grid, center, r, fn)


# ----------------------------------------------------------------------------------------------
# textures: callables ``(y, x, rng) -> float32 [N, 3]`` evaluated only at the pixels they paint
# (1-D integer pixel coordinates; ``rng`` supplies the pixel noise). Parameters are drawn on
# creation.
# Values are in 0..255 before clipping when the image is assembled.
# ----------------------------------------------------------------------------------------------
Texture = Callable[[np.ndarray, np.ndarray, np.random.Generator], np.ndarray]


def smooth_noise(rng: np.random.Generator, height: int, width: int, cells: int) -> np.ndarray:
    """Low-frequency noise: a ``cells x cells`` normal field upsampled bicubically to [H, W]."""
    low = rng.standard_normal((cells, cells)).astype(np.float32)
    return cv2.resize(low, (width, height), interpolation=cv2.INTER_CUBIC)


def _pixel_noise(rng: np.random.Generator, n: int, sigma: float) -> np.ndarray:
    return sigma * rng.standard_normal((n, 3), dtype=np.float32)


def stuff_texture(name: str, rng: np.random.Generator, shape: Tuple[int, int]) -> Texture:
    """Texture of a stuff class: sky = vertical gradient + smooth clouds, grass = oriented
    stripes, wall = two-tone checker; each with a little pixel noise."""
    h, w = shape
    base = np.array(next(c["color"] for c in _STUFF if c["name"] == name), np.float32)
    if name == "sky":
        slope = rng.uniform(15, 35) / h
        clouds = 12.0 * np.abs(smooth_noise(rng, h, w, int(rng.integers(3, 6))))

        def paint(y, x, r):
            v = clouds[y, x] - slope * (y - 0.5 * h)
            return base + v[:, None] + _pixel_noise(r, len(y), 3.0)
    elif name == "grass":
        phi, period, phase = rng.uniform(0, np.pi), rng.uniform(5, 9), rng.uniform(0, 2 * np.pi)
        tint = np.array([0.4, 1.0, 0.4], np.float32)

        def paint(y, x, r):
            v = 18.0 * np.sin(2 * np.pi * (x * np.cos(phi) + y * np.sin(phi)) / period + phase)
            return base + v[:, None].astype(np.float32) * tint + _pixel_noise(r, len(y), 8.0)
    elif name == "wall":
        cell, ox, oy = rng.uniform(7, 13), rng.uniform(0, 13), rng.uniform(0, 13)

        def paint(y, x, r):
            checker = (np.floor((x + ox) / cell) + np.floor((y + oy) / cell)) % 2
            v = (28.0 * (checker - 0.5))[:, None].astype(np.float32)
            return base + v + _pixel_noise(r, len(y), 6.0)
    else:
        raise ValueError(f"stuff_texture: unknown stuff class {name!r}")
    return paint


def void_texture() -> Texture:
    """Neutral grey with strong per-pixel noise (distinct from every class)."""

    def paint(y, x, r):
        grey = _VOID_GREY + 40.0 * r.standard_normal(len(y), dtype=np.float32)
        return np.repeat(grey[:, None], 3, axis=1)

    return paint


def thing_texture(color, rng: np.random.Generator, center, extent: float) -> Texture:
    """Class colour + per-instance jitter + linear shading across the instance + pixel noise."""
    psi, amp = rng.uniform(0, 2 * np.pi), rng.uniform(0, 15)
    rgb = np.asarray(color, np.float32) + rng.uniform(-18, 18, size=3).astype(np.float32)
    scale = 1.0 / max(extent, 1.0)

    def paint(y, x, r):
        ramp = ((x - center[0]) * np.cos(psi) + (y - center[1]) * np.sin(psi)) * scale
        v = (amp * np.clip(ramp, -1, 1))[:, None].astype(np.float32)
        return rgb + v + _pixel_noise(r, len(y), 6.0)

    return paint


# ----------------------------------------------------------------------------------------------
# scene composition
# ----------------------------------------------------------------------------------------------
class _Layer(NamedTuple):
    mask: np.ndarray  # bool [H, W], unoccluded footprint
    texture: Texture
    category_id: int  # dataset id; 0 for void
    iscrowd: int


class SyntheticSample(NamedTuple):
    """One rendered image with its labels."""

    image: np.ndarray  # uint8 [H, W, 3] RGB
    panoptic: np.ndarray  # int32 [H, W] segment ids (0 = void)
    semantic: np.ndarray  # uint8 [H, W] contiguous class ids (255 = void)
    segments_info: List[dict]  # COCO panoptic: id, category_id (dataset id), iscrowd, area, bbox


def _thing_layers(rng, grid, cfg: SceneConfig) -> List[_Layer]:
    """Non-crowd thing instances in depth order (back to front)."""
    h, w = grid[0].shape
    placed = []  # (class index, center, extent)
    layers = []
    for _ in range(int(rng.integers(cfg.min_instances, cfg.max_instances + 1))):
        size = float(np.exp(rng.uniform(np.log(cfg.min_size), np.log(cfg.max_size))))
        if placed and rng.random() < cfg.touch_prob:
            cls, c0, ext0 = placed[int(rng.integers(len(placed)))]
            ext = shape_extent(_THINGS[cls]["name"], size)
            phi = rng.uniform(0, 2 * np.pi)
            dist = (ext + ext0) * rng.uniform(0.55, 0.85)
            center = (c0[0] + dist * np.cos(phi), c0[1] + dist * np.sin(phi))
        else:
            cls = int(rng.integers(len(_THINGS)))
            ext = shape_extent(_THINGS[cls]["name"], size)
            center = (rng.uniform(0, w), rng.uniform(0, h))
        cat = _THINGS[cls]
        mask = shape_mask(grid, cat["name"], center, size, rng.uniform(0, 2 * np.pi))
        placed.append((cls, center, ext))
        layers.append(_Layer(mask, thing_texture(cat["color"], rng, center, ext), cat["id"], 0))
    return layers


def _crowd_layer(rng, grid, cfg: SceneConfig) -> _Layer:
    """Several small same-class shapes around one point, lumped into one ``iscrowd`` segment."""
    h, w = grid[0].shape
    cat = _THINGS[int(rng.integers(len(_THINGS)))]
    center = np.array([rng.uniform(0, w), rng.uniform(0, h)])
    spread = rng.uniform(*cfg.crowd_spread)
    n = int(rng.integers(cfg.crowd_parts[0], cfg.crowd_parts[1] + 1))
    mask = np.zeros((h, w), bool)
    for c in center + spread * rng.standard_normal((n, 2)):
        size, angle = rng.uniform(*cfg.crowd_part_size), rng.uniform(0, 2 * np.pi)
        mask |= shape_mask(grid, cat["name"], c, size, angle)
    return _Layer(mask, thing_texture(cat["color"], rng, center, 2 * spread), cat["id"], 1)


def _void_layers(rng, grid, cfg: SceneConfig) -> List[_Layer]:
    h, w = grid[0].shape
    layers = []
    for _ in range(int(rng.integers(1, cfg.max_void_blobs + 1))):
        center = (rng.uniform(0, w), rng.uniform(0, h))
        amps = rng.uniform(0, 0.25, size=3).astype(np.float32)
        phases = rng.uniform(0, 2 * np.pi, size=3).astype(np.float32)
        radius = rng.uniform(*cfg.void_radius)
        mask = windowed_mask(grid, center, radius * (1.0 + amps.sum()),
                             lambda g: blob_mask(g, center, radius, amps, phases))
        layers.append(_Layer(mask, void_texture(), 0, 0))
    return layers


def _insert_at_random_depth(rng, layers: List[_Layer], extra: Sequence[_Layer]) -> List[_Layer]:
    layers = list(layers)
    for layer in extra:
        layers.insert(int(rng.integers(len(layers) + 1)), layer)
    return layers


def paint_labels(labels: np.ndarray, textures: Sequence[Optional[Texture]],
                 rng: np.random.Generator) -> np.ndarray:
    """float32 [H, W, 3] image where the pixels of label ``k`` are painted by ``textures[k]``
    (``None``: left black). One stable sort groups the pixels of all labels."""
    h, w = labels.shape
    flat = labels.ravel()
    order = np.argsort(flat, kind="stable")
    counts = np.bincount(flat, minlength=len(textures))
    ends = np.cumsum(counts)
    starts = ends - counts
    image = np.zeros((h * w, 3), np.float32)
    for texture, a, b in zip(textures, starts, ends):
        idx = order[a:b]
        if texture is not None and len(idx):
            image[idx] = texture(idx // w, idx % w, rng)
    return image.reshape(h, w, 3)


def render_scene(rng: np.random.Generator, image_size: Tuple[int, int],
                 cfg: Optional[SceneConfig] = None) -> SyntheticSample:
    """Render one image and its panoptic / semantic labels from ``rng``.

    Labels are computed on a compact map (0 = void, 1..S stuff classes, S+1.. layers) painted in
    depth order, so each segment keeps exactly its visible pixels; segments with fewer than
    ``cfg.min_visible_area`` visible pixels become void; survivors get random unique COCO-style
    segment ids in ``[1, 2^24)``. ``area`` is the exact pixel count and ``bbox`` the tight box
    ``[x, y, w, h]`` (w = x_max - x_min + 1, as panopticapi computes it).
    """
    cfg = cfg or SceneConfig()
    h, w = image_size
    grid = pixel_grid(h, w)

    # stuff: argmax of one low-frequency field per present class -> irregular regions
    n_stuff = int(rng.choice(3, p=cfg.stuff_count_probs)) + 1
    stuff = [_STUFF[i] for i in sorted(rng.choice(len(_STUFF), size=n_stuff, replace=False))]
    fields = np.stack([smooth_noise(rng, h, w, int(rng.integers(2, 5))) for _ in stuff])
    compact = (fields.argmax(0) + 1).astype(np.int32)
    textures = [stuff_texture(cat["name"], rng, (h, w)) for cat in stuff]

    # things, crowd and void blobs, back to front: later layers overwrite earlier ones
    layers = _thing_layers(rng, grid, cfg)
    extra = []
    if rng.random() < cfg.crowd_prob:
        extra.append(_crowd_layer(rng, grid, cfg))
    if rng.random() < cfg.void_prob:
        extra.extend(_void_layers(rng, grid, cfg))
    layers = _insert_at_random_depth(rng, layers, extra)
    for j, layer in enumerate(layers):
        compact[layer.mask] = len(stuff) + 1 + j
    textures += [layer.texture for layer in layers]
    image = paint_labels(compact, [None] + textures, rng)

    # per compact label: dataset category (0 = void), iscrowd, visible area
    cat_of = np.array([0] + [c["id"] for c in stuff] + [l.category_id for l in layers], np.int64)
    crowd_of = np.array([0] * (1 + len(stuff)) + [l.iscrowd for l in layers], np.int64)
    area = np.bincount(compact.ravel(), minlength=len(cat_of))
    keep = (cat_of > 0) & (area >= cfg.min_visible_area)
    keep[0] = False
    labels = np.flatnonzero(keep)
    relabel = np.zeros(len(cat_of), np.int32)
    relabel[labels] = np.arange(1, len(labels) + 1)
    compact = relabel[compact]  # 0 = void, 1..K kept segments

    ids = rng.choice(2 ** 24 - 1, size=len(labels), replace=False).astype(np.int64) + 1
    id_lut = np.concatenate([[0], ids]).astype(np.int32)
    sem_lut = np.array([IGNORE_LABEL] + [_CONTIGUOUS[int(cat_of[l])] for l in labels], np.uint8)
    boxes = ndimage.find_objects(compact, max_label=len(labels))
    segments = [
        {
            "id": int(ids[k]),
            "category_id": int(cat_of[l]),
            "iscrowd": int(crowd_of[l]),
            "area": int(area[l]),
            "bbox": [int(sx.start), int(sy.start),
                     int(sx.stop - sx.start), int(sy.stop - sy.start)],
        }
        for k, (l, (sy, sx)) in enumerate(zip(labels, boxes))
    ]
    pixels = np.clip(np.rint(image), 0, 255).astype(np.uint8)
    return SyntheticSample(pixels, id_lut[compact], sem_lut[compact], segments)


# ----------------------------------------------------------------------------------------------
# writing
# ----------------------------------------------------------------------------------------------
def _image_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """Independent stream per (seed, split, image): image i does not depend on the split size."""
    return np.random.default_rng(np.random.SeedSequence([seed, _SPLIT_CODE[split], index]))


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
            if seg["category_id"] in _THING_IDS:
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
    info = {"description": "pe_panoptic synthetic panoptic dataset",
            "version": str(GENERATOR_VERSION), "seed": seed, "split": split}
    categories = [dict(c) for c in SYNTHETIC_CATEGORIES]
    with open(paths["panoptic_json"], "w") as f:
        json.dump({"info": info, "images": images, "annotations": pan_anns,
                   "categories": categories}, f)
    with open(paths["instances_json"], "w") as f:
        json.dump({"info": info, "images": images, "annotations": inst_anns,
                   "categories": [{k: c[k] for k in ("id", "name", "supercategory")}
                                  for c in _THINGS]}, f)
    return stats


def _manifest_params(seed, num_train, num_val, image_size, cfg: SceneConfig) -> dict:
    params = {"generator_version": GENERATOR_VERSION, "seed": seed, "num_train": num_train,
              "num_val": num_val, "image_size": list(image_size), "scene": dataclasses.asdict(cfg)}
    return json.loads(json.dumps(params))  # tuples -> lists, as read back from disk


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


def _remove_outputs(root: str) -> None:
    """Delete only what this generator writes (never anything else under ``root``)."""
    manifest = os.path.join(root, "manifest.json")
    if os.path.isfile(manifest):
        os.remove(manifest)
    for split in SPLITS:
        p = synthetic_split_paths(root, split)
        for key in ("image_root", "panoptic_root", "sem_seg_root"):
            if os.path.isdir(p[key]):
                shutil.rmtree(p[key])
        for key in ("panoptic_json", "instances_json"):
            if os.path.isfile(p[key]):
                os.remove(p[key])


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
                                progress: bool = False) -> dict:
    """Write the synthetic dataset (both splits) in COCO panoptic format under ``root``.

    Deterministic: image ``i`` of a split depends only on ``(seed, split, i)``, ``image_size``
    and ``scene``; the files are byte-identical across runs. Idempotent: if ``root/manifest.json``
    records the same parameters and all files are present, nothing is written; otherwise earlier
    outputs of this generator under ``root`` are removed and everything is regenerated (the
    manifest is written last, so an interrupted run is redone). 168 = 12 * 14 fits DINOv2's
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
    if not force:
        manifest = _existing_manifest(root, params, counts)
        if manifest is not None:
            return {**manifest, "generated": False, "root": root}

    _remove_outputs(root)
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
    ``<datasets_root>/synthetic_panoptic_small``, see :data:`SMALL_VARIANT`), ``datasets_root``
    defaulting to ``$DETECTRON2_DATASETS`` (then ``datasets/``). A no-op when up to date;
    ``kwargs`` go to :func:`generate_synthetic_panoptic` (over the variant's parameters)."""
    if variant not in VARIANTS:
        raise ValueError(f"ensure_synthetic_panoptic: variant must be one of {sorted(VARIANTS)}, got {variant!r}")
    folder, params = VARIANTS[variant]
    base = datasets_root
    if base is None:
        base = os.getenv("DETECTRON2_DATASETS", "datasets")
    root = os.path.join(os.path.expanduser(os.fspath(base)), folder)
    return generate_synthetic_panoptic(root, **{**params, **kwargs})


# ----------------------------------------------------------------------------------------------
# detectron2 registration
# ----------------------------------------------------------------------------------------------
def load_synthetic_panoptic(root: str, split: str) -> List[dict]:
    """Dataset dicts of one split, exactly as detectron2 builds them for COCO panoptic
    (``load_coco_panoptic_json``: contiguous ``category_id`` and ``isthing`` in
    ``segments_info``), plus ``sem_seg_file_name``; the files are checked first
    (:func:`pe_panoptic.data.validation.validate_coco_panoptic`)."""
    from detectron2.data.datasets.coco_panoptic import load_coco_panoptic_json

    from .validation import validate_coco_panoptic

    paths = synthetic_split_paths(root, split)
    missing = [p for k, p in paths.items() if not os.path.exists(p)]
    if missing:
        raise FileNotFoundError(
            f"synthetic panoptic split {split!r} not found under {root!r} (missing {missing[0]}). "
            f"Generate it with: python datasets/prepare_synthetic.py --root {root}")
    validate_coco_panoptic(paths["panoptic_json"], paths["image_root"], paths["panoptic_root"],
                           synthetic_panoptic_metadata())
    dicts = load_coco_panoptic_json(paths["panoptic_json"], paths["image_root"],
                                    paths["panoptic_root"], synthetic_panoptic_metadata())
    for d in dicts:
        d["sem_seg_file_name"] = os.path.join(paths["sem_seg_root"],
                                              os.path.basename(d["pan_seg_file_name"]))
    return dicts


def register_synthetic_panoptic(name: str, root: str, split: str) -> None:
    """Register split ``split`` of the synthetic dataset at ``root`` as ``name``.

    Same metadata fields as detectron2's ``coco_2017_val_panoptic`` (via
    ``register_coco_panoptic``) plus ``sem_seg_root``. Lazy: files are read when the
    ``DatasetCatalog`` entry is called.
    """
    from detectron2.data import DatasetCatalog, MetadataCatalog

    from .validation import mark_validated

    _check_split(split, "register_synthetic_panoptic")
    if name in DatasetCatalog.list():
        raise ValueError(f"register_synthetic_panoptic: dataset {name!r} is already registered")
    root = os.fspath(root)
    paths = synthetic_split_paths(root, split)
    DatasetCatalog.register(name, lambda: load_synthetic_panoptic(root, split))
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


#: The small variant ``synthetic_panoptic_small_{train,val}`` (folder ``synthetic_panoptic_small``):
#: 32 / 16 images at 112 px, for the from-scratch learning probe ``configs/synthetic/pe_probe.py``
#: (memorization of the training images vs generalization to unseen ones). Generate it with
#: ``ensure_synthetic_panoptic(variant="small")`` or ``datasets/prepare_synthetic.py --variant small``.
SMALL_VARIANT = dict(seed=3, num_train=32, num_val=16, image_size=(112, 112))
VARIANTS = {"default": ("synthetic_panoptic", {}), "small": ("synthetic_panoptic_small", SMALL_VARIANT)}


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
                register_synthetic_panoptic(name, vroot, split)


register_all_synthetic_panoptic()
