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

from typing import Callable, Dict, Mapping, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from detectron2.layers import ShapeSpec, get_norm
from fvcore.nn import weight_init
from torch import nn

__all__ = ["Upsample2x", "concat_channels", "position_channels", "rotate_by_position", "code_from_offset", "TransposedConvDecoder", "PixelHeads"]

#: ``TransposedConvDecoder(position_input=...)``: what the decoder input gets besides the features
POSITION_INPUTS = ("none", "xy", "pe")
#: ``PixelHeads(inst_position=...)``: how the instance head's output relates to the pixel position
INST_POSITIONS = ("none", "rotary", "offset")
#: channels of the instance conv for each ``inst_position`` that does not output the code itself
_OFFSET_CHANNELS = 3  # (du, dv, r)

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


class Upsample2x(nn.ConvTranspose2d):
    """``ConvTranspose2d(kernel_size=2, stride=2)`` computed as a 1x1 convolution to ``4 C_out``
    channels followed by a pixel shuffle: the same parameters (state-dict compatible), the same
    result, but PyTorch's CPU transposed convolution takes a slow path for this shape (12% of a
    forward for 5% of its FLOPs, measured with ``tools/benchmark.py``). With k = s = 2 the output
    windows do not overlap, so ``out[o, 2h + i, 2w + j] = sum_c x[c, h, w] W[c, o, i, j]`` is a
    matmul whose ``(o, i, j)`` columns are exactly ``pixel_shuffle``'s channel order."""

    #: ``"matmul"`` (default) or ``"convtranspose"``: PyTorch's own ConvTranspose2d (the slow
    #: CPU path; kept to measure the difference, ``tools/benchmark.py train --against``)
    IMPLS = ("matmul", "convtranspose")

    def __init__(self, in_channels: int, out_channels: int, bias: bool = True, impl: str = "matmul"):
        super().__init__(in_channels, out_channels, 2, stride=2, bias=bias)
        if impl not in self.IMPLS:
            raise ValueError(f"Upsample2x: impl must be one of {self.IMPLS}, got {impl!r}")
        self.impl = impl

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.impl == "convtranspose":
            return super().forward(x)
        c_in, c_out = self.in_channels, self.out_channels
        w = self.weight.reshape(c_in, c_out * 4).t().reshape(c_out * 4, c_in, 1, 1)
        b = None if self.bias is None else self.bias.repeat_interleave(4)
        return F.pixel_shuffle(F.conv2d(x, w, b), 2)


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


def position_channels(kind: str, h: int, w: int, like: torch.Tensor, num_harmonics: int = 4) -> torch.Tensor:
    """Position channels ``[C, h, w]`` (CoordConv, Liu et al. 2018): ``"xy"`` the normalized u, v
    (2 channels); ``"pe"`` their sine-cosine embedding with the instance target's harmonics
    (``4 L`` channels, :func:`pe_panoptic.encoding.positional_embedding`)."""
    from pe_panoptic.encoding import pixel_centers, positional_embedding

    uv = pixel_centers(h, w, like.device)
    if kind == "xy":
        return uv
    if kind == "pe":
        pe = positional_embedding(uv, num_harmonics)  # 2 h w 2L
        return pe.permute(0, 3, 1, 2).reshape(4 * num_harmonics, h, w)
    raise ValueError(f"position_channels: kind must be 'xy' or 'pe', got {kind!r}")


def rotate_by_position(z: torch.Tensor, num_harmonics: int) -> torch.Tensor:
    """The ``"rotary"`` instance head: ``z [B, 4L, H, W]`` read as one complex number
    ``a + ib`` per axis and harmonic (the channel pairs of the PE layout) multiplies the pixel's
    own position code ``e^{i w_l u}``::

        out_sin = a sin(w_l u) + b cos(w_l u)    # = r sin(w_l u + theta) for a + ib = r e^{i theta}
        out_cos = a cos(w_l u) - b sin(w_l u)    # = r cos(w_l u + theta)

    so the network predicts the phase offset ``theta = w_l (c - u)`` to the centroid ``c``, a
    function of the object relative to the pixel (translation-equivariant, like Panoptic-DeepLab's
    offsets), while the output stays a code of Eq. (3) (same loss, targets and decoding).
    ``z = 0`` gives the void code."""
    B, C, H, W = z.shape
    L = int(num_harmonics)
    if C != 4 * L:
        raise ValueError(f"rotate_by_position: expected {4 * L} channels, got {C}")
    pe = position_channels("pe", H, W, z, L).to(z.dtype)  # [u: (sin, cos) x L, v: ...], H, W
    zz = z.reshape(B, 2 * L, 2, H, W)  # pairs (a, b)
    sc = pe.reshape(2 * L, 2, H, W)  # pairs (sin, cos)
    a, b = zz[:, :, 0], zz[:, :, 1]
    s, c = sc[None, :, 0], sc[None, :, 1]
    return torch.stack((a * s + b * c, a * c - b * s), dim=2).reshape(B, C, H, W)


def code_from_offset(z: torch.Tensor, num_harmonics: int) -> torch.Tensor:
    """The ``"offset"`` instance head: ``z [B, 3, H, W] = (du, dv, r)`` -> the code
    ``r * PE(u + du, v + dv)`` ``[B, 4L, H, W]`` (paper Eq. 3 layout), where ``(u, v)`` is the
    pixel's own normalized position. The network regresses the offset to its centroid, as
    Panoptic-DeepLab does, and a magnitude ``r`` (0 = the void code); the loss (Eq. 4), the DICE
    loss and the nearest-grid decoding still act on the PE code, unchanged."""
    from pe_panoptic.encoding import pixel_centers, positional_embedding

    B, C, H, W = z.shape
    if C != _OFFSET_CHANNELS:
        raise ValueError(f"code_from_offset: expected {_OFFSET_CHANNELS} channels (du, dv, r), got {C}")
    uv = pixel_centers(H, W, z.device).to(z.dtype)[None] + z[:, :2]  # B 2 H W: the predicted centroid
    pe = positional_embedding(uv, num_harmonics)  # B 2 H W 2L
    code = pe.permute(0, 1, 4, 2, 3).reshape(B, 4 * num_harmonics, H, W)
    return z[:, 2:3] * code


class TransposedConvDecoder(nn.Module):
    """Concatenate encoder maps -> ``num_upsample`` x [ConvTranspose2d(k=2, s=2) + norm + act]
    -> Conv2d(3x3) + norm + act. Output ``[B, width, h * 2^n, w * 2^n]``.

    Args:
        in_channels: channels of the concatenated maps (sum over the backbone outputs).
        width: decoder embedding dimension ``d``.
        num_upsample: number of 2x transposed convolutions (3 in the ICML paper, 4 in paper_v1).
        norm: detectron2 norm name ("BN", "SyncBN", "GN", "") or a callable ``channels -> module``.
        activation: "gelu", "relu", "silu" or "" (none).
        position_input: ``"none"`` (paper), ``"xy"`` or ``"pe"``: concatenate position channels
            (:func:`position_channels`) to the encoder maps (CoordConv). Not in the paper.
        num_harmonics: harmonics of the ``"pe"`` position channels.
        image_skip: ``0`` (paper) or ``C > 0``: the input image, resized (bilinear) to the output
            size and passed through Conv3x3(3 -> C) + norm + act, is concatenated to the last
            upsampled map before the final conv, so the head sees edges at the output stride
            (8/14 px) rather than only the stride-14 tokens. Not in the paper; a named switch
            for small objects (docs/experiments.md "Instance learning with real weights"). ``forward`` then needs ``image``.
        upsample_impl: how the 2x transposed convs compute (:class:`Upsample2x`): ``"matmul"``
            (1x1 conv + pixel shuffle, default) or ``"convtranspose"`` (PyTorch's, same result).
    """

    def __init__(
        self,
        in_channels: int,
        width: int = 256,
        num_upsample: int = 3,
        norm: Union[str, Callable] = "BN",
        activation: str = "gelu",
        position_input: str = "none",
        num_harmonics: int = 4,
        image_skip: int = 0,
        upsample_impl: str = "matmul",
    ):
        super().__init__()
        if int(in_channels) < 1 or int(width) < 1:
            raise ValueError(f"TransposedConvDecoder: in_channels={in_channels} and width={width} must be >= 1")
        if not 0 <= int(num_upsample) <= 6:
            raise ValueError(f"TransposedConvDecoder: num_upsample must be in [0, 6], got {num_upsample}")
        if position_input not in POSITION_INPUTS:
            raise ValueError(f"TransposedConvDecoder: position_input must be one of {POSITION_INPUTS}, got {position_input!r}")
        self.in_channels = int(in_channels)
        self.position_input = position_input
        self.num_harmonics = int(num_harmonics)
        extra = {"none": 0, "xy": 2, "pe": 4 * self.num_harmonics}[position_input]
        self.out_channels = int(width)
        self.num_upsample = int(num_upsample)
        self.scale_factor = 2 ** self.num_upsample
        bias = norm in ("", None)
        if int(image_skip) < 0:
            raise ValueError(f"TransposedConvDecoder: image_skip must be >= 0 channels, got {image_skip}")
        self.image_skip = int(image_skip)
        layers = []
        c = self.in_channels + extra
        for _ in range(self.num_upsample):
            layers.append(_conv_norm_act(Upsample2x(c, width, bias=bias, impl=upsample_impl), norm, activation))
            c = width
        if self.image_skip:
            self.image_conv = _conv_norm_act(nn.Conv2d(3, self.image_skip, 3, padding=1, bias=bias), norm, activation)
            c += self.image_skip
        layers.append(_conv_norm_act(nn.Conv2d(c, width, 3, padding=1, bias=bias), norm, activation))
        self.layers = nn.Sequential(*layers)

    def forward(self, features: Features, image: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``features``: dict (in its order) / sequence of ``[B, C_i, h, w]`` or one tensor;
        ``image``: the normalized network input ``[B, 3, H, W]`` (used only with ``image_skip``)."""
        x = _concat(features)
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"TransposedConvDecoder: expected {self.in_channels} concatenated channels, got shape {tuple(x.shape)}"
            )
        if self.position_input != "none":
            pos = position_channels(self.position_input, x.shape[-2], x.shape[-1], x, self.num_harmonics)
            x = torch.cat((x, pos.to(x.dtype)[None].expand(x.shape[0], -1, -1, -1)), dim=1)
        if not self.image_skip:
            return self.layers(x)
        if image is None or image.dim() != 4 or image.shape[1] != 3:
            raise ValueError(f"TransposedConvDecoder(image_skip={self.image_skip}) needs the input image [B, 3, H, W], "
                             f"got {None if image is None else tuple(image.shape)}")
        x = self.layers[:-1](x)
        img = F.interpolate(image.to(x.dtype), size=x.shape[-2:], mode="bilinear", align_corners=False)
        return self.layers[-1](torch.cat((x, self.image_conv(img)), dim=1))


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
        inst_position: str = "none",
        num_harmonics: int = 4,
    ):
        super().__init__()
        if inst_position not in INST_POSITIONS:
            raise ValueError(f"PixelHeads: inst_position must be one of {INST_POSITIONS}, got {inst_position!r}")
        if inst_position != "none" and inst_channels != 4 * num_harmonics:
            raise ValueError(f"PixelHeads: inst_position={inst_position!r} needs the PE encoding ({4 * num_harmonics} "
                             f"channels), got {inst_channels} instance channels")
        self.inst_position = inst_position
        self.num_harmonics = int(num_harmonics)
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
        self.inst = conv(_OFFSET_CHANNELS if inst_position == "offset" else inst_channels)
        self.depth = conv(1) if depth else None
        self.max_depth = float(max_depth)

    def forward(self, h: torch.Tensor) -> Dict[str, torch.Tensor]:
        inst = self.inst(h)
        if self.inst_position == "rotary":
            inst = rotate_by_position(inst, self.num_harmonics)
        out = {}
        if self.inst_position == "offset":
            # the raw predicted offset to the centroid (normalized units), for the optional direct
            # offset loss (PixelCentroidCriterion offset_weight); not used by the post-processing
            out["inst_offset"] = inst[:, :2]
            inst = code_from_offset(inst, self.num_harmonics)
        out.update({"sem_logits": self.sem(h), "inst": inst})
        if self.depth is not None:
            out["depth"] = self.max_depth * torch.sigmoid(self.depth(h))
        return out
