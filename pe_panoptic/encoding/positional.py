"""The paper's encoding: the sine-cosine positional embedding of the centroid (Eq. 2-4)."""
from __future__ import annotations

import math
from typing import Tuple

import torch

from pe_panoptic.encoding.base import CentroidEncoding, Decoded, grid_centers, instance_code_diagnostics, positional_embedding


class PositionalEncoding(CentroidEncoding):
    """The paper's sine-cosine positional embedding of the centroid (Eq. 2-4)."""

    name = "pe"
    supports_dice = True
    metric_p = 2.0

    #: ``"l2"``: Eq. 4, the Euclidean norm of each block's error (the paper); ``"squared"``: its
    #: square (the group's follow-up work), whose minimizer under ambiguity is the mean target
    #: instead of the geometric median (docs/experiments.md, "Why the ICML void setting stalls")
    NORMS = ("l2", "squared")

    def __init__(self, num_harmonics: int = 4, norm: str = "l2"):
        if not 1 <= num_harmonics <= 16:
            raise ValueError(f"num_harmonics must be in [1, 16], got {num_harmonics}")
        if norm not in self.NORMS:
            raise ValueError(f"PositionalEncoding: norm must be one of {self.NORMS}, got {norm!r}")
        self.L = int(num_harmonics)
        self.norm = norm
        self.num_channels = 4 * self.L

    def extra_repr(self) -> str:
        return f"L={self.L}" + (f", norm={self.norm}" if self.norm != "l2" else "")

    @property
    def num_harmonics(self) -> int:
        return self.L

    @property
    def decode_scale(self) -> float:
        """``||(gamma(u), gamma(v))|| = sqrt(2L)``: every grid code has it, the void code is 0."""
        return math.sqrt(2.0 * self.L)

    def to_spec(self) -> dict:
        spec = {"name": self.name, "num_harmonics": self.L}
        if self.norm != "l2":
            spec["norm"] = self.norm
        return spec

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
        if self.norm == "squared":
            return 0.5 * (du * du + dv * dv)
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
