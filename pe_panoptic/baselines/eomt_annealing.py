"""EoMT's mask annealing as a detectron2 hook.

Upstream (``training/lightning_module.py`` ``mask_annealing``): the probability ``p`` that block
``k``'s masked attention is kept is 1 before its window ``[start_k, end_k)``, 0 from ``end_k``
on, and ``(1 - progress) ** 0.9`` inside, with ``progress = (it - start_k) / (end_k - start_k)``.
Upstream's windows for EoMT-L on COCO (batch 16, 12 epochs, N = 4): 14782-29564, 29564-44346,
44346-59128, 59128-73910: windows of ``s`` = 2 epochs, block ``k`` annealed over
``[(k + 1) s, (k + 2) s)``, so that the first ``s`` iterations run with every mask on and the
last ones (``T - (N + 1) s``) with every mask off. :func:`staggered_windows` gives these
windows for any ``T`` and ``N``.

:class:`MaskAnnealingHook` writes ``p`` into the model's ``attn_mask_probs`` buffer (the model
reads it in ``forward``) before every iteration, from the trainer's iteration, so a resumed run
continues the schedule exactly. Add it through ``train.hooks`` in the config (``tools/train_net.py``
instantiates every entry of ``train.hooks``).
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import torch
from detectron2.engine import HookBase

__all__ = ["annealed_prob", "staggered_windows", "MaskAnnealingHook"]


def annealed_prob(iteration: int, start: int, end: int, power: float = 0.9) -> float:
    """Upstream's ``mask_annealing``: 1 before ``start``, 0 from ``end``, ``(1 - progress) ** power`` between."""
    if end <= start:
        raise ValueError(f"annealed_prob: the window must have end > start, got [{start}, {end})")
    if iteration < start:
        return 1.0
    if iteration >= end:
        return 0.0
    return (1.0 - (iteration - start) / (end - start)) ** power


def staggered_windows(max_iter: int, num_blocks: int) -> List[Tuple[int, int]]:
    """Upstream's windows for ``max_iter`` iterations and ``num_blocks`` blocks:
    ``[(k + 1) s, (k + 2) s)`` for block ``k``, ``s = T // (N + 2)`` (upstream's EoMT-L windows are
    this rule with ``s = 14782``)."""
    if num_blocks < 1 or max_iter < 1:
        raise ValueError(f"staggered_windows: need num_blocks >= 1 and max_iter >= 1, got max_iter={max_iter}, "
                         f"num_blocks={num_blocks}")
    step = max(1, max_iter // (num_blocks + 2))  # runs shorter than N + 2 iterations: windows of 1
    return [((k + 1) * step, (k + 2) * step) for k in range(num_blocks)]


def _unwrap(model):
    return model.module if hasattr(model, "module") else model


class MaskAnnealingHook(HookBase):
    """Sets ``model.attn_mask_probs[k] = annealed_prob(iter, *windows[k], power)`` before every step.

    Args:
        windows: ``[(start, end), ...]`` one per masked block; None: :func:`staggered_windows`
            of the trainer's ``max_iter`` and the model's ``num_blocks``.
        power: upstream's poly power 0.9.
    """

    def __init__(self, windows: Optional[Sequence[Sequence[int]]] = None, power: float = 0.9):
        self.windows = None if windows is None else [tuple(int(v) for v in w) for w in windows]
        self.power = float(power)

    def _model(self):
        model = _unwrap(self.trainer.model)
        if not hasattr(model, "attn_mask_probs"):
            raise TypeError(f"MaskAnnealingHook: the model ({type(model).__name__}) has no attn_mask_probs buffer "
                            "(it anneals EoMT's masked attention)")
        return model

    def before_train(self):
        model = self._model()
        if self.windows is None:
            self.windows = staggered_windows(self.trainer.max_iter, len(model.attn_mask_probs))
        if len(self.windows) != len(model.attn_mask_probs):
            raise ValueError(f"MaskAnnealingHook: {len(self.windows)} windows for {len(model.attn_mask_probs)} "
                             "masked blocks")
        for s, e in self.windows:
            annealed_prob(0, s, e)  # checks each window

    def probs(self, iteration: int) -> List[float]:
        return [annealed_prob(iteration, s, e, self.power) for s, e in self.windows]

    def before_step(self):
        model = self._model()
        with torch.no_grad():
            model.attn_mask_probs.copy_(torch.tensor(self.probs(self.trainer.iter), dtype=model.attn_mask_probs.dtype))
