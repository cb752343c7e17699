"""Synthetic inputs of ``tools/benchmark.py``: :func:`synthetic_panoptic_sample` renders a
procedural panoptic scene (:func:`pe_panoptic.data.synthetic.render_scene`) with COCO-like
contiguous classes; :func:`noisy_outputs` turns its targets into realistic per-pixel network
outputs (perfect outputs plus Gaussian noise); :func:`training_inputs` is a training batch."""
from __future__ import annotations

from typing import List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from pe_panoptic.encoding import CentroidEncoding

__all__ = ["scaled_scene_config", "synthetic_panoptic_sample", "noisy_outputs", "training_inputs"]


def scaled_scene_config(size: Tuple[int, int], min_instances: int = 10, max_instances: int = 25):
    """A :class:`pe_panoptic.data.synthetic.SceneConfig` whose lengths (tuned for 168 px images)
    scale with ``min(size)``, with a COCO-like 10-25 instances."""
    from pe_panoptic.data.synthetic import SceneConfig

    s = min(size) / 168.0
    return SceneConfig(
        min_instances=min_instances, max_instances=max_instances, min_size=8.0 * s, max_size=48.0 * s,
        crowd_part_size=(5.0 * s, 10.0 * s), crowd_spread=(6.0 * s, 14.0 * s),
        void_radius=(8.0 * s, 32.0 * s), min_visible_area=int(16 * s * s),
    )


def synthetic_panoptic_sample(
    size: Tuple[int, int], seed: int = 0, *, num_classes: int = 133, num_things: int = 80,
    thing_ids: Optional[Sequence[int]] = None, min_instances: int = 10, max_instances: int = 25,
) -> Tuple[np.ndarray, np.ndarray, List[dict]]:
    """One procedural panoptic scene ``(image uint8 [H, W, 3], pan_ids int64 [H, W],
    segments_info)`` with contiguous classes: each thing segment gets a random class of
    ``thing_ids`` (default ``0 .. num_things - 1``, COCO-like), each stuff segment one of the
    other classes of ``0 .. num_classes - 1`` (seeded). Instance sizes scale with the image
    (``render_scene`` is tuned for 168 px)."""
    from pe_panoptic.data.synthetic import render_scene, synthetic_panoptic_metadata

    h, w = (int(v) for v in size)
    if h < 32 or w < 32:
        raise ValueError(f"synthetic scene size must be >= 32 x 32, got {size}")
    thing_cls = sorted({int(t) for t in (range(num_things) if thing_ids is None else thing_ids)})
    stuff_cls = sorted(set(range(num_classes)) - set(thing_cls))
    if not thing_cls or not stuff_cls or thing_cls[0] < 0 or thing_cls[-1] >= num_classes:
        raise ValueError(f"need thing classes (num_things / thing_ids) and stuff classes in "
                         f"[0, num_classes={num_classes}), got things {thing_cls[:8]}")
    rng = np.random.default_rng(seed)
    sample = render_scene(rng, (h, w), scaled_scene_config((h, w), min_instances, max_instances))
    things = set(synthetic_panoptic_metadata()["thing_dataset_id_to_contiguous_id"])
    segments = []
    for seg in sample.segments_info:
        isthing = seg["category_id"] in things
        cat = int(rng.choice(thing_cls if isthing else stuff_cls))
        segments.append(dict(seg, category_id=cat, isthing=isthing))
    return sample.image, sample.panoptic.astype(np.int64), segments


def noisy_outputs(
    targets: Mapping[str, torch.Tensor], encoding: CentroidEncoding, num_classes: int, *,
    noise: float = 0.1, logit: float = 5.0, generator: Optional[torch.Generator] = None,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Realistic outputs of one image from its targets (:func:`pe_panoptic.data.targets.panoptic_targets`):
    ``sem_logits [N, h, w]`` = ``logit`` x one-hot(class) + N(0, 1) noise (ignore pixels: noise
    only) and ``inst [C, h, w]`` = ``encoding.targets`` + N(0, ``noise``^2)."""
    sem = targets["sem_seg"]
    h, w = sem.shape
    known = sem < num_classes
    onehot = F.one_hot(torch.where(known, sem, torch.zeros_like(sem)), num_classes).permute(2, 0, 1).float()
    sem_logits = onehot * (logit * known.float()) + torch.randn(num_classes, h, w, generator=generator)
    inst = encoding.targets(targets["inst_uv"][None], targets["inst_valid"][None])[0]
    inst = inst + noise * torch.randn(inst.shape, generator=generator)
    return sem_logits, inst


def training_inputs(
    batch: int, size: int, *, num_classes: int = 133, num_things: int = 80, thing_ids: Optional[Sequence[int]] = None,
    output_stride: float = 14 / 8, seed: int = 0, distinct: int = 2, depth: bool = False,
) -> List[dict]:
    """``batch`` mapped training samples (``image`` uint8 ``[3, size, size]`` + ``targets`` of
    :func:`pe_panoptic.data.targets.panoptic_targets` at ``round(size / output_stride)``, plus metric
    ``depth`` / ``depth_valid`` targets of a synthetic 1-9 m ramp when ``depth``), cycling over
    ``distinct`` synthetic scenes (rendering big scenes is slow)."""
    from pe_panoptic.data.depth_labels import depth_targets
    from pe_panoptic.data.targets import panoptic_targets

    if batch < 1 or size < 32:
        raise ValueError(f"need batch >= 1 and size >= 32, got batch={batch}, size={size}")
    out_hw = (int(round(size / output_stride)),) * 2
    scenes = []
    for i in range(min(batch, max(1, distinct))):
        image, pan, segs = synthetic_panoptic_sample((size, size), seed + i, num_classes=num_classes,
                                                     num_things=num_things, thing_ids=thing_ids)
        t = panoptic_targets(pan, segs, input_hw=(size, size), output_hw=out_hw)
        if depth:
            ramp = np.linspace(1.0, 9.0, size, dtype=np.float32)[:, None].repeat(size, 1)
            t.update(depth_targets(ramp, out_hw, "metric"))
        scenes.append({"image": torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))),
                       "height": size, "width": size, "targets": t})
    return [scenes[i % len(scenes)] for i in range(batch)]

