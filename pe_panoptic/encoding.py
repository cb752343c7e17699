"""Instance encodings: how a pixel's instance centroid is represented as the network's target.

All encodings share one interface so targets, losses, post-processing and tools can switch
between them (the paper's ablations):

* :class:`PositionalEncoding` (the method): ``concat(gamma(u), gamma(v))`` with
  ``gamma(p) = (sin(2^l pi p), cos(2^l pi p))_{l=0..L-1}``; void pixels get the zero vector
  (paper Eq. 2, 3). Loss: ``(||d_u||_2 + ||d_v||_2) / 2`` over the two 2L blocks (Eq. 4).
* :class:`RGBEncoding` ("direct centroid regression", Appendix C): ``(u01, v01, 1)`` for
  instance pixels, ``(0, 0, 0)`` for void; L1 loss.
* :class:`BinEncoding` ("cross-entropy", Appendix C): u and v classified independently into
  ``num_bins`` bins plus one void class each; loss ``(CE_u + CE_v) / 2``.

Coordinates. A centroid ``(cx, cy)`` in pixels of the network input frame (H x W) is normalized
as ``u = 2 (cx + 0.5) / W - 1`` and ``v = 2 (cy + 0.5) / H - 1`` (pixel centers), so ``u, v`` lie
in ``(-1, 1)`` and do not depend on the output stride. The decoding grid has ``gw x gh`` cells;
cell ``k`` has center ``-1 + (2k + 1) / gw``. Because the squared embedding distance splits into
a u-term and a v-term, the nearest grid position is found by two small argmins
(:meth:`CentroidEncoding.decode`), not a ``gh * gw``-way search.

Each encoding owns its behaviour; nothing outside this module dispatches on the encoding's type
or name: decoding (:meth:`~CentroidEncoding.decode`, the brute-force reference
:meth:`~CentroidEncoding.naive_decode` and its metric :attr:`~CentroidEncoding.metric_p`, the
distance scale :attr:`~CentroidEncoding.decode_scale`), the total-variation norm
(:attr:`~CentroidEncoding.tv_norm`), the per-axis code block (:meth:`~CentroidEncoding.axis_channels`),
training diagnostics (:meth:`~CentroidEncoding.code_diagnostics`) and the export spec
(:meth:`~CentroidEncoding.to_spec` / :meth:`CentroidEncoding.from_spec`).
"""
from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import Dict, Mapping, NamedTuple, Optional, Tuple

import torch
import torch.nn.functional as F

__all__ = [
    "positional_embedding",
    "grid_centers",
    "pixel_centers",
    "normalize_coords",
    "Decoded",
    "instance_code_diagnostics",
    "CentroidEncoding",
    "PositionalEncoding",
    "RGBEncoding",
    "BinEncoding",
    "build_encoding",
]


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


class PositionalEncoding(CentroidEncoding):
    """The paper's sine-cosine positional embedding of the centroid (Eq. 2-4)."""

    name = "pe"
    supports_dice = True
    metric_p = 2.0

    def __init__(self, num_harmonics: int = 4):
        if not 1 <= num_harmonics <= 16:
            raise ValueError(f"num_harmonics must be in [1, 16], got {num_harmonics}")
        self.L = int(num_harmonics)
        self.num_channels = 4 * self.L

    def extra_repr(self) -> str:
        return f"L={self.L}"

    @property
    def num_harmonics(self) -> int:
        return self.L

    @property
    def decode_scale(self) -> float:
        """``||(gamma(u), gamma(v))|| = sqrt(2L)``: every grid code has it, the void code is 0."""
        return math.sqrt(2.0 * self.L)

    def to_spec(self) -> dict:
        return {"name": self.name, "num_harmonics": self.L}

    def axis_channels(self) -> slice:
        return slice(0, 2 * self.L)

    def code_diagnostics(self, pred, uv_map, valid):
        """:func:`instance_code_diagnostics` of ``pred`` against the true codes."""
        return instance_code_diagnostics(pred, self.targets(uv_map, valid), valid, self.L)

    def encode(self, uv: torch.Tensor) -> torch.Tensor:
        return torch.cat(
            (positional_embedding(uv[..., 0], self.L), positional_embedding(uv[..., 1], self.L)), dim=-1
        )

    def void_code(self, device=None, dtype=torch.float32) -> torch.Tensor:
        return torch.zeros(self.num_channels, device=device, dtype=dtype)

    def split_distances(self, pred: torch.Tensor, target: torch.Tensor):
        """Euclidean distances of the u block and of the v block, each ``[B, H, W]``."""
        d = pred - target
        du = torch.linalg.vector_norm(d[:, : 2 * self.L], dim=1)
        dv = torch.linalg.vector_norm(d[:, 2 * self.L :], dim=1)
        return du, dv

    def code_loss(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Per-pixel loss of paper Eq. (4), ``(||(y - y_hat)_[u]||_2 + ||(y - y_hat)_[v]||_2) / 2``,
        ``[B, H, W]``, of ``pred`` against the codes ``target`` (both ``[B, 4L, H, W]``)."""
        if pred.dim() != 4 or pred.shape[1] != self.num_channels or pred.shape != target.shape:
            raise ValueError(f"{self!r}.code_loss: pred and target must both be [B, {self.num_channels}, H, W], "
                             f"got {tuple(pred.shape)} and {tuple(target.shape)}")
        du, dv = self.split_distances(pred, target)
        return 0.5 * (du + dv)

    def pixel_loss(self, pred, uv_map, valid):
        return self.code_loss(pred, self.targets(uv_map, valid))

    def decode(self, pred: torch.Tensor, grid: Tuple[int, int]) -> Decoded:
        gh, gw = grid
        pred = pred.float()
        L2 = 2 * self.L
        eu = pred[:, :L2]  # B 2L H W
        ev = pred[:, L2:]
        cu = positional_embedding(grid_centers(gw, pred.device), self.L)  # gw 2L
        cv = positional_embedding(grid_centers(gh, pred.device), self.L)  # gh 2L
        # ||e - c||^2 = ||e||^2 - 2 e.c + ||c||^2 and ||c||^2 = L for every grid code.
        nu = (eu * eu).sum(1)
        nv = (ev * ev).sum(1)
        su = torch.einsum("bchw,kc->bkhw", eu, cu)
        sv = torch.einsum("bchw,kc->bkhw", ev, cv)
        best_su, iu = su.max(1)
        best_sv, iv = sv.max(1)
        d_grid = (nu - 2 * best_su + self.L).clamp_min(0) + (nv - 2 * best_sv + self.L).clamp_min(0)
        d_void = nu + nv
        void = d_void < d_grid
        dist = torch.where(void, d_void, d_grid).sqrt()
        return Decoded(iu, iv, void, dist, d_grid.sqrt())


class RGBEncoding(CentroidEncoding):
    """Direct centroid regression with Painter's RGB code (Appendix C)."""

    name = "rgb"
    num_channels = 3
    tv_norm = "l1"  # the main loss is L1
    metric_p = 1.0

    def axis_channels(self) -> slice:
        return slice(0, 1)

    def encode(self, uv):
        one = torch.ones_like(uv[..., :1])
        return torch.cat(((uv + 1.0) * 0.5, one), dim=-1)

    def void_code(self, device=None, dtype=torch.float32):
        return torch.zeros(3, device=device, dtype=dtype)

    def pixel_loss(self, pred, uv_map, valid):
        return (pred - self.targets(uv_map, valid)).abs().sum(1)

    def decode(self, pred, grid):
        gh, gw = grid
        pred = pred.float()
        u = pred[:, 0] * 2 - 1
        v = pred[:, 1] * 2 - 1
        iu = coords_to_cell(u, gw)
        iv = coords_to_cell(v, gh)
        cu = grid_centers(gw, pred.device)[iu]
        cv = grid_centers(gh, pred.device)[iv]
        code = torch.stack(((cu + 1) * 0.5, (cv + 1) * 0.5, torch.ones_like(cu)), 1)
        d_grid = (pred - code).abs().sum(1)
        d_void = pred.abs().sum(1)
        void = d_void < d_grid
        return Decoded(iu, iv, void, torch.where(void, d_void, d_grid), d_grid)


class BinEncoding(CentroidEncoding):
    """u and v classified independently into ``num_bins`` bins (+1 void class each)."""

    name = "bins"
    supports_tv = False
    code_is_logits = True

    def __init__(self, num_bins: int = 80):
        if num_bins < 2:
            raise ValueError(f"num_bins must be >= 2, got {num_bins}")
        self.num_bins = int(num_bins)
        self.num_channels = 2 * (self.num_bins + 1)

    def extra_repr(self):
        return f"num_bins={self.num_bins}"

    def to_spec(self) -> dict:
        return {"name": self.name, "num_bins": self.num_bins}

    def class_targets(self, uv_map, valid):
        """Class indices ``[B, H, W]`` for u and for v; void pixels get class ``num_bins``."""
        nb = self.num_bins
        cu = coords_to_cell(uv_map[:, 0], nb)
        cv = coords_to_cell(uv_map[:, 1], nb)
        cu = torch.where(valid, cu, torch.full_like(cu, nb))
        cv = torch.where(valid, cv, torch.full_like(cv, nb))
        return cu, cv

    def encode(self, uv):
        nb = self.num_bins
        cu = F.one_hot(coords_to_cell(uv[..., 0], nb), nb + 1)
        cv = F.one_hot(coords_to_cell(uv[..., 1], nb), nb + 1)
        return torch.cat((cu, cv), -1).to(uv.dtype)

    def void_code(self, device=None, dtype=torch.float32):
        code = torch.zeros(self.num_channels, device=device, dtype=dtype)
        code[self.num_bins] = 1
        code[-1] = 1
        return code

    def pixel_loss(self, pred, uv_map, valid):
        nb = self.num_bins
        cu, cv = self.class_targets(uv_map, valid)
        lu = F.cross_entropy(pred[:, : nb + 1], cu, reduction="none")
        lv = F.cross_entropy(pred[:, nb + 1 :], cv, reduction="none")
        return 0.5 * (lu + lv)

    def decode(self, pred, grid):
        gh, gw = grid
        nb = self.num_bins
        pu = pred[:, : nb + 1].float().softmax(1)
        pv = pred[:, nb + 1 :].float().softmax(1)
        conf_u, bu = pu.max(1)
        conf_v, bv = pv.max(1)
        void = (bu == nb) | (bv == nb)
        # the nearest grid position: the most probable non-void bin of each axis
        gconf_u, gbu = pu[:, :nb].max(1)
        gconf_v, gbv = pv[:, :nb].max(1)
        # bins -> grid cells of the requested decoding grid (identical when gw == gh == nb)
        centers = grid_centers(nb, pred.device)
        iu = coords_to_cell(centers[gbu], gw)
        iv = coords_to_cell(centers[gbv], gh)
        return Decoded(iu, iv, void, 1.0 - conf_u * conf_v, 1.0 - gconf_u * gconf_v)

    @torch.no_grad()
    def naive_decode(self, emb, grid, chunk):
        """Joint search over all ``(nb + 1)^2`` (u-bin, v-bin) pairs maximizing ``p_u p_v`` (void if
        either bin is void); see :meth:`CentroidEncoding.naive_decode`."""
        gh, gw = grid
        nb, dev = self.num_bins, emb.device
        pu = emb[:, : nb + 1].softmax(1)
        pv = emb[:, nb + 1 :].softmax(1)
        ncodes = (nb + 1) ** 2
        is_grid = torch.ones(nb + 1, nb + 1, dtype=torch.bool, device=dev)
        is_grid[nb, :] = False
        is_grid[:, nb] = False
        is_grid = is_grid.reshape(-1)
        step = max(1, chunk // ncodes)
        best, arg, gbest, garg = [], [], [], []
        for s in range(0, emb.shape[0], step):
            joint = (pu[s : s + step, :, None] * pv[s : s + step, None, :]).reshape(-1, ncodes)
            b, a = joint.max(1)
            best.append(b)
            arg.append(a)
            b, a = joint.masked_fill(~is_grid, -1.0).max(1)
            gbest.append(b)
            garg.append(a)
        best, arg, gbest, garg = (torch.cat(t) for t in (best, arg, gbest, garg))
        void = (arg // (nb + 1) == nb) | (arg % (nb + 1) == nb)
        centers = grid_centers(nb, dev)
        iu = ((centers[garg // (nb + 1)] + 1) * 0.5 * gw).floor().clamp(0, gw - 1).long()
        iv = ((centers[garg % (nb + 1)] + 1) * 0.5 * gh).floor().clamp(0, gh - 1).long()
        return iu, iv, void, 1.0 - best, 1.0 - gbest


def build_encoding(name: str = "pe", num_harmonics: int = 4, num_bins: int = 80) -> CentroidEncoding:
    """Encoding by name: ``"pe"`` (paper), ``"rgb"`` (direct regression), ``"bins"`` (CE)."""
    if name == "pe":
        return PositionalEncoding(num_harmonics)
    if name == "rgb":
        return RGBEncoding()
    if name == "bins":
        return BinEncoding(num_bins)
    raise ValueError(f"unknown instance encoding {name!r}; choose 'pe', 'rgb' or 'bins'")
