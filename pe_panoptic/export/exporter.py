"""Export of :class:`pe_panoptic.modeling.meta_arch.PixelCentroidHead` to TorchScript and ONNX.

What is exported is the **network**: DINOv2 encoder -> transposed-conv decoder -> task heads
(:class:`ExportableNetwork`). Input: ``image [B, 3, H, W]`` float32, RGB, normalized with the
model's ``pixel_mean`` / ``pixel_std``, padded at the bottom / right with black (pixel value 0,
as the dataset mapper pads) so that H and W are multiples of 14 (:func:`preprocess`). Outputs, at ``8/14`` of the input (the decoder's output stride):
``sem_logits [B, N, h, w]``, ``inst [B, C, h, w]`` (the instance code, e.g. PE with ``C = 4L``)
and, for models with a depth head, ``depth [B, 1, h, w]``. Sizes are fixed or dynamic (batch,
H and W dynamic; any multiple of 14 works because timm resamples the ViT position embedding at
run time).

The **post-processing** is the separate torch function :func:`postprocess` (any device):
it crops each image's unpadded region from the outputs, decodes the panoptic segmentation with
:func:`pe_panoptic.postprocess.panoptic_from_outputs` and pastes it at the original image size:
the computation of ``PixelCentroidHead.inference`` (identical results, checked in the tests),
given the unpadded (resized) image sizes.
It is not inside the exported graph: the panoptic decoding is data-dependent throughout (the
number of candidate cells and segments, ``torch.unique`` with counts, a Cluster-NMS fixed-point
loop whose number of passes depends on the data, ``segments_info`` as a list of dicts).
``torch.jit.trace`` would freeze the control flow and the sizes of the example, and
``torch.jit.script`` / ONNX ``Loop`` would need a rewrite of the post-processing in a restricted
subset of Python; the dense network is >99% of the compute, so the split costs nothing in speed.
:class:`OnnxPanopticPredictor` packages ONNX network + :func:`preprocess` + :func:`postprocess`
for users who want panoptic results from the exported file (it needs torch and detectron2's
transforms for the resize, not the model code).

ONNX: the legacy TorchScript-based exporter (``torch.onnx.export(..., dynamo=False)``) at opset
18. The default dynamo exporter of torch 2.14 needs the ``onnxscript`` package (not installed
here, so that path is untested); pass ``dynamo=True`` to :func:`export_onnx` where it is. timm resamples the position
embedding with antialiased bicubic interpolation (``aten::_upsample_bicubic2d_aa``), which the
legacy exporter does not know; :func:`register_onnx_symbolics` maps it to ONNX ``Resize``
(opset 18: ``antialias=1``, ``cubic_coeff_a=-0.5``, ``exclude_outside=1``, ``half_pixel``), which
matches PyTorch to ~1e-5 in onnxruntime.

Tracing caveat: timm skips the resampling when the input grid equals the position-embedding
grid (``img_size / 14``); a trace at that size would bake the skip in. For dynamic exports
:func:`trace_size` therefore moves the example off that grid (the graph is size-generic).
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import warnings
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pe_panoptic.encoding import CentroidEncoding
from pe_panoptic.export.checked_graph import CheckedGraph  # noqa: F401  (re-exported)
from pe_panoptic.postprocess import PostProcessConfig, panoptic_from_outputs, resize_panoptic  # noqa: F401
from pe_panoptic.postprocess import batch_results as postprocess  # the documented post-processing of exported outputs

__all__ = [
    "ONNX_OPSET",
    "ExportableNetwork",
    "check_network_input",
    "register_onnx_symbolics",
    "trace_size",
    "export_torchscript",
    "CheckedGraph",
    "export_onnx",
    "export_metadata",
    "encoding_from_spec",
    "preprocess",
    "postprocess",
    "OnnxPanopticPredictor",
]

#: ONNX opset of the exports (Resize with antialias needs >= 18)
ONNX_OPSET = 18


class ExportableNetwork(nn.Module):
    """The network of a ``PixelCentroidHead`` as a tensor -> tuple module (traceable).

    ``forward(image)`` with ``image [B, 3, H, W]`` normalized and padded (module doc) returns
    ``(sem_logits, inst)`` or ``(sem_logits, inst, depth)`` (:attr:`output_names`). Same
    computation as ``PixelCentroidHead.forward_features``; the backbone's feature maps are
    concatenated here so that the decoder receives one tensor.
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        for attr in ("backbone", "decoder", "heads"):
            if not hasattr(model, attr):
                raise TypeError(
                    f"ExportableNetwork needs a PixelCentroidHead-like model with .{attr}, got {type(model).__name__}"
                )
        self.backbone = model.backbone
        self.decoder = model.decoder
        self.heads = model.heads
        self.with_depth = getattr(model.heads, "depth", None) is not None
        self.size_divisibility = int(getattr(model, "size_divisibility", 14))

    @property
    def output_names(self) -> Tuple[str, ...]:
        return ("sem_logits", "inst", "depth") if self.with_depth else ("sem_logits", "inst")

    def forward(self, image: torch.Tensor):
        feats = self.backbone(image)
        x = torch.cat(list(feats.values()), dim=1)
        out = self.heads(self.decoder(x, image))  # the decoder uses the image only with image_skip
        return tuple(out[k] for k in self.output_names)


# --------------------------------------------------------------------------------------------
# export
# --------------------------------------------------------------------------------------------
def _bicubic_aa_symbolic(g, input, output_size, align_corners, scale_factors):
    """ONNX Resize for ``aten::_upsample_bicubic2d_aa`` (PIL-style antialiased bicubic)."""
    from torch.onnx._internal.torchscript_exporter import symbolic_helper as sh

    if sh._maybe_get_const(align_corners, "b") is True:
        return sh._unimplemented("_upsample_bicubic2d_aa", "align_corners=True")
    shape = g.op("Shape", input)
    batch_channels = sh._slice_helper(g, shape, axes=[0], starts=[0], ends=[2])
    size = g.op("Cast", output_size, to_i=7)  # INT64
    sizes = g.op("Concat", batch_channels, size, axis_i=0)
    empty = sh._optional_input_placeholder_tensor(g)
    return g.op(
        "Resize", input, empty, empty, sizes,
        mode_s="cubic", cubic_coeff_a_f=-0.5, antialias_i=1, exclude_outside_i=1,
        coordinate_transformation_mode_s="half_pixel",
    )


_REGISTERED_OPSETS: set = set()


def register_onnx_symbolics(opset: int = ONNX_OPSET) -> None:
    """Register the legacy-exporter symbolic of antialiased bicubic resize (module doc);
    idempotent. Needs ``opset >= 18``."""
    if opset < 18:
        raise ValueError(f"ONNX export needs opset >= 18 (Resize with antialias), got {opset}")
    if opset not in _REGISTERED_OPSETS:
        torch.onnx.register_custom_op_symbolic("aten::_upsample_bicubic2d_aa", _bicubic_aa_symbolic, opset)
        _REGISTERED_OPSETS.add(opset)


def _check_size(height: int, width: int, divisor: int) -> Tuple[int, int]:
    h, w = int(height), int(width)
    if h <= 0 or w <= 0 or h % divisor or w % divisor:
        raise ValueError(f"export size {h}x{w} (h x w) must be positive multiples of {divisor}")
    return h, w


def _pos_grid(net: ExportableNetwork) -> Optional[Tuple[int, int]]:
    vit = getattr(net.backbone, "vit", None)
    grid = getattr(getattr(vit, "patch_embed", None), "grid_size", None)
    return tuple(int(g) for g in grid) if grid is not None else None


def trace_size(net: ExportableNetwork, height: int, width: int, dynamic: bool) -> Tuple[int, int]:
    """Example size to trace with: ``(height, width)``, except for a dynamic export at exactly
    the position-embedding grid, where the width grows by one patch (module doc)."""
    p = net.size_divisibility
    h, w = _check_size(height, width, p)
    if dynamic and _pos_grid(net) == (h // p, w // p):
        w += p
    return h, w


@contextlib.contextmanager
def _quiet_tracing():
    """Silence the deprecation notices of ``torch.jit.trace`` and of the legacy ONNX exporter (the
    documented export paths here) and the tracer's shape warnings (sizes come from the input:
    the trace stays generic)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"`torch\.jit\.(trace|script)", category=FutureWarning)
        warnings.filterwarnings("ignore", message=r".*legacy TorchScript-based ONNX", category=DeprecationWarning)
        warnings.filterwarnings("ignore", message=r"The feature will be removed", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        yield


def _example(net: ExportableNetwork, hw: Tuple[int, int], batch: int = 1) -> torch.Tensor:
    dev = next(net.parameters()).device
    g = torch.Generator().manual_seed(0)
    return torch.randn(batch, 3, *hw, generator=g).to(dev)


def export_torchscript(model: nn.Module, path: str, height: int, width: int, dynamic: bool = True):
    """Trace the network (:class:`ExportableNetwork`), put it behind its input check
    (:class:`CheckedGraph`, scripted) and save it to ``path``. Returns the saved module. The trace
    is size-generic when ``dynamic`` (any multiple of 14, any batch)."""
    net = ExportableNetwork(model).eval()
    hw = trace_size(net, height, width, dynamic)
    x = _example(net, hw)
    with torch.no_grad(), _quiet_tracing():
        traced = torch.jit.trace(net, x, check_trace=False)
    with _quiet_tracing():
        checked = torch.jit.script(CheckedGraph(traced, net.size_divisibility, (0, 0) if dynamic else hw))
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    checked.save(path)
    return checked


def export_onnx(
    model: nn.Module,
    path: str,
    height: int,
    width: int,
    dynamic: bool = True,
    opset: int = ONNX_OPSET,
    dynamo: bool = False,
) -> str:
    """Export the network to ONNX at ``path``. ``dynamic``: batch, H and W are dynamic axes
    (``B``, ``H``, ``W``; outputs ``h``, ``w``); otherwise the graph is fixed to
    ``1 x 3 x height x width``. ``dynamo=True`` uses torch's dynamo exporter (needs onnxscript)."""
    net = ExportableNetwork(model).eval()
    names = list(net.output_names)
    x = _example(net, trace_size(net, height, width, dynamic))
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    if dynamo:
        import importlib.util

        if importlib.util.find_spec("onnxscript") is None:
            raise ImportError("export_onnx(dynamo=True) needs the 'onnxscript' package (pip install onnxscript); "
                              "the default legacy exporter (dynamo=False) does not")
        shapes = None
        if dynamic:
            d = torch.export.Dim
            shapes = {"image": {0: d("B", min=1), 2: 14 * d("Hp", min=1, max=512), 3: 14 * d("Wp", min=1, max=512)}}
        with torch.no_grad():
            prog = torch.onnx.export(net, (x,), dynamo=True, opset_version=opset, input_names=["image"],
                                     output_names=names, dynamic_shapes=shapes)
        prog.save(path)
        return path
    register_onnx_symbolics(opset)
    axes = None
    if dynamic:
        axes = {"image": {0: "B", 2: "H", 3: "W"}}
        axes.update({n: {0: "B", 2: "h", 3: "w"} for n in names})
    with torch.no_grad(), _quiet_tracing():
        torch.onnx.export(net, (x,), path, dynamo=False, opset_version=opset, input_names=["image"],
                          output_names=names, dynamic_axes=axes, do_constant_folding=True)
    return path


def encoding_from_spec(spec: Mapping) -> CentroidEncoding:
    """Inverse of the ``encoding`` entry of :func:`export_metadata`
    (:meth:`pe_panoptic.encoding.CentroidEncoding.from_spec`)."""
    return CentroidEncoding.from_spec(spec)


def export_metadata(model: nn.Module, *, height: int, width: int, dynamic: bool, resize: Optional[int] = None,
                    metadata_name: Optional[str] = None) -> dict:
    """Everything needed to run an exported network without the model code: input
    normalization, output names, instance encoding, thing ids, post-processing config,
    ``resize`` (longest side of the test resize, ``None`` = none) and the dataset name for
    class names / colours."""
    net = ExportableNetwork(model)
    return {
        "format_version": 1,
        "input": {"name": "image", "layout": "NCHW", "channels": model.input_format, "dtype": "float32",
                  "pixel_mean": model.pixel_mean.flatten().tolist(), "pixel_std": model.pixel_std.flatten().tolist(),
                  "size_divisibility": net.size_divisibility, "height": int(height), "width": int(width),
                  "dynamic": bool(dynamic), "resize_longest": resize},
        "outputs": list(net.output_names),
        "output_stride": "8/14",
        "encoding": model.encoding.to_spec(),
        "num_classes": int(model.num_classes),
        "thing_ids": [int(t) for t in model.thing_ids],
        "postprocess": dataclasses.asdict(model.postprocess_cfg),
        "decode_at": model.decode_at,
        "semantic_output": model.semantic_output,
        "dataset": metadata_name,
    }


# --------------------------------------------------------------------------------------------
# pre- and post-processing (pure torch, any device)
# --------------------------------------------------------------------------------------------
def preprocess(
    images: Sequence[torch.Tensor],
    pixel_mean: Sequence[float],
    pixel_std: Sequence[float],
    size_divisibility: int = 14,
) -> Tuple[torch.Tensor, List[Tuple[int, int]]]:
    """Resized ``[3, h, w]`` images (0-255, any dtype) -> network input ``[B, 3, H, W]`` and the
    unpadded ``(h, w)`` of each.

    Every image is zero-padded (black, in pixel values, as the dataset mapper pads in training)
    at the bottom / right to the batch's largest size rounded up to a multiple of
    ``size_divisibility``, then normalized ``(x - mean) / std``. Images of different padded
    sizes in one batch predict differently from batch 1 (the network sees the padding of the
    smaller ones); ``PixelCentroidHead`` therefore runs one pass per padded size, and so should a
    batched caller of the exported graph (:class:`OnnxPanopticPredictor` runs one image a call).
    """
    if not images:
        raise ValueError("preprocess: no images")
    dev = images[0].device
    mean = torch.as_tensor(pixel_mean, dtype=torch.float32, device=dev).view(-1, 1, 1)
    std = torch.as_tensor(pixel_std, dtype=torch.float32, device=dev).view(-1, 1, 1)
    for i, im in enumerate(images):
        if im.dim() != 3 or im.shape[0] != mean.shape[0] or min(im.shape[1:]) < 1:
            raise ValueError(f"preprocess: image {i} must be [{mean.shape[0]}, h, w], got {tuple(im.shape)}")
    d = int(size_divisibility)
    sizes = [(int(im.shape[1]), int(im.shape[2])) for im in images]
    H = -(-max(h for h, _ in sizes) // d) * d
    W = -(-max(w for _, w in sizes) // d) * d
    batch = torch.stack([F.pad(im.float(), (0, W - w, 0, H - h)) for im, (h, w) in zip(images, sizes)])
    return (batch - mean) / std, sizes


def check_network_input(x, divisor: int = 14) -> None:
    """A dynamic ONNX graph does not check its input: an ``H`` or ``W`` that is not a multiple of
    ``divisor`` runs and returns outputs of the wrong size, where the eager model raises. Raw ONNX
    users call this (or pad with :func:`preprocess`) first; :class:`OnnxPanopticPredictor` does.
    The TorchScript export checks inside the file (:class:`CheckedGraph`). ``ValueError`` naming
    the size."""
    h, w = int(x.shape[-2]), int(x.shape[-1])
    if x.dim() != 4 or h % divisor or w % divisor or h <= 0 or w <= 0:
        raise ValueError(f"exported network input must be [B, 3, H, W] with H and W positive multiples of {divisor}, "
                         f"got {tuple(x.shape)}: pad it first (pe_panoptic.export.preprocess pads as the mapper does)")


class OnnxPanopticPredictor:
    """Panoptic segmentation with an exported ONNX network (onnxruntime) + :func:`postprocess`.

    ``OnnxPanopticPredictor("model.onnx")`` reads ``model.export.json`` (written by
    ``tools/export.py`` / :func:`export_metadata`) next to it. Calling it with an RGB uint8
    ``[H, W, 3]`` array applies the test resize (detectron2 ``ResizeShortestEdge`` to
    ``resize_longest``, as the test mapper), normalization and padding, runs the network and
    returns the result dict of :func:`postprocess` at the original size.
    """

    def __init__(self, onnx_path: str, meta_path: Optional[str] = None, providers=("CPUExecutionProvider",)):
        import onnxruntime as ort

        meta_path = meta_path or os.path.splitext(onnx_path)[0] + ".export.json"
        for p in (onnx_path, meta_path):
            if not os.path.isfile(p):
                raise FileNotFoundError(f"OnnxPanopticPredictor: {p!r} not found")
        with open(meta_path) as f:
            self.meta = json.load(f)
        self.session = ort.InferenceSession(onnx_path, providers=list(providers))
        self.encoding = encoding_from_spec(self.meta["encoding"])
        pp = dict(self.meta["postprocess"])
        pp["grid"] = tuple(pp["grid"])
        self.cfg = PostProcessConfig(**pp)

    def __call__(self, image: np.ndarray) -> Dict:
        from pe_panoptic.data.mapper import build_test_augmentations
        from detectron2.data import transforms as T

        image = np.asarray(image)
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(
                f"OnnxPanopticPredictor expects an RGB uint8 [H, W, 3] array, got {image.dtype} {image.shape}"
            )
        inp = self.meta["input"]
        height, width = image.shape[:2]
        if inp.get("resize_longest"):
            aug = T.AugInput(image)
            T.AugmentationList(build_test_augmentations(inp["resize_longest"]))(aug)
            image = aug.image
        chw = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))
        x, sizes = preprocess([chw], inp["pixel_mean"], inp["pixel_std"], inp["size_divisibility"])
        if not inp.get("dynamic", True):  # fixed graph: pad (normalized black) to its size
            fh, fw = int(inp["height"]), int(inp["width"])
            if x.shape[-2] > fh or x.shape[-1] > fw:
                raise ValueError(f"image resized to {tuple(x.shape[-2:])} does not fit the fixed ONNX input {fh}x{fw}")
            black = (-torch.tensor(inp["pixel_mean"]) / torch.tensor(inp["pixel_std"])).view(1, -1, 1, 1)
            canvas = black.expand(1, x.shape[1], fh, fw).clone()
            canvas[..., : x.shape[-2], : x.shape[-1]] = x
            x = canvas
        check_network_input(x, int(inp["size_divisibility"]))
        arrays = self.session.run(None, {inp["name"]: x.numpy()})
        outputs = {n: torch.from_numpy(a) for n, a in zip(self.meta["outputs"], arrays)}
        return postprocess(outputs, sizes, [(height, width)], self.encoding, self.meta["thing_ids"], self.cfg,
                           self.meta["decode_at"], input_hw=tuple(x.shape[-2:]),
                           semantic=self.meta.get("semantic_output", "labels"))[0]
