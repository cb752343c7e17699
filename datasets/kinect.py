"""The NYU Depth v2 toolbox's Kinect camera model: raw depth -> metres, and projection of the
depth frame onto the RGB frame (what the official toolbox's ``project_depth_map.m`` does).

The raw dump of NYU Depth v2 stores, per depth frame, the Kinect's 16-bit raw depth value (a
disparity-like number, about 600-1090 for 0.5-10 m; 2047 = no measurement) in the depth
camera's own frame. The toolbox turns it into metric depth registered with the RGB image:

1. ``undistort`` both images with the calibrated lens distortion (Bouguet's camera-calibration
   ``rect``: inverse mapping, bilinear, 0-based pixel coordinates, pixels that map outside the
   source image become 255);
2. depth: the undistorted "noise mask" (pixels equal to the frame's maximum raw value) and raw
   values ``< 600`` become 2047; ``depth_rel2depth_abs``:
   ``metres = depthParam1 / (depthParam2 - raw)``, clipped to ``[0, maxDepth]``;
3. back-project every depth pixel (1-based ``meshgrid(1:W, 1:H)`` as written in
   ``depth_plane2depth_world.m``), move the points to the RGB camera (``R``, ``T`` of
   ``camera_params.m``), project them with the RGB intrinsics, round, keep
   ``0 < x < W, 0 < y < H``, and z-buffer them far-to-near (the nearest point wins);
4. clip to ``[0, maxDepth]``; 0 = no depth.

The constants are those of the toolbox's ``camera_params.m`` (calibrated with RGBDemo). This
module is a NumPy re-implementation of those steps; :func:`project_depth_map` is what
:mod:`pe_panoptic.data.nyu_raw` runs on every synchronised frame.
"""
from __future__ import annotations

from typing import Sequence, Tuple

import numpy as np

__all__ = [
    "MAX_DEPTH",
    "DEPTH_PARAM1",
    "DEPTH_PARAM2",
    "RAW_NO_DEPTH",
    "RGB_INTRINSICS",
    "DEPTH_INTRINSICS",
    "RGB_DISTORTION",
    "DEPTH_DISTORTION",
    "DEPTH_TO_RGB_R",
    "DEPTH_TO_RGB_T",
    "depth_rel2depth_abs",
    "undistort",
    "project_depth_map",
]

#: camera_params.m: the maximum depth used, in metres
MAX_DEPTH = 10.0
#: camera_params.m: parameters for making depth absolute (metres = p1 / (p2 - raw))
DEPTH_PARAM1 = 351.3
DEPTH_PARAM2 = 1092.5
#: the raw value the toolbox assigns to "no measurement" (the Kinect's 11-bit maximum)
RAW_NO_DEPTH = 2047.0
#: raw values below this are set to RAW_NO_DEPTH after undistortion (project_depth_map.m)
RAW_MIN_VALID = 600.0

#: (fx, fy, cx, cy) of the RGB and the depth camera (camera_params.m)
RGB_INTRINSICS = (5.1885790117450188e02, 5.1946961112127485e02, 3.2558244941119034e02, 2.5373616633400465e02)
DEPTH_INTRINSICS = (5.8262448167737955e02, 5.8269103270988637e02, 3.1304475870804731e02, 2.3844389626620386e02)
#: (k1, k2, p1, p2, k3) lens distortion (camera_params.m)
RGB_DISTORTION = (2.0796615318809061e-01, -5.8613825163911781e-01, 7.2231363135888329e-04,
                  1.0479627195765181e-03, 4.9856986684705107e-01)
DEPTH_DISTORTION = (-9.9897236553084481e-02, 3.9065324602765344e-01, 1.9290592870229277e-03,
                    -1.9422022475975055e-03, -5.1031725053400578e-01)

# camera_params.m: R = -[...9 values...]; R = reshape(R, [3 3]) (column-major); R = inv(R')
_R_VALUES = -np.array([
    9.9997798940829263e-01, 5.0518419386157446e-03, 4.3011152014118693e-03,
    -5.0359919480810989e-03, 9.9998051861143999e-01, -3.6879781309514218e-03,
    -4.3196624923060242e-03, 3.6662365748484798e-03, 9.9998394948385538e-01,
])
#: rotation from the depth camera to the RGB camera (points_rgb = R @ points_depth + T)
DEPTH_TO_RGB_R = np.linalg.inv(_R_VALUES.reshape(3, 3, order="F").T)
#: translation in metres; camera_params.m's T = [t_x; t_z; t_y] (in that order, as written)
_T_X, _T_Y, _T_Z = 2.5031875059141302e-02, 6.6238747008330102e-04, -2.9342312935846411e-04
DEPTH_TO_RGB_T = np.array([_T_X, _T_Z, _T_Y])


def depth_rel2depth_abs(raw: np.ndarray) -> np.ndarray:
    """``depthParam1 / (depthParam2 - raw)`` metres, clipped to ``[0, MAX_DEPTH]`` (float64).

    ``raw`` is the Kinect value *after* the toolbox's ``swapbytes`` (i.e. the little-endian
    reading of the dump's PGM, see :func:`pe_panoptic.data.nyu_raw.read_netpbm`). The no-depth
    value 2047 gives a negative depth, hence 0; raw values at or above 1092.5 are 0 as well
    (MATLAB divides by zero to ``inf`` there, which the clip maps to ``MAX_DEPTH``; here the
    pole itself is treated as no depth).
    """
    raw = np.asarray(raw, dtype=np.float64)
    den = DEPTH_PARAM2 - raw
    with np.errstate(divide="ignore", invalid="ignore"):
        d = np.where(den > 0, DEPTH_PARAM1 / np.where(den > 0, den, 1.0), 0.0)
    return np.clip(d, 0.0, MAX_DEPTH)


def _apply_distortion(x: np.ndarray, y: np.ndarray, k: Sequence[float]) -> Tuple[np.ndarray, np.ndarray]:
    """Bouguet's ``apply_distortion`` (radial k1, k2, k3 and tangential p1, p2)."""
    k1, k2, p1, p2, k3 = k
    r2 = x * x + y * y
    cdist = 1 + k1 * r2 + k2 * r2 ** 2 + k3 * r2 ** 3
    xd = x * cdist + 2 * p1 * x * y + p2 * (r2 + 2 * x * x)
    yd = y * cdist + p1 * (r2 + 2 * y * y) + 2 * p2 * x * y
    return xd, yd


def undistort(image: np.ndarray, intrinsics: Sequence[float], distortion: Sequence[float],
              fill: float = 255.0) -> np.ndarray:
    """Remove lens distortion like Bouguet's ``rect(I, eye(3), fc, cc, kc, KK)``.

    For every output pixel ``(u, v)`` (0-based) the normalised ray ``((u - cx) / fx, (v - cy) / fy)``
    is distorted and mapped back to pixels; the output is the bilinear interpolation of
    ``image`` there. Pixels whose 2 x 2 neighbourhood leaves the image get ``fill`` (the
    toolbox: 255). ``image``: ``[H, W]`` or ``[H, W, C]``; returns float64 of the same shape.
    """
    img = np.asarray(image, dtype=np.float64)
    squeeze = img.ndim == 2
    if squeeze:
        img = img[..., None]
    if img.ndim != 3:
        raise ValueError(f"undistort: expected [H, W] or [H, W, C], got shape {np.shape(image)}")
    H, W = img.shape[:2]
    fx, fy, cx, cy = intrinsics
    v, u = np.mgrid[0:H, 0:W].astype(np.float64)
    xd, yd = _apply_distortion((u - cx) / fx, (v - cy) / fy, distortion)
    px, py = fx * xd + cx, fy * yd + cy
    x0, y0 = np.floor(px), np.floor(py)
    good = (x0 >= 0) & (x0 <= W - 2) & (y0 >= 0) & (y0 <= H - 2)
    ax, ay = (px - x0)[good], (py - y0)[good]
    xi, yi = x0[good].astype(np.int64), y0[good].astype(np.int64)
    out = np.full(img.shape, float(fill))
    w = [((1 - ay) * (1 - ax)), ((1 - ay) * ax), (ay * (1 - ax)), (ay * ax)]
    src = [img[yi, xi], img[yi, xi + 1], img[yi + 1, xi], img[yi + 1, xi + 1]]
    out[good] = sum(wk[:, None] * sk for wk, sk in zip(w, src))
    return out[..., 0] if squeeze else out


def project_depth_map(raw_depth: np.ndarray, rgb: np.ndarray, undistort_images: bool = True
                      ) -> Tuple[np.ndarray, np.ndarray]:
    """``(depth in metres registered to the RGB frame [H, W] float64, undistorted RGB uint8)``.

    The toolbox's ``project_depth_map.m`` (module docstring). ``raw_depth``: ``[H, W]`` raw Kinect
    values (byte-swapped as the toolbox does); ``rgb``: ``[H, W, 3]`` uint8 of the same size.
    ``undistort_images=False`` skips step 1 (for tests of the geometry alone). Depth 0 = none.
    """
    raw = np.asarray(raw_depth, dtype=np.float64)
    rgb = np.asarray(rgb)
    if raw.ndim != 2 or rgb.ndim != 3 or rgb.shape[:2] != raw.shape or rgb.shape[2] != 3:
        raise ValueError(f"project_depth_map: depth {raw.shape} and RGB {rgb.shape} must be [H, W] and [H, W, 3]")
    H, W = raw.shape
    if undistort_images:
        rgb_out = np.clip(np.rint(undistort(rgb, RGB_INTRINSICS, RGB_DISTORTION)), 0, 255).astype(np.uint8)
        noise = undistort(255.0 * (raw == raw.max()), DEPTH_INTRINSICS, DEPTH_DISTORTION) > 0
        raw = undistort(raw, DEPTH_INTRINSICS, DEPTH_DISTORTION)
    else:
        rgb_out = rgb.astype(np.uint8)
        noise = raw == raw.max()
    raw = np.where((raw < RAW_MIN_VALID) | noise, RAW_NO_DEPTH, raw)
    depth = depth_rel2depth_abs(raw)

    fx_d, fy_d, cx_d, cy_d = DEPTH_INTRINSICS
    yy, xx = np.mgrid[1:H + 1, 1:W + 1].astype(np.float64)  # meshgrid(1:W, 1:H), 1-based
    pts = np.stack([(xx - cx_d) * depth / fx_d, (yy - cy_d) * depth / fy_d, depth], 0).reshape(3, -1)
    pts = DEPTH_TO_RGB_R @ pts + DEPTH_TO_RGB_T[:, None]
    fx, fy, cx, cy = RGB_INTRINSICS
    with np.errstate(divide="ignore", invalid="ignore"):
        x_proj = np.rint(pts[0] * fx / pts[2] + cx)
        y_proj = np.rint(pts[1] * fy / pts[2] + cy)
    d = depth.reshape(-1)
    good = np.flatnonzero(np.isfinite(x_proj) & np.isfinite(y_proj) & (x_proj > 0) & (x_proj < W)
                          & (y_proj > 0) & (y_proj < H))
    # z-buffer: the toolbox writes the points far to near, so each target pixel keeps its
    # nearest point: the minimum depth per pixel (unwritten pixels: 0)
    idx = (y_proj[good].astype(np.int64) - 1) * W + (x_proj[good].astype(np.int64) - 1)  # 1-based (y, x)
    buf = np.full(H * W, np.inf)
    np.minimum.at(buf, idx, d[good])
    out = np.where(np.isinf(buf), 0.0, buf)
    out = np.clip(np.nan_to_num(out.reshape(H, W), nan=0.0), 0.0, MAX_DEPTH)
    return out, rgb_out
