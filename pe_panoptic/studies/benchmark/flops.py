"""FLOP counting of ``tools/benchmark.py`` and ``tools/compare.py``.

fvcore's :class:`~fvcore.nn.FlopCountAnalysis` counts one multiply-add as one "flop" (MACs);
:func:`count_macs` adds a handle for ``aten::scaled_dot_product_attention`` (:func:`sdpa_macs`:
timm's fused attention, which fvcore skips) and reports the operators left uncounted
(elementwise ops, norms that fvcore ignores). Achieved FLOP/s use ``2 * MACs``, the convention of
a matmul peak measured as ``2 n^3 / t`` (:func:`pe_panoptic.studies.benchmark.timing.matmul_fn`).
"""
from __future__ import annotations

import math
from typing import Any, Dict, List, Tuple

import torch
from torch import nn

__all__ = ["SDPA_OP", "sdpa_macs", "count_macs", "ForwardFeatures"]

#: the TorchScript operator of PyTorch's fused attention, which fvcore does not count
SDPA_OP = "aten::scaled_dot_product_attention"


def sdpa_macs(inputs: List[Any], outputs: List[Any]) -> int:
    """MACs of ``scaled_dot_product_attention(q [.., L, E], k [.., S, E], v [.., S, Ev])``:
    ``Q K^T`` (L S E) plus ``P V`` (L S Ev) per batch x head."""
    from fvcore.nn.jit_handles import get_shape

    q, k, v = (get_shape(x) for x in inputs[:3])
    batch = math.prod(q[:-2])
    return int(batch * q[-2] * k[-2] * (q[-1] + v[-1]))


def count_macs(module: nn.Module, inputs) -> Tuple[int, Dict[str, int]]:
    """Multiply-accumulates of one forward of ``module(*inputs)`` with fvcore (its "flops").

    Returns ``(macs, uncounted)``: ``uncounted`` maps operators fvcore skipped (elementwise
    ops, activations) to their call counts. Attention through PyTorch SDPA is counted.
    """
    from fvcore.nn import FlopCountAnalysis

    fa = FlopCountAnalysis(module, inputs)
    fa.set_op_handle(SDPA_OP, sdpa_macs)
    fa.unsupported_ops_warnings(False)
    fa.uncalled_modules_warnings(False)
    fa.tracer_warnings("none")
    macs = int(fa.total())
    return macs, dict(fa.unsupported_ops())


class ForwardFeatures(nn.Module):
    """``model.forward_features`` as a module returning a tuple (tracing / FLOP counting)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor):
        m = self.model
        if torch.jit.is_tracing():
            # under the tracer shapes are tensors and the decoder's same-size check of the
            # feature dict fails: hand it the concatenated maps (what it computes first)
            feats = m.backbone(x)
            cat = torch.cat(list(feats.values()), dim=1)
            h = m.decoder(cat, x)  # the decoder uses the image only with image_skip
            return tuple(m.heads(h).values())
        return tuple(m.forward_features(x).values())

