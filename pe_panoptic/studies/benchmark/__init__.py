"""Helpers of ``tools/benchmark.py``, one module per job, all re-exported here: timing and the
matmul peak (:mod:`.timing`), FLOP counting (:mod:`.flops`), the models (:mod:`.models`),
synthetic inputs (:mod:`.synthetic`), the naive post-processing reference (:mod:`.naive`) and
peak memory (:mod:`.memory`).

Ratios, not absolute times, are the figures (the machines these run on are shared): every
comparison is measured in ONE process with the contenders interleaved round by round
(:func:`interleaved_times`), so a slow spell of the machine hits both sides.

* FLOPs: fvcore's :class:`~fvcore.nn.FlopCountAnalysis` counts one multiply-add as one "flop"
  (MACs); :func:`count_macs` adds a handle for ``aten::scaled_dot_product_attention`` (timm's
  fused attention, which fvcore skips) and reports the operators left uncounted (elementwise
  ops, norms that fvcore ignores). Achieved FLOP/s use ``2 * MACs``, the convention of a
  matmul peak measured as ``2 n^3 / t`` (:func:`matmul_fn`).
* Inputs: :func:`synthetic_panoptic_sample` renders a procedural panoptic scene
  (:func:`pe_panoptic.data.synthetic.render_scene`) with COCO-like contiguous classes;
  :func:`noisy_outputs` turns its targets into realistic per-pixel network outputs (perfect
  outputs plus Gaussian noise).
* :func:`naive_painter_instances` is the brute-force reference decoder the post-processing is
  compared with: a full ``gh * gw``-way nearest-neighbour search per pixel
  (:func:`pe_panoptic.postprocess.naive_decode`), Painter-style per-colour thresholding into
  dense ``K x h x w`` masks, SOLOv2 Matrix NMS on dense mask IoUs and sequential pasting. It
  implements the same rules as the ``"painter"`` decoder of :mod:`pe_panoptic.postprocess`,
  so both give the same instances (a test checks it).
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

from pe_panoptic.studies.benchmark.flops import SDPA_OP, ForwardFeatures, count_macs, sdpa_macs
from pe_panoptic.studies.benchmark.memory import (
    POSTPROCESS_MEMORY_PROBE,
    peak_memory_gb,
    postprocess_peak_memory,
    reset_peak_memory,
)
from pe_panoptic.studies.benchmark.models import build_benchmark_model
from pe_panoptic.studies.benchmark.naive import naive_painter_instances, naive_panoptic
from pe_panoptic.studies.benchmark.synthetic import (
    noisy_outputs,
    scaled_scene_config,
    synthetic_panoptic_sample,
    training_inputs,
)
from pe_panoptic.studies.benchmark.timing import (
    DTYPES,
    interleaved_times,
    matmul_fn,
    resolve_device,
    resolve_dtype,
    summarize,
    synchronize,
)

__all__ = [
    "POSTPROCESS_MEMORY_PROBE",
    "postprocess_peak_memory",
    "DTYPES",
    "resolve_device",
    "resolve_dtype",
    "synchronize",
    "interleaved_times",
    "summarize",
    "matmul_fn",
    "SDPA_OP",
    "sdpa_macs",
    "count_macs",
    "ForwardFeatures",
    "build_benchmark_model",
    "scaled_scene_config",
    "synthetic_panoptic_sample",
    "noisy_outputs",
    "training_inputs",
    "naive_painter_instances",
    "naive_panoptic",
    "reset_peak_memory",
    "peak_memory_gb",
    "format_table",
]


def format_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> str:
    """Plain-text table of dict rows (:func:`pe_panoptic.studies.tables.format_table`, ``style="plain"``);
    floats with 4 significant digits, absent keys empty."""
    from pe_panoptic.studies.tables import format_table as _format_table

    return _format_table(columns, [[r.get(c, "") for c in columns] for r in rows], floatfmt=".4g", missing="",
                         style="plain")
