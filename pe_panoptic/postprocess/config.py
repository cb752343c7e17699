"""Configuration of the post-processing: decoder choice and thresholds (:class:`PostProcessConfig`).

Areas (``min_instance_area``, ``min_stuff_area``, ``min_votes``) are FRACTIONS of the number of
pixels of the maps passed in (``h * w``), so one config works at every output resolution; e.g.
``1e-4`` is 33 pixels of a 576 x 576 output (1008 px input).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Optional, Tuple

__all__ = ["DECODERS", "VOID_SOURCES", "PostProcessConfig", "resolve_cfg"]

DECODERS = ("nn", "vote", "painter")
VOID_SOURCES = ("instance", "semantic")


@dataclass
class PostProcessConfig:
    """Thresholds of the post-processing (they live in the model config).

    Areas and vote counts are fractions of the output map's pixel count ``h * w``. Provenance of
    each field: [paper] stated in the paper; [ours] the paper does not say (docs/experiments.md
    "Post-processing: the default, measured" gives the measurements behind the choices).

    The dataclass default ``decoder="nn"`` is the paper's decoding (nearest grid search + a merge
    "similar to Painter"); the project's model config (``configs/common/models/pe_panoptic.py``)
    uses ``"vote"``, which scored the highest PQ_th on trained outputs in every measurement
    (docs/experiments.md); the paper-row configs keep ``"nn"``.
    """

    #: [paper] "nn"; [ours] "vote" and "painter" (Matrix NMS as in Painter / SOLOv2)
    decoder: str = "nn"
    #: [paper] (gh, gw) decoding grid: 80 x 80 for COCO, 160 x 320 for Cityscapes (paper Sec. 5)
    grid: Tuple[int, int] = (80, 80)
    #: [paper] which output says that a pixel belongs to no instance: "instance" (the paper: the void
    #: code competes in the nearest-neighbour search) or "semantic" (as in Panoptic-DeepLab:
    #: every pixel whose semantic argmax is a thing class takes its nearest grid cell, all other
    #: pixels are void for instances). See the module doc.
    void_source: str = "instance"
    #: [ours] "nn": Chebyshev radius (cells) within which a smaller candidate merges into a larger
    #: one. Measured (docs/experiments.md): radius 0 splits a trained model's instances into fragments (PQ_th
    #: 4.2 against 28.8 with radius 1 on synthetic val, 9.8 against 17.7 on the dense variant)
    merge_radius: int = 1
    #: [ours] instances smaller than this fraction of the image become void (all decoders)
    min_instance_area: float = 1e-4
    #: [ours] an instance is kept if >= this fraction of its pixels have a thing class as semantic
    #: argmax (the paper's merge of semantic and instance outputs is not specified)
    thing_fraction: float = 0.5
    #: [ours] stuff classes covering less than this fraction of the image become void (as
    #: Panoptic-DeepLab's stuff area threshold)
    min_stuff_area: float = 1e-3
    #: [ours, all "vote" fields] max-pool window of the peak search (peaks closer than kernel // 2
    #: cells merge)
    peak_kernel: int = 3
    #: "vote": box filter applied to the vote histogram before the peak search (1 = none).
    #: A 3x3 box merges instances whose centroids are two cells apart (their middle cell gets
    #: both vote counts), so the default is 1.
    vote_smooth_kernel: int = 1
    #: "vote": a peak needs at least this fraction of the image's pixels as (smoothed) votes
    min_votes: float = 1e-4
    #: "vote": voted cells farther than this (Euclidean, cells) from every peak become void
    assign_radius: float = 1.5
    #: "painter": a mask more than this fraction covered by already pasted masks is skipped
    overlap_thresh: float = 0.5
    #: "painter": a candidate's mask includes the pixels decoded within this many cells
    painter_cell_radius: int = 1
    #: "painter": Gaussian Matrix NMS sigma (SOLOv2 / Painter use 2.0)
    matrix_nms_sigma: float = 2.0
    #: "painter": candidates kept (by score) before Matrix NMS (Painter: 2000)
    painter_pre_nms_topk: int = 2000
    #: "painter": masks kept (by decayed score) after Matrix NMS (Painter: 100)
    painter_max_instances: int = 100
    #: "painter": masks whose decayed score is below this are dropped
    painter_score_thresh: float = 0.0

    def __post_init__(self):
        def bad(name, why):
            raise ValueError(f"PostProcessConfig.{name}={getattr(self, name)!r}: {why}")

        if self.decoder not in DECODERS:
            bad("decoder", f"unknown decoder; choose one of {DECODERS}")
        if self.void_source not in VOID_SOURCES:
            bad("void_source", f"choose one of {VOID_SOURCES}")
        grid = tuple(self.grid)
        if len(grid) != 2 or not all(isinstance(g, int) and g >= 1 for g in grid):
            bad("grid", "must be two positive ints (gh, gw)")
        self.grid = (int(grid[0]), int(grid[1]))
        for name in ("merge_radius", "painter_cell_radius"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 0:
                bad(name, "must be an int >= 0")
        for name in ("peak_kernel", "vote_smooth_kernel"):
            k = getattr(self, name)
            if not isinstance(k, int) or k < 1 or k % 2 == 0:
                bad(name, "must be an odd int >= 1")
        for name in ("min_instance_area", "min_stuff_area", "min_votes", "thing_fraction", "overlap_thresh"):
            if not 0.0 <= float(getattr(self, name)) <= 1.0:
                bad(name, "must be a fraction in [0, 1]")
        if self.assign_radius < 0:
            bad("assign_radius", "must be >= 0")
        if self.matrix_nms_sigma <= 0:
            bad("matrix_nms_sigma", "must be > 0")
        for name in ("painter_pre_nms_topk", "painter_max_instances"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                bad(name, "must be an int >= 1")


def resolve_cfg(cfg: Optional[PostProcessConfig], overrides: dict) -> PostProcessConfig:
    """``cfg`` (default: :class:`PostProcessConfig`) with the keyword ``overrides`` of its fields."""
    if cfg is None:
        cfg = PostProcessConfig()
    elif not isinstance(cfg, PostProcessConfig):
        raise TypeError(f"cfg must be a PostProcessConfig, got {type(cfg).__name__}")
    return dataclasses.replace(cfg, **overrides) if overrides else cfg
