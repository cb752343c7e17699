"""Shallow decoder ``h = g(z)`` and task projection heads (paper Sec. 3.1, Fig. 1, and
Sec. 5.1 "Implementation details").

* :class:`TransposedConvDecoder`: the encoder feature maps are concatenated on channels, then
  ``num_upsample`` transposed convolutions (kernel 2, stride 2; each 2x) and one 3x3 convolution,
  each followed by norm + activation. ICML version: 3 upsamplings -> output at ``8 / 14`` of the
  input resolution (e.g. 840 px in -> 480 px out); paper_v1 used 4 (``16 / 14``).
* :class:`PixelHeads`: one convolution per task mapping the ``d``-dimensional decoder embedding
  to the task output: semantic logits, instance code (``encoding.num_channels`` channels), and the
  optional depth ``max_depth * sigmoid(.)`` (Sec. 5.1 "Inference": sigmoid times the dataset's
  maximum depth, 10 m for NYUv2).
"""
from __future__ import annotations

from typing import Callable, Dict, Mapping, Sequence, Union

import torch
from detectron2.layers import ShapeSpec, get_norm
from fvcore.nn import weight_init
from torch import nn

__all__ = ["concat_channels", "TransposedConvDecoder", "PixelHeads"]

_ACTIVATIONS: Dict[str, Callable[[], nn.Module]] = {
    "gelu": nn.GELU,
    "relu": lambda: nn.ReLU(inplace=True),
    "silu": lambda: nn.SiLU(inplace=True),
    "": nn.Identity,
}

Features = Union[Mapping[str, torch.Tensor], Sequence[torch.Tensor], torch.Tensor]


def concat_channels(shapes: Mapping[str, ShapeSpec]) -> int:
    """Channel count of the concatenated backbone outputs (``backbone.output_shape()``): the
    ``in_channels`` of :class:`TransposedConvDecoder`."""
    if not shapes:
        raise ValueError("concat_channels: no backbone outputs")
    return int(sum(s.channels for s in shapes.values()))


def _make_norm(norm, channels: int) -> nn.Module:
    if norm == "GN" and channels % 32:
        raise ValueError(f"TransposedConvDecoder: norm='GN' uses 32 groups, width {channels} is not a multiple of 32")
    try:
        layer = get_norm(norm, channels)
    except KeyError:
        raise ValueError(f"TransposedConvDecoder: unknown norm {norm!r} (use 'BN', 'SyncBN', 'GN' or '')") from None
    return layer if layer is not None else nn.Identity()


def _make_act(activation: str) -> nn.Module:
    if activation not in _ACTIVATIONS:
        raise ValueError(f"TransposedConvDecoder: unknown activation {activation!r}, choose from {sorted(_ACTIVATIONS)}")
    return _ACTIVATIONS[activation]()


def _conv_norm_act(conv: nn.Module, norm, activation: str) -> nn.Sequential:
    weight_init.c2_msra_fill(conv)
    return nn.Sequential(conv, _make_norm(norm, conv.out_channels), _make_act(activation))


def _concat(features: Features) -> torch.Tensor:
    if isinstance(features, torch.Tensor):
        return features
    maps = list(features.values()) if isinstance(features, Mapping) else list(features)
    if not maps:
        raise ValueError("TransposedConvDecoder: no feature maps given")
    # compare sizes pairwise (under torch.jit.trace the shape entries are tensors, not ints)
    if any(m.dim() != 4 for m in maps) or not all(m.shape[-2:] == maps[0].shape[-2:] for m in maps):
        raise ValueError(
            f"TransposedConvDecoder: feature maps must be [B, C, h, w] with one spatial size, got "
            f"{[tuple(m.shape) for m in maps]}"
        )
    return torch.cat(maps, dim=1)


class TransposedConvDecoder(nn.Module):
    """Concatenate encoder maps -> ``num_upsample`` x [ConvTranspose2d(k=2, s=2) + norm + act]
    -> Conv2d(3x3) + norm + act. Output ``[B, width, h * 2^n, w * 2^n]``.

    Args:
        in_channels: channels of the concatenated maps (sum over the backbone outputs).
        width: decoder embedding dimension ``d``.
        num_upsample: number of 2x transposed convolutions (3 in the ICML paper, 4 in paper_v1).
        norm: detectron2 norm name ("BN", "SyncBN", "GN", "") or a callable ``channels -> module``.
        activation: "gelu", "relu", "silu" or "" (none).
    """

    def __init__(
        self,
        in_channels: int,
        width: int = 256,
        num_upsample: int = 3,
        norm: Union[str, Callable] = "BN",
        activation: str = "gelu",
    ):
        super().__init__()
        if int(in_channels) < 1 or int(width) < 1:
            raise ValueError(f"TransposedConvDecoder: in_channels={in_channels} and width={width} must be >= 1")
        if not 0 <= int(num_upsample) <= 6:
            raise ValueError(f"TransposedConvDecoder: num_upsample must be in [0, 6], got {num_upsample}")
        self.in_channels = int(in_channels)
        self.out_channels = int(width)
        self.num_upsample = int(num_upsample)
        self.scale_factor = 2 ** self.num_upsample
        bias = norm in ("", None)
        layers = []
        c = self.in_channels
        for _ in range(self.num_upsample):
            layers.append(_conv_norm_act(nn.ConvTranspose2d(c, width, 2, stride=2, bias=bias), norm, activation))
            c = width
        layers.append(_conv_norm_act(nn.Conv2d(c, width, 3, padding=1, bias=bias), norm, activation))
        self.layers = nn.Sequential(*layers)

    def forward(self, features: Features) -> torch.Tensor:
        """``features``: dict (in its order) / sequence of ``[B, C_i, h, w]`` or one tensor."""
        x = _concat(features)
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"TransposedConvDecoder: expected {self.in_channels} concatenated channels, got shape {tuple(x.shape)}"
            )
        return self.layers(x)


class PixelHeads(nn.Module):
    """One ``kernel_size`` convolution per task on the decoder embedding ``h [B, width, H, W]``.

    Returns ``{"sem_logits": [B, num_classes, H, W], "inst": [B, inst_channels, H, W]}`` plus
    ``"depth": [B, 1, H, W]`` in ``(0, max_depth)`` when ``depth=True``.

    Init: weights N(0, 0.01), biases 0, so the initial instance output is close to the zero (void)
    code of the PE / RGB encodings, the semantic logits are near-uniform and the depth starts near
    ``max_depth / 2``.
    """

    def __init__(
        self,
        width: int,
        num_classes: int,
        inst_channels: int,
        depth: bool = False,
        max_depth: float = 10.0,
        kernel_size: int = 3,
    ):
        super().__init__()
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"PixelHeads: kernel_size must be odd and >= 1, got {kernel_size}")
        if num_classes < 1 or inst_channels < 1:
            raise ValueError(f"PixelHeads: num_classes={num_classes} and inst_channels={inst_channels} must be >= 1")
        if depth and not max_depth > 0:
            raise ValueError(f"PixelHeads: max_depth must be > 0, got {max_depth}")

        def conv(c_out: int) -> nn.Conv2d:
            m = nn.Conv2d(width, c_out, kernel_size, padding=kernel_size // 2)
            nn.init.normal_(m.weight, std=0.01)
            nn.init.zeros_(m.bias)
            return m

        self.sem = conv(num_classes)
        self.inst = conv(inst_channels)
        self.depth = conv(1) if depth else None
        self.max_depth = float(max_depth)

    def forward(self, h: torch.Tensor) -> Dict[str, torch.Tensor]:
        out = {"sem_logits": self.sem(h), "inst": self.inst(h)}
        if self.depth is not None:
            out["depth"] = self.max_depth * torch.sigmoid(self.depth(h))
        return out
