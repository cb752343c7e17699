"""Shared pieces of the instance encodings: the sine-cosine embedding, grid and pixel centres,
normalized coordinates, training diagnostics, and the :class:`CentroidEncoding` interface."""
from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import Dict, Mapping, NamedTuple, Optional, Tuple

import torch


def positional_embedding(p: torch.Tensor, num_harmonics: int) -> torch.Tensor:
    """gamma(p) of paper Eq. (3): ``[..., 2L]`` ordered (sin l=0, cos l=0, sin l=1, cos l=1, ...)."""
    freqs = math.pi * (2.0 ** torch.arange(num_harmonics, device=p.device, dtype=p.dtype))
    ang = p.unsqueeze(-1) * freqs
    return torch.stack((torch.sin(ang), torch.cos(ang)), dim=-1).flatten(-2)


def grid_centers(n: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """Normalized centers of ``n`` grid cells along one axis: ``-1 + (2k + 1) / n``."""
    return -1.0 + (2.0 * torch.arange(n, device=device, dtype=dtype) + 1.0) / n


def pixel_centers(h: int, w: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """Normalized centres ``[2, h, w]`` (u, v in (-1, 1)) of the pixels of an ``h x w`` map
    covering the input frame: :func:`grid_centers` along each axis, the coordinates of the
    centroid targets."""
    u = grid_centers(w, device, dtype)
    v = grid_centers(h, device, dtype)
    return torch.stack((u[None, :].expand(h, w), v[:, None].expand(h, w)))


def normalize_coords(x: torch.Tensor, size: int) -> torch.Tensor:
    """Pixel coordinate (0-based, pixel-center convention) -> normalized coordinate in (-1, 1)."""
    return 2.0 * (x + 0.5) / size - 1.0


def coords_to_cell(p: torch.Tensor, n: int) -> torch.Tensor:
    """Normalized coordinate -> index of the grid cell (of ``n``) that contains it."""
    return ((p + 1.0) * 0.5 * n).floor().clamp_(0, n - 1).long()


@torch.no_grad()
def instance_code_diagnostics(pred: torch.Tensor, target: torch.Tensor, thing: torch.Tensor, L: int) -> Dict[str, float]:
    """What a PE instance head has learned, on thing pixels: ``pred``, ``target`` ``[B, 4L, H, W]``
    (u block then v block, pairs (sin, cos) per harmonic), ``thing [B, H, W]`` bool. Returns
    ``{"norm": .., "cos_u0": .., "cos_v0": .., ...}``: the mean code norm (a true code has norm
    ``sqrt(2 L)``, the void code 0) and per harmonic the mean cosine between the predicted and
    the true ``(sin, cos)`` pair of each axis; empty if there is no thing pixel."""
    m = thing.bool()
    if not bool(m.any()):
        return {}
    p = pred.float().permute(0, 2, 3, 1)[m]  # N 4L
    t = target.float().permute(0, 2, 3, 1)[m]
    out = {"norm": float(p.norm(dim=1).mean())}
    pp = p.reshape(-1, 2, L, 2)  # axis, harmonic, (sin, cos)
    tt = t.reshape(-1, 2, L, 2)
    cos = (pp * tt).sum(-1) / (pp.norm(dim=-1) * tt.norm(dim=-1)).clamp_min(1e-8)  # N 2 L
    mean = cos.mean(0)
    for a, axis in enumerate("uv"):
        for l in range(L):
            out[f"cos_{axis}{l}"] = float(mean[a, l])
    return out


class Decoded(NamedTuple):
    """Per-pixel decoding against the uv grid (all ``[B, H, W]``)."""

    iu: torch.Tensor  # long, column of the nearest grid cell (void code not considered)
    iv: torch.Tensor  # long, row of the nearest grid cell (void code not considered)
    void: torch.Tensor  # bool, the void code is nearer than any grid position
    dist: torch.Tensor  # float, distance to the chosen code (grid position or void)
    grid_dist: torch.Tensor  # float, distance to the nearest grid code (cell iu, iv)


class CentroidEncoding(ABC):
    """Base class. Subclasses define channels, codes, per-pixel loss and grid decoding."""

    name = "base"
    num_channels: int
    #: whether the per-pixel total-variation loss (Appendix B) applies to this output
    supports_tv = True
    #: whether the generalized DICE loss (Appendix B) applies to this output
    supports_dice = False
    #: norm of the total-variation loss (Eq. 10): that of the encoding's main loss
    tv_norm = "l2"
    #: ``p`` of the Minkowski distance that decodes a code (``None``: not a distance decoder)
    metric_p: Optional[float] = None
    #: the PE harmonics ``L`` (``None``: not a positional code)
    num_harmonics: Optional[int] = None
    #: whether the code is a set of logits (a perfect prediction is the code times a large logit)
    code_is_logits = False

    @property
    def decode_scale(self) -> float:
        """Distance between the void code and a grid code in the decode metric (normalizes
        decode distances to [0, 1])."""
        return 1.0

    def to_spec(self) -> dict:
        """The arguments of :func:`build_encoding` that rebuild this encoding (export metadata)."""
        return {"name": self.name}

    @staticmethod
    def from_spec(spec: Mapping) -> "CentroidEncoding":
        """Inverse of :meth:`to_spec`."""
        from pe_panoptic.encoding import build_encoding

        return build_encoding(**dict(spec))

    def axis_channels(self) -> slice:
        """Channels of :meth:`encode` that code the u axis alone."""
        raise TypeError(f"no per-axis code for {self!r} (supported: PositionalEncoding, RGBEncoding)")

    def code_diagnostics(self, pred: torch.Tensor, uv_map: torch.Tensor, valid: torch.Tensor) -> Dict[str, float]:
        """Training diagnostics of the instance output on the ``valid`` (thing) pixels; none by
        default."""
        return {}

    @torch.no_grad()
    def naive_decode(self, emb: torch.Tensor, grid: Tuple[int, int], chunk: int):
        """Brute-force reference of :meth:`decode` on flat codes ``emb [N, C]``: every pixel
        against all ``gh * gw`` grid codes and the void code (last) in the :attr:`metric_p`
        distance. Returns ``(iu, iv, void, dist, grid_dist)``, each ``[N]``."""
        if self.metric_p is None:
            raise TypeError(f"naive_decode has no metric for {self!r}")
        gh, gw = grid
        dev = emb.device
        v = grid_centers(gh, dev).repeat_interleave(gw)
        u = grid_centers(gw, dev).repeat(gh)
        codes = torch.cat((self.encode(torch.stack((u, v), 1)), self.void_code(dev)[None]), 0)
        step = max(1, chunk // codes.shape[0])
        best, arg, gbest, garg = [], [], [], []
        for s in range(0, emb.shape[0], step):
            d = torch.cdist(emb[s : s + step], codes, p=self.metric_p, compute_mode="donot_use_mm_for_euclid_dist")
            b, a = d.min(1)
            best.append(b)
            arg.append(a)
            b, a = d[:, : gh * gw].min(1)
            gbest.append(b)
            garg.append(a)
        dist, arg, grid_dist, garg = (torch.cat(t) for t in (best, arg, gbest, garg))
        return garg % gw, garg // gw, arg == gh * gw, dist, grid_dist

    @abstractmethod
    def encode(self, uv: torch.Tensor) -> torch.Tensor:
        """Codes of centroids: ``uv [..., 2]`` (u, v normalized) -> ``[..., C]``."""

    @abstractmethod
    def void_code(self, device=None, dtype=torch.float32) -> torch.Tensor:
        """The code of void (unlabeled / stuff) pixels, ``[C]``."""

    def targets(self, uv_map: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """Dense targets ``[B, C, H, W]`` from a centroid map ``uv_map [B, 2, H, W]`` and the
        instance mask ``valid [B, H, W]`` (False = void, gets the void code)."""
        code = self.encode(uv_map.permute(0, 2, 3, 1))  # B H W C
        void = self.void_code(uv_map.device, code.dtype)
        code = torch.where(valid.unsqueeze(-1), code, void)
        return code.permute(0, 3, 1, 2).contiguous()

    @abstractmethod
    def pixel_loss(self, pred: torch.Tensor, uv_map: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """Per-pixel loss ``[B, H, W]`` (to be averaged with EDS weights, Eq. 1)."""

    @abstractmethod
    def decode(self, pred: torch.Tensor, grid: Tuple[int, int]) -> Decoded:
        """Nearest grid position (or void) of every pixel of ``pred [B, C, H, W]``;
        ``grid = (gh, gw)``."""

    def extra_repr(self) -> str:
        return ""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.extra_repr()})"
