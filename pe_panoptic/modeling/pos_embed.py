"""Resampling a ViT's absolute position embedding to the patch grid of the input (pure functions).

Three conventions exist for a DINOv2 checkpoint (37x37 grid, 518 px) run at another size, and
they give different features (max abs 0.40 / 0.14 / 0.087 on block 12 of ViT-S/14 at
224 / 420 / 1008 px between the first two):

* ``"dinov2"``: the official ``DinoVisionTransformer.interpolate_pos_encoding``: bicubic with
  ``scale_factor = ((h + 0.1) / M, (w + 0.1) / M)`` (``interpolate_offset = 0.1``), no
  antialias; the grid is returned unchanged when the input grid is the ``M x M`` one.
* ``"hf"``: Hugging Face ``Dinov2Embeddings.interpolate_pos_encoding`` (and the ONNX graph of
  ``tools/get_weights.py``): bicubic to ``size = (h, w)``, no antialias, no offset.
* ``"timm"``: ``timm.layers.resample_abs_pos_embed``: bicubic to ``size``, **antialiased**.

``"dinov2"`` and ``"hf"`` are computed here as two small interpolation matrices
(``A_h [h, M] @ grid @ A_w^T``) that reproduce PyTorch's ``upsample_bicubic2d`` (A = -0.75,
``align_corners=False``, border indices clamped) exactly. Why not ``F.interpolate``: with a
``scale_factor`` that depends on the input size, a traced export would bake the factor of the
example size into the graph; here every quantity is a tensor op on the traced size, so the
ONNX / TorchScript exports stay correct at every input size. Tests check both against
``F.interpolate``.
"""
from __future__ import annotations

import torch

__all__ = ["POS_EMBED_INTERP", "cubic_weights", "bicubic_matrix", "resample_grid"]

POS_EMBED_INTERP = ("dinov2", "hf", "timm")
_A = -0.75  # PyTorch's bicubic convolution constant
_OFFSET = 0.1  # official DINOv2 interpolate_offset


def cubic_weights(t: torch.Tensor) -> torch.Tensor:
    """Keys' cubic convolution weights of the 4 taps ``floor(x) - 1 .. floor(x) + 2`` for the
    fractional part ``t`` (``[...]`` -> ``[..., 4]``), as in PyTorch's
    ``get_cubic_upsample_coefficients``."""
    def near(x):  # |x| <= 1
        return ((_A + 2) * x - (_A + 3)) * x * x + 1

    def far(x):  # 1 < |x| < 2
        return ((_A * x - 5 * _A) * x + 8 * _A) * x - 4 * _A

    return torch.stack((far(t + 1), near(t), near(1 - t), far(2 - t)), dim=-1)


def bicubic_matrix(index: torch.Tensor, in_size: int, scale: torch.Tensor) -> torch.Tensor:
    """Interpolation matrix ``[n, in_size]`` for output positions ``index`` (float, ``0..n-1``):
    source coordinate ``scale * (index + 0.5) - 0.5`` (``align_corners=False``), 4 cubic taps
    with indices clamped to ``[0, in_size - 1]``."""
    src = scale * (index + 0.5) - 0.5
    base = torch.floor(src)
    w = cubic_weights(src - base)  # n 4
    taps = (base.long()[:, None] + torch.arange(-1, 3, device=index.device)[None]).clamp(0, in_size - 1)
    cols = torch.arange(in_size, device=index.device)
    onehot = (taps[:, :, None] == cols[None, None]).to(w.dtype)  # n 4 in
    return (w[:, :, None] * onehot).sum(1)


def _axis(n: int, device):
    index = torch.arange(n, device=device, dtype=torch.float32)
    # the output length as a tensor derived from `index`, so a traced graph keeps it dynamic
    return index, index[-1:] + 1.0


def resample_grid(grid: torch.Tensor, out_hw, mode: str) -> torch.Tensor:
    """Resample a position grid ``[1, M_h, M_w, C]`` to ``[1, h, w, C]`` with ``mode`` in
    ``("dinov2", "hf")`` (module doc). ``"dinov2"`` returns ``grid`` unchanged when
    ``h * w == M_h * M_w`` and ``h == w``, as the official code does."""
    if mode not in ("dinov2", "hf"):
        raise ValueError(f"resample_grid: mode must be 'dinov2' or 'hf', got {mode!r}")
    if grid.dim() != 4 or grid.shape[0] != 1:
        raise ValueError(f"resample_grid: grid must be [1, M_h, M_w, C], got {tuple(grid.shape)}")
    h, w = out_hw
    mh, mw = grid.shape[1], grid.shape[2]
    tracing = torch.jit.is_tracing() or torch.onnx.is_in_onnx_export()
    if not tracing and (h, w) == (mh, mw) and (mode == "hf" or mh == mw):
        return grid
    (ih, lh), (iw, lw) = _axis(h, grid.device), _axis(w, grid.device)
    if mode == "dinov2":
        # official: unchanged at the M x M grid, else scale_factor (n + 0.1) / M on both axes.
        # As tensors (a traced graph must not bake the example size's branch): at the grid size
        # the size-based scale M / n = 1 gives the identity matrix, i.e. the unchanged grid.
        same = (lh == mh) & (lw == mw) & (mh == mw)
        sh = torch.where(same, mh / lh, mh / (lh + _OFFSET))
        sw = torch.where(same, mw / lw, mw / (lw + _OFFSET))
    else:  # "hf": size-based
        sh, sw = mh / lh, mw / lw
    a_h = bicubic_matrix(ih, mh, sh)
    a_w = bicubic_matrix(iw, mw, sw)
    out = torch.einsum("ym,bmnc,xn->byxc", a_h, grid.float(), a_w)
    return out.to(grid.dtype)
