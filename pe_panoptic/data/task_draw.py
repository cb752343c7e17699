"""One task per optimizer step, drawn on the data side (paper_v1 Sec. 5.1: "Each batch contains
only sampling from one of the tasks, with the instance segmentation being twice more likely").

The train loaders (:mod:`pe_panoptic.data.resumable`, :mod:`pe_panoptic.data.mixed`) take
``task_probs`` (``{task: probability}``) and tag every mapped dict of optimizer step ``s`` with
``tasks = (draw_step_task(task_probs, seed, s),)``;
:class:`pe_panoptic.modeling.meta_arch.PixelCentroidHead` trains exactly the tasks its batch
declares. The draw is a function of ``(seed, step)`` alone, so every process of a data-parallel
run and every gradient-accumulation micro-batch of a step (micro-batch ``g`` belongs to step
``g // batches_per_step``) get the same task, and a resumed run draws what the uninterrupted
run drew.
"""
from __future__ import annotations

import math
from typing import Dict, Mapping, Optional, Tuple

import numpy as np
import torch

__all__ = ["draw_step_task", "check_task_probs", "StepTaskDraw", "MOVED_TASK_PROBS"]

# a constant word that separates the task-draw stream from IterationSeedHook's per-rank seeds
_TASK_STREAM = 0x7A5C

#: the error of a config that still sets ``model.task_probs``
MOVED_TASK_PROBS = (
    "model.task_probs has moved to the train loader: set dataloader.train.task_probs (with "
    "dataloader.train.effective_batch_size='${train.effective_batch_size}', or use "
    "pe_panoptic.engine.recipes.set_task_probs) and remove model.task_probs; the loader tags each "
    "batch with the task of its optimizer step (pe_panoptic/data/task_draw.py)"
)


def draw_step_task(task_probs: Mapping[str, float], seed: int, iteration: int) -> str:
    """The one task of optimizer step ``iteration``, from a generator seeded by
    ``(seed, iteration)`` alone (the global RNGs play no part)."""
    names = list(task_probs)
    probs = torch.tensor([float(task_probs[n]) for n in names], dtype=torch.float64)
    words = [int(seed) % (2**63), int(iteration), _TASK_STREAM]
    g = torch.Generator().manual_seed(int(np.random.SeedSequence(words).generate_state(1, np.uint64)[0] >> 1))
    return names[int(torch.multinomial(probs, 1, generator=g))]


def check_task_probs(task_probs, where: str = "task_probs") -> Optional[Dict[str, float]]:
    """``task_probs`` as a plain ``{task: float}`` dict (``None`` stays ``None``), or a
    ``ValueError`` naming ``where``: non-negative finite probabilities with a positive sum."""
    if task_probs is None:
        return None
    try:
        from omegaconf import DictConfig, OmegaConf

        if isinstance(task_probs, DictConfig):
            task_probs = OmegaConf.to_container(task_probs, resolve=True)
    except ImportError:  # pragma: no cover
        pass
    if not isinstance(task_probs, Mapping) or not task_probs:
        raise ValueError(f"{where} must be a non-empty {{task: probability}} dict or None, got {task_probs!r}")
    probs = {str(k): float(v) for k, v in task_probs.items()}
    if any(not math.isfinite(p) or p < 0 for p in probs.values()) or sum(probs.values()) <= 0:
        raise ValueError(f"{where} {probs} must be non-negative with a positive sum")
    return probs


class StepTaskDraw:
    """The tasks of every micro-batch of a train loader: ``tasks(g)`` is the one-task tuple of
    micro-batch ``g``'s optimizer step ``g // batches_per_step``."""

    def __init__(self, task_probs: Mapping[str, float], seed: int, batches_per_step: int = 1):
        self.task_probs = check_task_probs(task_probs)
        if self.task_probs is None:
            raise ValueError("StepTaskDraw needs task_probs")
        if int(batches_per_step) < 1:
            raise ValueError(f"StepTaskDraw: batches_per_step must be >= 1, got {batches_per_step}")
        self.seed = int(seed)
        self.batches_per_step = int(batches_per_step)

    def step_of(self, batch: int) -> int:
        return int(batch) // self.batches_per_step

    def tasks(self, batch: int) -> Tuple[str, ...]:
        return (draw_step_task(self.task_probs, self.seed, self.step_of(batch)),)
