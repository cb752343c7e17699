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
from pe_panoptic.encoding.base import (  # noqa: F401
    CentroidEncoding,
    Decoded,
    coords_to_cell,
    grid_centers,
    instance_code_diagnostics,
    normalize_coords,
    pixel_centers,
    positional_embedding,
)
from pe_panoptic.encoding.comparators import BinEncoding, RGBEncoding  # noqa: F401
from pe_panoptic.encoding.positional import PositionalEncoding  # noqa: F401

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


def build_encoding(name: str = "pe", num_harmonics: int = 4, num_bins: int = 80, norm: str = "l2") -> CentroidEncoding:
    """Encoding by name: ``"pe"`` (paper), ``"rgb"`` (direct regression), ``"bins"`` (CE).
    ``norm`` (PE only): ``"l2"`` (Eq. 4) or ``"squared"``."""
    if name != "pe" and norm != "l2":
        raise ValueError(f"norm={norm!r} applies to the 'pe' encoding only, not {name!r}")
    if name == "pe":
        return PositionalEncoding(num_harmonics, norm)
    if name == "rgb":
        return RGBEncoding()
    if name == "bins":
        return BinEncoding(num_bins)
    raise ValueError(f"unknown instance encoding {name!r}; choose 'pe', 'rgb' or 'bins'")
