"""The paper's ablation comparators (Appendix C, ICML Table 4): direct RGB centroid regression and
u / v bins with cross-entropy."""
from __future__ import annotations


import torch
import torch.nn.functional as F

from pe_panoptic.encoding.base import CentroidEncoding, Decoded, coords_to_cell, grid_centers


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
