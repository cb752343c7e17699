"""Helpers of ``tools/benchmark.py``: timing, FLOP counting, the matmul peak, synthetic inputs
and the naive post-processing reference.

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

import math
import os
import resource
import statistics
import sys
import textwrap
import time
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pe_panoptic.encoding import CentroidEncoding
from pe_panoptic.postprocess import (
    PostProcessConfig,
    decode_scale,
    matrix_nms,
    merge_instances_and_semantics,
    naive_decode,
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

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


# --------------------------------------------------------------------------------------------
# devices, dtypes, timing
# --------------------------------------------------------------------------------------------


def resolve_device(name: str = "auto") -> torch.device:
    """``"auto"`` -> ``cuda`` when available, else ``cpu``; other names are checked."""
    if name in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name!r}: CUDA is not available on this machine (use auto or cpu)")
    return dev


def resolve_dtype(name: str) -> torch.dtype:
    if name not in DTYPES:
        raise ValueError(f"--dtype {name!r}: choose one of {sorted(DTYPES)}")
    return DTYPES[name]


def synchronize(device: torch.device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def interleaved_times(
    fns: Mapping[str, Callable[[], Any]], *, rounds: int, warmup: int = 1, device="cpu"
) -> Dict[str, List[float]]:
    """Seconds per call of every function of ``fns``, measured interleaved in one process.

    Each function is first called ``warmup`` times; then ``rounds`` rounds call every function
    once, in an order rotated by one each round (no function always runs right after another).
    The device is synchronized around every call, so CUDA work is timed in full.
    """
    if rounds < 1 or warmup < 0:
        raise ValueError(f"rounds must be >= 1 and warmup >= 0, got rounds={rounds}, warmup={warmup}")
    if not fns:
        raise ValueError("interleaved_times: nothing to time")
    names = list(fns)
    for name in names:
        for _ in range(warmup):
            fns[name]()
    synchronize(device)
    times: Dict[str, List[float]] = {n: [] for n in names}
    for r in range(rounds):
        for j in range(len(names)):
            name = names[(r + j) % len(names)]
            synchronize(device)
            t0 = time.perf_counter()
            fns[name]()
            synchronize(device)
            times[name].append(time.perf_counter() - t0)
    return times


def summarize(times: Sequence[float]) -> Dict[str, float]:
    """median / min / mean / std (seconds) of repeated timings."""
    if not times:
        raise ValueError("summarize: no timings")
    return {
        "median_s": float(statistics.median(times)),
        "min_s": float(min(times)),
        "mean_s": float(statistics.fmean(times)),
        "std_s": float(statistics.pstdev(times)) if len(times) > 1 else 0.0,
        "n": len(times),
    }


def matmul_fn(n: int, device, dtype: torch.dtype, repeats: int = 1) -> Tuple[Callable[[], Any], float]:
    """A function doing ``repeats`` ``[n, n] @ [n, n]`` matmuls in ``dtype`` and its FLOPs
    (``2 n^3`` per matmul): the peak the model's achieved FLOP/s are compared with."""
    if n < 1 or repeats < 1:
        raise ValueError(f"matmul size and repeats must be >= 1, got n={n}, repeats={repeats}")
    g = torch.Generator().manual_seed(0)
    a = torch.randn(n, n, generator=g).to(device=device, dtype=dtype)
    b = torch.randn(n, n, generator=g).to(device=device, dtype=dtype)
    out = torch.empty(n, n, device=device, dtype=dtype)

    def run():
        for _ in range(repeats):
            torch.matmul(a, b, out=out)
        return out

    return run, 2.0 * n**3 * repeats


# --------------------------------------------------------------------------------------------
# FLOPs
# --------------------------------------------------------------------------------------------


def _sdpa_macs(inputs: List[Any], outputs: List[Any]) -> int:
    """MACs of ``scaled_dot_product_attention(q [.., L, E], k [.., S, E], v [.., S, Ev])``:
    ``Q K^T`` (L S E) plus ``P V`` (L S Ev) per batch x head."""
    from fvcore.nn.jit_handles import get_shape

    q, k, v = (get_shape(x) for x in inputs[:3])
    batch = math.prod(q[:-2])
    return int(batch * q[-2] * k[-2] * (q[-1] + v[-1]))


def count_macs(module: nn.Module, inputs) -> Tuple[int, Dict[str, int]]:
    """Multiply-accumulates of one forward of ``module(*inputs)`` with fvcore (its "flops").

    Returns ``(macs, uncounted)``: ``uncounted`` maps operators fvcore skipped (elementwise
    ops, activations) to their call counts. Attention through PyTorch SDPA is counted.
    """
    from fvcore.nn import FlopCountAnalysis

    fa = FlopCountAnalysis(module, inputs)
    fa.set_op_handle("aten::scaled_dot_product_attention", _sdpa_macs)
    fa.unsupported_ops_warnings(False)
    fa.uncalled_modules_warnings(False)
    fa.tracer_warnings("none")
    macs = int(fa.total())
    return macs, dict(fa.unsupported_ops())


class ForwardFeatures(nn.Module):
    """``model.forward_features`` as a module returning a tuple (tracing / FLOP counting)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor):
        m = self.model
        if torch.jit.is_tracing():
            # under the tracer shapes are tensors and the decoder's same-size check of the
            # feature dict fails: hand it the concatenated maps (what it computes first)
            feats = m.backbone(x)
            cat = torch.cat(list(feats.values()), dim=1)
            h = m.decoder(cat, x)  # the decoder uses the image only with image_skip
            return tuple(m.heads(h).values())
        return tuple(m.forward_features(x).values())


# --------------------------------------------------------------------------------------------
# models
# --------------------------------------------------------------------------------------------


def build_benchmark_model(
    *,
    config_file: Optional[str] = None,
    overrides: Sequence[str] = (),
    backbone: str = "vit_base_patch14_dinov2",
    model_kwargs: Optional[Mapping] = None,
    decoder_width: int = 256,
    num_classes: int = 133,
    num_things: int = 80,
    depth: bool = False,
) -> nn.Module:
    """A :class:`pe_panoptic.modeling.meta_arch.PixelCentroidHead` from a LazyConfig (``model`` node,
    ``key=value`` overrides) or, without a config, from a DINOv2 backbone name: the paper's
    architecture (4 block outputs, 3 transposed convs, ``decoder_width``), ``num_classes``
    classes of which the first ``num_things`` are things (COCO: 133 / 80), random init."""
    if config_file:
        from detectron2.config import instantiate

        from pe_panoptic.engine.config_overrides import load_config

        if not os.path.isfile(config_file):
            raise FileNotFoundError(f"--config-file {config_file!r} does not exist")
        cfg = load_config(config_file, overrides)
        if "model" not in cfg:
            raise ValueError(f"--config-file {config_file!r} has no 'model' node")
        return instantiate(cfg.model)
    if overrides:
        raise ValueError(f"config overrides {list(overrides)} need --config-file (the model is built from --backbone)")
    from pe_panoptic.modeling.backbone import DEFAULT_OUT_INDICES, SUPPORTED_MODELS, DINOv2Backbone
    from pe_panoptic.modeling.decoder import TransposedConvDecoder, concat_channels
    from pe_panoptic.modeling.meta_arch import PixelCentroidHead

    if backbone not in SUPPORTED_MODELS:
        raise ValueError(f"--backbone {backbone!r}: choose one of {SUPPORTED_MODELS}")
    if not 0 <= num_things <= num_classes or num_classes < 1:
        raise ValueError(f"need 0 <= num_things <= num_classes and num_classes >= 1, got {num_things}, {num_classes}")
    kwargs = dict(model_kwargs or {})
    size = backbone.split("_")[1]
    depth_blocks = int(kwargs.get("depth", {"small": 12, "base": 12, "large": 24, "giant": 40}[size]))
    out_indices = DEFAULT_OUT_INDICES[size]
    if max(out_indices) >= depth_blocks:  # a shallow test model: its last 4 blocks (or fewer)
        out_indices = tuple(range(max(0, depth_blocks - 4), depth_blocks))
    bb = DINOv2Backbone(backbone, out_indices, model_kwargs=kwargs)
    dec = TransposedConvDecoder(concat_channels(bb.output_shape()), decoder_width, 3)
    return PixelCentroidHead(
        backbone=bb, decoder=dec, decoder_width=decoder_width, num_classes=num_classes,
        thing_ids=list(range(num_things)), depth=depth, tasks=("sem", "inst", "depth") if depth else ("sem", "inst"),
    )


# --------------------------------------------------------------------------------------------
# synthetic inputs
# --------------------------------------------------------------------------------------------


def scaled_scene_config(size: Tuple[int, int], min_instances: int = 10, max_instances: int = 25):
    """A :class:`pe_panoptic.data.synthetic.SceneConfig` whose lengths (tuned for 168 px images)
    scale with ``min(size)``, with a COCO-like 10-25 instances."""
    from pe_panoptic.data.synthetic import SceneConfig

    s = min(size) / 168.0
    return SceneConfig(
        min_instances=min_instances, max_instances=max_instances, min_size=8.0 * s, max_size=48.0 * s,
        crowd_part_size=(5.0 * s, 10.0 * s), crowd_spread=(6.0 * s, 14.0 * s),
        void_radius=(8.0 * s, 32.0 * s), min_visible_area=int(16 * s * s),
    )


def synthetic_panoptic_sample(
    size: Tuple[int, int], seed: int = 0, *, num_classes: int = 133, num_things: int = 80,
    thing_ids: Optional[Sequence[int]] = None, min_instances: int = 10, max_instances: int = 25,
) -> Tuple[np.ndarray, np.ndarray, List[dict]]:
    """One procedural panoptic scene ``(image uint8 [H, W, 3], pan_ids int64 [H, W],
    segments_info)`` with contiguous classes: each thing segment gets a random class of
    ``thing_ids`` (default ``0 .. num_things - 1``, COCO-like), each stuff segment one of the
    other classes of ``0 .. num_classes - 1`` (seeded). Instance sizes scale with the image
    (``render_scene`` is tuned for 168 px)."""
    from pe_panoptic.data.synthetic import render_scene, synthetic_panoptic_metadata

    h, w = (int(v) for v in size)
    if h < 32 or w < 32:
        raise ValueError(f"synthetic scene size must be >= 32 x 32, got {size}")
    thing_cls = sorted({int(t) for t in (range(num_things) if thing_ids is None else thing_ids)})
    stuff_cls = sorted(set(range(num_classes)) - set(thing_cls))
    if not thing_cls or not stuff_cls or thing_cls[0] < 0 or thing_cls[-1] >= num_classes:
        raise ValueError(f"need thing classes (num_things / thing_ids) and stuff classes in "
                         f"[0, num_classes={num_classes}), got things {thing_cls[:8]}")
    rng = np.random.default_rng(seed)
    sample = render_scene(rng, (h, w), scaled_scene_config((h, w), min_instances, max_instances))
    things = set(synthetic_panoptic_metadata()["thing_dataset_id_to_contiguous_id"])
    segments = []
    for seg in sample.segments_info:
        isthing = seg["category_id"] in things
        cat = int(rng.choice(thing_cls if isthing else stuff_cls))
        segments.append(dict(seg, category_id=cat, isthing=isthing))
    return sample.image, sample.panoptic.astype(np.int64), segments


def noisy_outputs(
    targets: Mapping[str, torch.Tensor], encoding: CentroidEncoding, num_classes: int, *,
    noise: float = 0.1, logit: float = 5.0, generator: Optional[torch.Generator] = None,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Realistic outputs of one image from its targets (:func:`pe_panoptic.data.targets.panoptic_targets`):
    ``sem_logits [N, h, w]`` = ``logit`` x one-hot(class) + N(0, 1) noise (ignore pixels: noise
    only) and ``inst [C, h, w]`` = ``encoding.targets`` + N(0, ``noise``^2)."""
    sem = targets["sem_seg"]
    h, w = sem.shape
    known = sem < num_classes
    onehot = F.one_hot(torch.where(known, sem, torch.zeros_like(sem)), num_classes).permute(2, 0, 1).float()
    sem_logits = onehot * (logit * known.float()) + torch.randn(num_classes, h, w, generator=generator)
    inst = encoding.targets(targets["inst_uv"][None], targets["inst_valid"][None])[0]
    inst = inst + noise * torch.randn(inst.shape, generator=generator)
    return sem_logits, inst


def training_inputs(
    batch: int, size: int, *, num_classes: int = 133, num_things: int = 80, thing_ids: Optional[Sequence[int]] = None,
    output_stride: float = 14 / 8, seed: int = 0, distinct: int = 2, depth: bool = False,
) -> List[dict]:
    """``batch`` mapped training samples (``image`` uint8 ``[3, size, size]`` + ``targets`` of
    :func:`pe_panoptic.data.targets.panoptic_targets` at ``round(size / output_stride)``, plus metric
    ``depth`` / ``depth_valid`` targets of a synthetic 1-9 m ramp when ``depth``), cycling over
    ``distinct`` synthetic scenes (rendering big scenes is slow)."""
    from pe_panoptic.data.depth_labels import depth_targets
    from pe_panoptic.data.targets import panoptic_targets

    if batch < 1 or size < 32:
        raise ValueError(f"need batch >= 1 and size >= 32, got batch={batch}, size={size}")
    out_hw = (int(round(size / output_stride)),) * 2
    scenes = []
    for i in range(min(batch, max(1, distinct))):
        image, pan, segs = synthetic_panoptic_sample((size, size), seed + i, num_classes=num_classes,
                                                     num_things=num_things, thing_ids=thing_ids)
        t = panoptic_targets(pan, segs, input_hw=(size, size), output_hw=out_hw)
        if depth:
            ramp = np.linspace(1.0, 9.0, size, dtype=np.float32)[:, None].repeat(size, 1)
            t.update(depth_targets(ramp, out_hw, "metric"))
        scenes.append({"image": torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))),
                       "height": size, "width": size, "targets": t})
    return [scenes[i % len(scenes)] for i in range(batch)]


# --------------------------------------------------------------------------------------------
# naive post-processing reference
# --------------------------------------------------------------------------------------------


@torch.no_grad()
def naive_painter_instances(
    inst: torch.Tensor, encoding: CentroidEncoding, cfg: Optional[PostProcessConfig] = None
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Brute-force class-agnostic instances of one image (the reference for timing and testing).

    1. every pixel against all ``gh * gw`` grid codes and the void code
       (:func:`pe_panoptic.postprocess.naive_decode`);
    2. one candidate per decoded colour (grid cell) ``k``; its dense mask thresholds every pixel
       against the colour: decoded cell within ``painter_cell_radius`` cells (Chebyshev) of
       ``k``; score ``1 - mean normalized decode distance`` over the mask;
    3. top ``painter_pre_nms_topk`` by score, SOLOv2 Matrix NMS on the dense mask IoUs
       (``K x hw @ hw x K``), top ``painter_max_instances`` by decayed score;
    4. paste the masks one by one in decayed-score order, skipping a mask more than
       ``overlap_thresh`` covered by the pixels already pasted;
    5. drop instances under ``min_instance_area`` (fraction of ``h * w``), renumber ``1..M``.

    Returns ``inst_map [h, w]`` long and ``scores [M]``, like
    :func:`pe_panoptic.postprocess.instance_map_from_outputs` with ``decoder="painter"``.
    """
    cfg = cfg or PostProcessConfig(decoder="painter")
    gh, gw = cfg.grid
    _, h, w = inst.shape
    dev = inst.device
    dec = naive_decode(inst, encoding, cfg.grid)
    iu, iv, void = dec.iu.reshape(-1), dec.iv.reshape(-1), dec.void.reshape(-1)
    ndist = (dec.dist.reshape(-1).float() / decode_scale(encoding)).clamp(0.0, 1.0)
    valid = ~void
    colours = torch.unique((iv * gw + iu)[valid])
    label = torch.zeros(h * w, dtype=torch.long, device=dev)
    if colours.numel() == 0:
        return label.view(h, w), torch.zeros(0, device=dev)
    r = cfg.painter_cell_radius
    masks = (
        ((iv[None] - (colours // gw)[:, None]).abs() <= r)
        & ((iu[None] - (colours % gw)[:, None]).abs() <= r)
        & valid[None]
    )  # K x hw, dense
    mf = masks.double()
    area = mf.sum(1)
    score = 1.0 - (mf @ ndist.double()) / area
    order = torch.sort(score, descending=True, stable=True).indices[: cfg.painter_pre_nms_topk]
    mf, score, area = mf[order], score[order], area[order]
    inter = mf @ mf.T
    iou = inter / (area[:, None] + area[None, :] - inter)
    decayed = matrix_nms(iou, score, cfg.matrix_nms_sigma)
    sel = torch.sort(decayed, descending=True, stable=True).indices[: cfg.painter_max_instances]
    sel = sel[decayed[sel] >= cfg.painter_score_thresh]
    n = 0
    for i in sel.tolist():
        m = masks[order[i]]
        if float((m & (label > 0)).sum()) > cfg.overlap_thresh * float(area[i]):
            continue
        new = m & (label == 0)
        if bool(new.any()):
            n += 1
            label[new] = n
    counts = torch.bincount(label, minlength=n + 1)[1:]
    dsum = torch.bincount(label, weights=ndist.double(), minlength=n + 1)[1:]
    keep = counts >= cfg.min_instance_area * h * w
    lut = torch.zeros(n + 1, dtype=torch.long, device=dev)
    lut[1:][keep] = torch.arange(1, int(keep.sum()) + 1, device=dev)
    scores = (1.0 - dsum[keep] / counts[keep].clamp_min(1)).float()
    return lut[label].view(h, w), scores


def naive_panoptic(
    sem_logits: torch.Tensor, inst: torch.Tensor, encoding: CentroidEncoding, thing_ids: Iterable[int],
    cfg: Optional[PostProcessConfig] = None,
):
    """:func:`naive_painter_instances` + the panoptic merge of :mod:`pe_panoptic.postprocess`."""
    cfg = cfg or PostProcessConfig(decoder="painter")
    inst_map, scores = naive_painter_instances(inst, encoding, cfg)
    return merge_instances_and_semantics(
        inst_map, scores, sem_logits, list(thing_ids), cfg.thing_fraction, cfg.min_stuff_area
    )


# --------------------------------------------------------------------------------------------
# memory, tables
# --------------------------------------------------------------------------------------------


def reset_peak_memory(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_gb(device) -> Tuple[float, str]:
    """Peak memory and what it measures: CUDA ``max_memory_allocated`` (since the last
    :func:`reset_peak_memory`), on CPU the process's peak resident set size (``ru_maxrss``,
    whole process lifetime: model, data and Python included)."""
    if torch.device(device).type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30, "cuda_max_memory_allocated"
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, "cpu_peak_rss"


def format_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> str:
    """Plain-text table; floats with 4 significant digits."""

    def fmt(v):
        if isinstance(v, float):
            return f"{v:.4g}"
        return str(v)

    cells = [[fmt(r.get(c, "")) for c in columns] for r in rows]
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(columns)]
    line = "  ".join(c.ljust(widths[i]) for i, c in enumerate(columns))
    sep = "  ".join("-" * wd for wd in widths)
    body = ["  ".join(row[i].ljust(widths[i]) for i in range(len(columns))) for row in cells]
    return "\n".join([line, sep] + body)


# ---------------------------------------------------------------------------------------------
# peak memory of post-processing at a large original size (a fresh process: peak RSS is per process)
# ---------------------------------------------------------------------------------------------
#: argv: repository root, H, W, decode_at, number of classes; prints the peak RSS (bytes) above
#: the random network outputs (a 96 x 144 output map, PE L = 4, a 40 x 40 grid, half the classes things)
POSTPROCESS_MEMORY_PROBE = textwrap.dedent("""
    import sys, types
    # only torch is needed: skip the package __init__ (detectron2, timm) to keep the probe cheap
    pkg = types.ModuleType("pe_panoptic"); pkg.__path__ = [sys.argv[1] + "/pe_panoptic"]
    sys.modules["pe_panoptic"] = pkg
    import torch
    torch.set_num_threads(1)
    from pe_panoptic.encoding import build_encoding
    from pe_panoptic.postprocess import PostProcessConfig, batch_results
    H, W, decode_at, N = int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], int(sys.argv[5])
    h, w = 96, 144  # the output map of a 168 x 252 input
    g = torch.Generator().manual_seed(0)
    enc = build_encoding("pe", num_harmonics=4)
    outputs = {"sem_logits": 3 * torch.randn(1, N, h, w, generator=g),
               "inst": 0.5 * torch.randn(1, enc.num_channels, h, w, generator=g),
               "depth": torch.rand(1, 1, h, w, generator=g)}
    def status(key):  # /proc/self/status in bytes (VmHWM, unlike ru_maxrss, restarts at exec)
        with open("/proc/self/status") as f:
            return next(int(l.split()[1]) * 1024 for l in f if l.startswith(key + ":"))
    try:  # restart the high-water mark here ("5": reset peak RSS, Linux >= 4.0)
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        base = status("VmRSS")
    except OSError:
        base = status("VmHWM")
    (res,) = batch_results(outputs, [(168, 252)], [(H, W)], enc, list(range(N // 2)),
                           PostProcessConfig(grid=(40, 40)), decode_at=decode_at, chunk_bytes=64 << 20)
    assert res["panoptic_seg"][0].shape == res["sem_seg"].shape == res["depth"].shape == (H, W)
    print(status("VmHWM") - base)
""")


def postprocess_peak_memory(height: int, width: int, decode_at: str = "output", num_classes: int = 133,
                            timeout: float = 900) -> int:
    """Peak RSS in bytes that ``batch_results`` adds, in a fresh process, to post-process one image
    of ``height x width`` (Linux: ``/proc/self/status``)."""
    import subprocess

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    res = subprocess.run([sys.executable, "-c", POSTPROCESS_MEMORY_PROBE, root, str(int(height)), str(int(width)),
                          decode_at, str(int(num_classes))], capture_output=True, text=True, timeout=timeout)
    if res.returncode:
        raise RuntimeError(f"post-processing memory probe failed (rc {res.returncode}):\n{res.stderr[-3000:]}")
    return int(res.stdout.strip().splitlines()[-1])
