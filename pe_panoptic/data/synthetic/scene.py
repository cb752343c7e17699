"""Scene generation: :class:`SceneConfig` and :func:`render_scene`, one image with its panoptic
and semantic labels from a random generator (things, crowd and void layers painted in depth order
over irregular stuff regions)."""
from __future__ import annotations

import dataclasses
import math
from typing import List, NamedTuple, Optional, Sequence, Tuple

import numpy as np
from scipy import ndimage

from pe_panoptic.data.synthetic.catalog import CONTIGUOUS_ID, IGNORE_LABEL, STUFF_CATEGORIES, THING_CATEGORIES
from pe_panoptic.data.synthetic.drawing import (
    Texture,
    blob_mask,
    pixel_grid,
    shape_extent,
    shape_mask,
    smooth_noise,
    stuff_texture,
    thing_texture,
    void_texture,
    windowed_mask,
)

__all__ = ["SceneConfig", "SyntheticSample", "paint_labels", "render_scene"]


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
            ext = shape_extent(THING_CATEGORIES[cls]["name"], size)
            phi = rng.uniform(0, 2 * np.pi)
            dist = (ext + ext0) * rng.uniform(0.55, 0.85)
            center = (c0[0] + dist * np.cos(phi), c0[1] + dist * np.sin(phi))
        else:
            cls = int(rng.integers(len(THING_CATEGORIES)))
            ext = shape_extent(THING_CATEGORIES[cls]["name"], size)
            center = (rng.uniform(0, w), rng.uniform(0, h))
        cat = THING_CATEGORIES[cls]
        mask = shape_mask(grid, cat["name"], center, size, rng.uniform(0, 2 * np.pi))
        placed.append((cls, center, ext))
        layers.append(_Layer(mask, thing_texture(cat["color"], rng, center, ext), cat["id"], 0))
    return layers


def _crowd_layer(rng, grid, cfg: SceneConfig) -> _Layer:
    """Several small same-class shapes around one point, lumped into one ``iscrowd`` segment."""
    h, w = grid[0].shape
    cat = THING_CATEGORIES[int(rng.integers(len(THING_CATEGORIES)))]
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
    stuff = [STUFF_CATEGORIES[i] for i in sorted(rng.choice(len(STUFF_CATEGORIES), size=n_stuff, replace=False))]
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
    sem_lut = np.array([IGNORE_LABEL] + [CONTIGUOUS_ID[int(cat_of[l])] for l in labels], np.uint8)
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

