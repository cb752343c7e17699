"""Drawing primitives of the synthetic scenes: boolean shape masks on a pixel grid and the
textures that paint things, stuff and void (pure numpy / OpenCV)."""
from __future__ import annotations

import math
from typing import Callable, Tuple

import cv2
import numpy as np

from pe_panoptic.data.synthetic.catalog import STUFF_CATEGORIES

__all__ = [
    "Texture",
    "pixel_grid",
    "disk_mask",
    "ring_mask",
    "regular_polygon",
    "convex_polygon_mask",
    "blob_mask",
    "shape_extent",
    "windowed_mask",
    "shape_mask",
    "smooth_noise",
    "stuff_texture",
    "void_texture",
    "thing_texture",
]

_VOID_GREY = 128.0


# ----------------------------------------------------------------------------------------------
# geometry: boolean masks from a coordinate grid (pixel centers at integer coordinates)
# ----------------------------------------------------------------------------------------------
def pixel_grid(height: int, width: int) -> Tuple[np.ndarray, np.ndarray]:
    """``(yy, xx)`` float32 coordinate grids of shape ``[H, W]``."""
    yy, xx = np.mgrid[0:height, 0:width]
    return yy.astype(np.float32), xx.astype(np.float32)


def disk_mask(grid, center, radius: float) -> np.ndarray:
    yy, xx = grid
    return (xx - center[0]) ** 2 + (yy - center[1]) ** 2 <= radius ** 2


def ring_mask(grid, center, r_out: float, r_in: float) -> np.ndarray:
    yy, xx = grid
    d2 = (xx - center[0]) ** 2 + (yy - center[1]) ** 2
    return (d2 <= r_out ** 2) & (d2 > r_in ** 2)


def regular_polygon(center, circumradius: float, n: int, angle: float) -> np.ndarray:
    """``[n, 2]`` (x, y) vertices with increasing polar angle."""
    phi = angle + 2.0 * np.pi * np.arange(n) / n
    return np.stack([center[0] + circumradius * np.cos(phi),
                     center[1] + circumradius * np.sin(phi)], axis=1)


def convex_polygon_mask(grid, vertices: np.ndarray) -> np.ndarray:
    """Pixels inside a convex polygon whose vertices have increasing polar angle (all edge cross
    products non-negative)."""
    yy, xx = grid
    a = vertices[:, None, None, :]
    e = (np.roll(vertices, -1, axis=0) - vertices)[:, None, None, :]
    cross = e[..., 0] * (yy[None] - a[..., 1]) - e[..., 1] * (xx[None] - a[..., 0])
    return (cross >= 0).all(axis=0)


def blob_mask(grid, center, radius: float, amps: np.ndarray, phases: np.ndarray) -> np.ndarray:
    """Irregular star-shaped blob: ``r(theta) = radius * (1 + sum_k a_k cos(k theta + p_k))``,
    harmonics ``k = 2 .. len(amps) + 1``."""
    yy, xx = grid
    dx, dy = xx - center[0], yy - center[1]
    theta = np.arctan2(dy, dx)
    k = np.arange(2, len(amps) + 2, dtype=np.float32)[:, None, None]
    wobble = (amps[:, None, None] * np.cos(k * theta[None] + phases[:, None, None])).sum(0)
    r = radius * (1.0 + wobble)
    return dx ** 2 + dy ** 2 <= r ** 2


def shape_extent(name: str, size: float) -> float:
    """Circumradius of a thing of class ``name`` whose unoccluded area is ``size ** 2``."""
    if name == "disk":
        return size / math.sqrt(math.pi)
    if name == "square":
        return size / math.sqrt(2.0)
    if name == "triangle":  # equilateral: area = 3 sqrt(3) / 4 R^2
        return size * math.sqrt(4.0 / (3.0 * math.sqrt(3.0)))
    if name == "ring":  # annulus with r_in = 0.5 R: area = pi R^2 (1 - 0.25)
        return size / math.sqrt(0.75 * math.pi)
    raise ValueError(f"shape_extent: unknown thing class {name!r}")


def windowed_mask(grid, center, radius: float, mask_fn: Callable) -> np.ndarray:
    """Full-image mask of ``mask_fn(sub_grid)`` evaluated only on the window of ``grid`` within
    ``radius`` of ``center`` (``mask_fn`` must be False outside that disk)."""
    yy, xx = grid
    h, w = yy.shape
    y0 = max(int(math.floor(center[1] - radius)), 0)
    y1 = min(int(math.ceil(center[1] + radius)) + 1, h)
    x0 = max(int(math.floor(center[0] - radius)), 0)
    x1 = min(int(math.ceil(center[0] + radius)) + 1, w)
    mask = np.zeros((h, w), bool)
    if y0 < y1 and x0 < x1:
        mask[y0:y1, x0:x1] = mask_fn((yy[y0:y1, x0:x1], xx[y0:y1, x0:x1]))
    return mask


def shape_mask(grid, name: str, center, size: float, angle: float) -> np.ndarray:
    """Mask of a thing of class ``name``, unoccluded area ~``size ** 2``, rotated by ``angle``."""
    r = shape_extent(name, size)
    if name == "disk":
        fn = lambda g: disk_mask(g, center, r)  # noqa: E731
    elif name == "ring":
        fn = lambda g: ring_mask(g, center, r, 0.5 * r)  # noqa: E731
    else:
        poly = regular_polygon(center, r, 4 if name == "square" else 3, angle)
        fn = lambda g: convex_polygon_mask(g, poly)  # noqa: E731
    return windowed_mask(grid, center, r, fn)


# ----------------------------------------------------------------------------------------------
# textures: callables ``(y, x, rng) -> float32 [N, 3]`` evaluated only at the pixels they paint
# (1-D integer pixel coordinates; ``rng`` supplies the pixel noise). Parameters are drawn on
# creation.
# Values are in 0..255 before clipping when the image is assembled.
# ----------------------------------------------------------------------------------------------
Texture = Callable[[np.ndarray, np.ndarray, np.random.Generator], np.ndarray]


def smooth_noise(rng: np.random.Generator, height: int, width: int, cells: int) -> np.ndarray:
    """Low-frequency noise: a ``cells x cells`` normal field upsampled bicubically to [H, W]."""
    low = rng.standard_normal((cells, cells)).astype(np.float32)
    return cv2.resize(low, (width, height), interpolation=cv2.INTER_CUBIC)


def _pixel_noise(rng: np.random.Generator, n: int, sigma: float) -> np.ndarray:
    return sigma * rng.standard_normal((n, 3), dtype=np.float32)


def stuff_texture(name: str, rng: np.random.Generator, shape: Tuple[int, int]) -> Texture:
    """Texture of a stuff class: sky = vertical gradient + smooth clouds, grass = oriented
    stripes, wall = two-tone checker; each with a little pixel noise."""
    h, w = shape
    base = np.array(next(c["color"] for c in STUFF_CATEGORIES if c["name"] == name), np.float32)
    if name == "sky":
        slope = rng.uniform(15, 35) / h
        clouds = 12.0 * np.abs(smooth_noise(rng, h, w, int(rng.integers(3, 6))))

        def paint(y, x, r):
            v = clouds[y, x] - slope * (y - 0.5 * h)
            return base + v[:, None] + _pixel_noise(r, len(y), 3.0)
    elif name == "grass":
        phi, period, phase = rng.uniform(0, np.pi), rng.uniform(5, 9), rng.uniform(0, 2 * np.pi)
        tint = np.array([0.4, 1.0, 0.4], np.float32)

        def paint(y, x, r):
            v = 18.0 * np.sin(2 * np.pi * (x * np.cos(phi) + y * np.sin(phi)) / period + phase)
            return base + v[:, None].astype(np.float32) * tint + _pixel_noise(r, len(y), 8.0)
    elif name == "wall":
        cell, ox, oy = rng.uniform(7, 13), rng.uniform(0, 13), rng.uniform(0, 13)

        def paint(y, x, r):
            checker = (np.floor((x + ox) / cell) + np.floor((y + oy) / cell)) % 2
            v = (28.0 * (checker - 0.5))[:, None].astype(np.float32)
            return base + v + _pixel_noise(r, len(y), 6.0)
    else:
        raise ValueError(f"stuff_texture: unknown stuff class {name!r}")
    return paint


def void_texture() -> Texture:
    """Neutral grey with strong per-pixel noise (distinct from every class)."""

    def paint(y, x, r):
        grey = _VOID_GREY + 40.0 * r.standard_normal(len(y), dtype=np.float32)
        return np.repeat(grey[:, None], 3, axis=1)

    return paint


def thing_texture(color, rng: np.random.Generator, center, extent: float) -> Texture:
    """Class colour + per-instance jitter + linear shading across the instance + pixel noise."""
    psi, amp = rng.uniform(0, 2 * np.pi), rng.uniform(0, 15)
    rgb = np.asarray(color, np.float32) + rng.uniform(-18, 18, size=3).astype(np.float32)
    scale = 1.0 / max(extent, 1.0)

    def paint(y, x, r):
        ramp = ((x - center[0]) * np.cos(psi) + (y - center[1]) * np.sin(psi)) * scale
        v = (amp * np.clip(ramp, -1, 1))[:, None].astype(np.float32)
        return rgb + v + _pixel_noise(r, len(y), 6.0)

    return paint

