"""The input check that a saved TorchScript export keeps (:func:`pe_panoptic.export.exporter.export_torchscript`)."""
from __future__ import annotations

from typing import Tuple

import torch
from torch import nn

__all__ = ["CheckedGraph"]


class CheckedGraph(nn.Module):
    """A traced network behind an input check that TorchScript keeps (``torch.jit.script``): a
    trace records no Python ``if``, so a bare traced graph runs on an ``H`` or ``W`` that is not a
    multiple of the patch size and returns wrong-sized outputs, where the eager model raises. The
    saved TorchScript file refuses such an input itself, with the message of
    :func:`check_network_input` (``fixed_hw``: a fixed-size export also refuses any other size)."""

    def __init__(self, traced: nn.Module, divisor: int, fixed_hw: Tuple[int, int] = (0, 0)):
        super().__init__()
        self.net = traced
        self.divisor = int(divisor)
        self.fixed_h, self.fixed_w = int(fixed_hw[0]), int(fixed_hw[1])

    def forward(self, image: torch.Tensor):
        if image.dim() != 4 or image.size(1) != 3:
            raise ValueError("exported network input must be [B, 3, H, W], got " + str(image.shape))
        h, w = image.size(2), image.size(3)
        if h <= 0 or w <= 0 or h % self.divisor != 0 or w % self.divisor != 0:
            raise ValueError("exported network input must be [B, 3, H, W] with H and W positive multiples of "
                             + str(self.divisor) + ", got " + str(image.shape)
                             + ": pad it first (pe_panoptic.export.preprocess pads as the mapper does)")
        if self.fixed_h > 0 and (h != self.fixed_h or w != self.fixed_w):
            raise ValueError("this TorchScript graph was exported at the fixed size " + str(self.fixed_h) + "x"
                             + str(self.fixed_w) + ", got " + str(image.shape) + ": pad to it, or export with --dynamic")
        return self.net(image)
