"""Panoptic merge: class-agnostic instances + semantic logits -> detectron2 panoptic output.

The class of an instance is the majority vote of the semantic argmax *restricted to thing
classes* over its pixels; the instance is kept only if at least ``thing_fraction`` of its pixels
have a thing class as full semantic argmax, and then keeps ALL its pixels (the instance head
defines the mask). The remaining pixels take the full semantic argmax if it is a stuff class (one
segment per stuff class; classes covering less than ``min_stuff_area`` become void) and are void
if it is a thing class (thing pixels that belong to no kept instance).

Scores: an instance's score is ``(1 - mean normalized decode distance) * mean softmax
probability of its class`` over its pixels, where the normalized decode distance is the
encoding's distance divided by :func:`pe_panoptic.postprocess.decode_scale` (the distance
between the void code and a grid code) and clipped to [0, 1]; a stuff segment's score is the
mean probability of its class. Scores do not affect PQ.

The output is detectron2's panoptic format ``(panoptic_seg [h, w] int32, segments_info)`` with
``0 = void`` and segment ids ``1..S``; every ``segments_info`` entry has ``id``, ``category_id``
(contiguous), ``isthing``, ``score`` and ``area``.
"""
from __future__ import annotations

import math
from typing import Callable, Dict, List, NamedTuple, Sequence, Tuple

import torch

__all__ = [
    "SemanticMaps",
    "semantic_maps",
    "thing_class_mask",
    "thing_pixel_mask",
    "thing_argmax",
    "vote_instance_classes",
    "instance_class_scores",
    "assemble_panoptic",
    "merge_from_maps",
    "merge_instances_and_semantics",
]


def thing_class_mask(thing_ids, num_classes: int, device) -> torch.Tensor:
    """``[num_classes]`` bool, True at the (contiguous) ``thing_ids``."""
    ids = torch.as_tensor(sorted({int(t) for t in thing_ids}), dtype=torch.long)
    if ids.numel() and (ids.min() < 0 or ids.max() >= num_classes):
        raise ValueError(
            f"thing_ids must be contiguous class ids in [0, {num_classes}), got {ids.tolist()}"
        )
    mask = torch.zeros(num_classes, dtype=torch.bool, device=device)
    mask[ids.to(device)] = True
    return mask


def thing_pixel_mask(sem_logits: torch.Tensor, thing_ids: Sequence[int]) -> torch.Tensor:
    """``[h, w]`` bool: pixels whose semantic argmax (``sem_logits [N, h, w]``) is a thing class
    (the ``thing_pixels`` of :func:`pe_panoptic.postprocess.decode_cells` for ``void_source="semantic"``)."""
    return thing_class_mask(thing_ids, sem_logits.shape[0], sem_logits.device)[sem_logits.argmax(0)]


def _logsumexp0(x: torch.Tensor, x_max: torch.Tensor, chunk: int = 4096) -> torch.Tensor:
    """``torch.logsumexp(x, 0)`` of ``x [N, ...]`` given ``x_max = x.amax(0)``, with the same
    arithmetic (shift by the max, or by 0 where it is infinite). On CPU the shifted
    exponentials are summed ``chunk`` pixels at a time, so the ``N x chunk`` temporary stays in
    cache instead of allocating a full copy of ``x`` (~1.5x faster, identical values)."""
    shift = torch.where(x_max.abs() == math.inf, torch.zeros_like(x_max), x_max)
    if x.device.type != "cpu":
        return (x - shift).exp_().sum(0).log_().add_(shift)
    xf, sf = x.reshape(x.shape[0], -1), shift.reshape(-1)
    out = torch.empty_like(sf)
    for a in range(0, sf.numel(), chunk):
        torch.sum((xf[:, a : a + chunk] - sf[a : a + chunk]).exp_(), 0, out=out[a : a + chunk])
    return out.log_().add_(sf).view_as(shift)


def _select_classes(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """``x[idx]`` for sorted class indices: a view when they are a contiguous range (COCO and
    Cityscapes things are), else an advanced-indexing gather (CPU ``index_select`` over the
    leading dim is pathologically slow)."""
    n = idx.numel()
    if n:
        lo, hi = int(idx[0]), int(idx[-1])
        if hi - lo + 1 == n:
            return x[lo : hi + 1]
    return x[idx]


class SemanticMaps(NamedTuple):
    """Per-pixel statistics of semantic logits ``[N, h, w]``, each ``[h, w]``."""

    max: torch.Tensor  #: float32, the largest logit
    arg: torch.Tensor  #: long, the first class with it (the full semantic argmax)
    lse: torch.Tensor  #: float32, log-sum-exp over the classes


def semantic_maps(sem: torch.Tensor) -> SemanticMaps:
    """:class:`SemanticMaps` of ``sem [N, h, w]`` (computed in float32)."""
    sem = sem.float()
    # max(0) gives the first index of the maximum like argmax(0), and is several times faster on
    # CPU; the log-sum-exp reuses the max (same arithmetic as torch.logsumexp)
    full_max, full_arg = sem.max(0)
    return SemanticMaps(full_max, full_arg, _logsumexp0(sem, full_max))


def thing_argmax(sem_cols: torch.Tensor, thing_idx: torch.Tensor) -> torch.Tensor:
    """Thing-restricted argmax ``[P]`` of the logit columns ``sem_cols [N, P]``: the first thing
    class (of the sorted ``thing_idx``) with the largest logit among the things."""
    return thing_idx[_select_classes(sem_cols, thing_idx).max(0).indices]


def vote_instance_classes(
    inst_map: torch.Tensor,
    num_instances: int,
    full_arg: torch.Tensor,
    thing_arg: torch.Tensor,
    is_thing_cls: torch.Tensor,
    thing_fraction: float,
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Class, keep flag and area ``[M]`` of the instances ``1..M`` of ``inst_map [h, w]``.

    The class is the majority vote of ``thing_arg`` (the thing-restricted semantic argmax; only
    its values at instance pixels matter); an instance is kept if at least ``thing_fraction`` of
    its pixels have a thing class as full semantic argmax ``full_arg``. Areas are clamped at 1.
    """
    N, M = is_thing_cls.numel(), int(num_instances)
    flat_inst = inst_map.reshape(-1)
    pix_thing = is_thing_cls[full_arg].reshape(-1)
    # bins (instance, class); instance 0 (no instance) takes the first N bins, dropped
    votes = torch.bincount(flat_inst * N + thing_arg.reshape(-1), minlength=(M + 1) * N)[N:].view(M, N)
    cls = votes.argmax(1)
    area = torch.bincount(flat_inst, minlength=M + 1)[1:].clamp_min(1)
    n_thing = torch.bincount(flat_inst, weights=pix_thing.double(), minlength=M + 1)[1:]
    return cls, n_thing >= thing_fraction * area, area


def instance_class_scores(
    inst_map: torch.Tensor, inst_scores: torch.Tensor, pix_logit: torch.Tensor, lse: torch.Tensor, area: torch.Tensor
) -> torch.Tensor:
    """``inst_scores [M] * mean softmax probability of the instance's class`` over its pixels;
    ``pix_logit [h, w]`` is the logit of the class of each pixel's instance (any value elsewhere)."""
    flat_inst = inst_map.reshape(-1)
    M = area.numel()
    pix_prob = torch.exp(pix_logit.reshape(-1) - lse.reshape(-1))
    psum = torch.bincount(flat_inst, weights=pix_prob.double(), minlength=M + 1)[1:]
    return inst_scores.to(area.device).float() * (psum / area).float()


def assemble_panoptic(
    inst_map: torch.Tensor,
    cls: torch.Tensor,
    keep: torch.Tensor,
    inst_score: torch.Tensor,
    maps: SemanticMaps,
    is_thing_cls: torch.Tensor,
    min_stuff_area: float,
) -> Tuple[torch.Tensor, List[Dict]]:
    """Kept instances + stuff of the full semantic argmax -> ``(panoptic_seg [h, w] int32,
    segments_info)`` (module doc); ``cls``, ``keep``, ``inst_score`` are ``[M]``."""
    full_max, full_arg, lse = maps
    N = is_thing_cls.numel()
    h, w = full_arg.shape
    dev = full_arg.device
    M = keep.numel()
    pix_thing = is_thing_cls[full_arg]
    num_th = int(keep.sum())
    inst_lut = torch.zeros(M + 1, dtype=torch.long, device=dev)
    inst_lut[1:][keep] = torch.arange(1, num_th + 1, device=dev)
    pan = inst_lut[inst_map]
    # --- stuff: full argmax where it is stuff and no kept instance claims the pixel
    stuff_pix = (pan == 0) & ~pix_thing
    st_bin = torch.where(stuff_pix, full_arg, torch.full_like(full_arg, N)).reshape(-1)  # N = not stuff
    st_area = torch.bincount(st_bin, minlength=N + 1)[:N]
    st_prob = torch.exp(full_max - lse)  # probability of the argmax class
    st_psum = torch.bincount(st_bin, weights=st_prob.reshape(-1).double(), minlength=N + 1)[:N]
    st_keep = (st_area > 0) & (st_area >= min_stuff_area * h * w) & ~is_thing_cls
    st_lut = torch.zeros(N, dtype=torch.long, device=dev)
    st_lut[st_keep] = torch.arange(num_th + 1, num_th + 1 + int(st_keep.sum()), device=dev)
    pan = torch.where(stuff_pix, st_lut[full_arg], pan).to(torch.int32)
    # --- segments_info (one host transfer of small vectors)
    seg_area = torch.bincount(pan.reshape(-1).long(), minlength=num_th + 1 + int(st_keep.sum()))
    segments: List[Dict] = []
    th_area = seg_area[1 : num_th + 1].tolist()
    for i, (c, s) in enumerate(zip(cls[keep].tolist(), inst_score[keep].tolist())):
        segments.append({"id": i + 1, "category_id": c, "isthing": True, "score": s, "area": th_area[i]})
    st_cls = torch.nonzero(st_keep).squeeze(1)
    st_score = (st_psum[st_cls] / st_area[st_cls].clamp_min(1)).tolist()
    for j, (c, s) in enumerate(zip(st_cls.tolist(), st_score)):
        sid = num_th + 1 + j
        segments.append({"id": sid, "category_id": c, "isthing": False, "score": s, "area": int(seg_area[sid])})
    return pan, segments


def merge_from_maps(
    inst_map: torch.Tensor,
    inst_scores: torch.Tensor,
    maps: SemanticMaps,
    is_thing_cls: torch.Tensor,
    take_thing_arg: Callable[[], torch.Tensor],
    class_logits: Callable[[torch.Tensor], torch.Tensor],
    thing_fraction: float,
    min_stuff_area: float,
) -> Tuple[torch.Tensor, List[Dict]]:
    """The merge steps on per-pixel maps, shared by :func:`merge_instances_and_semantics` (at the
    output size) and :func:`pe_panoptic.postprocess.fullsize.panoptic_at_size` (at the image size,
    in column bands): vote the class of the instances ``1..M`` of ``inst_map [h, w]``, score
    them, then :func:`assemble_panoptic`.

    The two callers differ only in how they get two per-pixel maps, so these are callables, run
    only when there are instances and thing classes: ``take_thing_arg()`` returns the
    thing-restricted semantic argmax ``[h, w]`` (its values at instance pixels matter; this
    function drops its reference after the vote, so a caller that hands over its only reference
    frees that memory), and ``class_logits(pix_cls)`` returns the logit of class
    ``pix_cls[y, x]`` at every pixel.
    """
    dev = maps.arg.device
    M = int(inst_scores.numel())
    keep = torch.zeros(M, dtype=torch.bool, device=dev)
    cls = torch.zeros(M, dtype=torch.long, device=dev)
    inst_score = torch.zeros(M, device=dev)
    if M and bool(is_thing_cls.any()):
        thing_arg = take_thing_arg()
        cls, keep, area = vote_instance_classes(inst_map, M, maps.arg, thing_arg, is_thing_cls, thing_fraction)
        del thing_arg
        pix_logit = class_logits(cls[(inst_map - 1).clamp_min(0)])
        inst_score = instance_class_scores(inst_map, inst_scores, pix_logit, maps.lse, area)
    return assemble_panoptic(inst_map, cls, keep, inst_score, maps, is_thing_cls, min_stuff_area)


def merge_instances_and_semantics(
    inst_map: torch.Tensor,
    inst_scores: torch.Tensor,
    sem_logits: torch.Tensor,
    thing_ids: Sequence[int],
    thing_fraction: float = 0.5,
    min_stuff_area: float = 1e-3,
) -> Tuple[torch.Tensor, List[Dict]]:
    """Class-agnostic instances + semantic logits -> detectron2 panoptic output (module doc).

    ``inst_map [h, w]`` (0 = none, ``1..M``), ``inst_scores [M]``, ``sem_logits [N, h, w]``;
    ``min_stuff_area`` is a fraction of ``h * w``.
    """
    if not torch.is_tensor(sem_logits) or sem_logits.dim() != 3 or not sem_logits.is_floating_point():
        got = getattr(sem_logits, "shape", type(sem_logits))
        raise ValueError(f"sem_logits must be a floating [N, h, w] tensor, got {got}")
    N, h, w = sem_logits.shape
    if tuple(inst_map.shape) != (h, w):
        raise ValueError(f"inst_map {tuple(inst_map.shape)} and sem_logits {(h, w)} differ in size")
    dev = sem_logits.device
    inst_map = inst_map.to(dev)
    is_thing_cls = thing_class_mask(thing_ids, N, dev)
    sem = sem_logits.float()
    maps = semantic_maps(sem)

    def take_thing_arg() -> torch.Tensor:
        # Where the full argmax is a thing class it is also the first maximum among the things,
        # so only instance pixels whose full argmax is stuff need the restricted search.
        thing_arg = maps.arg.reshape(-1).clone()
        redo = torch.nonzero((inst_map.reshape(-1) > 0) & ~is_thing_cls[thing_arg]).squeeze(1)
        if redo.numel():
            thing_arg[redo] = thing_argmax(sem.reshape(N, -1)[:, redo], torch.nonzero(is_thing_cls).squeeze(1))
        return thing_arg

    def class_logits(pix_cls: torch.Tensor) -> torch.Tensor:
        return sem.reshape(N, -1).gather(0, pix_cls.reshape(1, -1))[0]

    return merge_from_maps(inst_map, inst_scores, maps, is_thing_cls, take_thing_arg, class_logits,
                           thing_fraction, min_stuff_area)
