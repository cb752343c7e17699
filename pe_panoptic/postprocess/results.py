"""Per-image and per-batch entry points: network outputs -> detectron2 results.

:func:`panoptic_from_outputs` runs the whole post-processing of one image at the resolution of
the maps passed in (grid decode, instance decoder, panoptic merge); :func:`resize_panoptic`
pastes a panoptic map at another size; :func:`batch_results` turns the raw outputs of a padded
batch into detectron2 results at each image's original size (used by the model and for
exported networks).
"""
from __future__ import annotations

from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

from pe_panoptic.encoding import CentroidEncoding
from pe_panoptic.postprocess.config import PostProcessConfig, resolve_cfg
from pe_panoptic.postprocess.grid import check_inst
from pe_panoptic.postprocess.instances import instance_map_from_outputs
from pe_panoptic.postprocess.fullsize import panoptic_at_size
from pe_panoptic.postprocess.merge import merge_instances_and_semantics, thing_pixel_mask
from pe_panoptic.postprocess.upsample import DEFAULT_CHUNK_BYTES, bilinear, upsampled_argmax

__all__ = ["SEMANTIC_OUTPUTS", "panoptic_from_outputs", "resize_panoptic", "batch_results"]


def panoptic_from_outputs(
    sem_logits: torch.Tensor,
    inst: torch.Tensor,
    encoding: CentroidEncoding,
    thing_ids: Sequence[int],
    cfg: Optional[PostProcessConfig] = None,
    **overrides,
) -> Tuple[torch.Tensor, List[Dict]]:
    """Per-pixel outputs of one image -> ``(panoptic_seg [h, w] int32, segments_info)``.

    ``sem_logits [N, h, w]``, ``inst [C, h, w]`` (same h, w; the output resolution),
    ``thing_ids``: contiguous class ids that are things. ``cfg`` (or keyword overrides of its
    fields) selects the decoder and thresholds. ``category_id`` in ``segments_info`` is the
    contiguous id, as detectron2's ``COCOPanopticEvaluator`` expects with ``isthing``.
    """
    cfg = resolve_cfg(cfg, overrides)
    check_inst(inst, encoding)
    if not torch.is_tensor(sem_logits) or sem_logits.dim() != 3:
        raise ValueError(f"sem_logits must be a [N, h, w] tensor, got {getattr(sem_logits, 'shape', type(sem_logits))}")
    if sem_logits.shape[1:] != inst.shape[1:]:
        raise ValueError(
            f"sem_logits {tuple(sem_logits.shape[1:])} and inst {tuple(inst.shape[1:])} must have the same h, w"
        )
    thing_pixels = thing_pixel_mask(sem_logits, thing_ids) if cfg.void_source == "semantic" else None
    inst_map, scores = instance_map_from_outputs(inst, encoding, cfg, thing_pixels)
    return merge_instances_and_semantics(
        inst_map, scores, sem_logits, thing_ids, cfg.thing_fraction, cfg.min_stuff_area
    )


def resize_panoptic(
    panoptic_seg: torch.Tensor, segments_info: List[Dict], size: Tuple[int, int], mode: str = "nearest-exact"
) -> Tuple[torch.Tensor, List[Dict]]:
    """Nearest-neighbour paste of a panoptic map at another size ``(H, W)``; areas are
    recomputed and segments that vanish are dropped (detectron2 format in and out).

    ``mode="nearest-exact"`` samples at pixel centers (``src = floor((i + 0.5) * in / out)``),
    the convention of the targets (:func:`pe_panoptic.data.targets.sample_at_output`); torch's legacy
    ``"nearest"`` (``floor(i * in / out)``) shifts the map by half an output pixel, which costs
    ~4.5 oracle PQ on COCO at 1008 px (tools/oracle_pq.py).
    """
    if mode not in ("nearest-exact", "nearest"):
        raise ValueError(f"mode must be 'nearest-exact' or 'nearest', got {mode!r}")
    H, W = int(size[0]), int(size[1])
    if H < 1 or W < 1:
        raise ValueError(f"size must be positive (H, W), got {size!r}")
    out = F.interpolate(panoptic_seg[None, None].float(), size=(H, W), mode=mode)[0, 0]
    out = out.to(torch.int32)
    ids = torch.tensor([s["id"] for s in segments_info], dtype=torch.long, device=out.device)
    n = int(ids.max()) + 1 if ids.numel() else 1
    area = torch.bincount(out.reshape(-1), minlength=n)
    areas = area[ids].tolist() if ids.numel() else []
    infos = [dict(s, area=a) for s, a in zip(segments_info, areas) if a > 0]
    return out, infos


SEMANTIC_OUTPUTS = ("labels", "probs")


def batch_results(
    outputs: Mapping[str, torch.Tensor],
    image_sizes: Sequence[Tuple[int, int]],
    original_sizes: Sequence[Tuple[int, int]],
    encoding: CentroidEncoding,
    thing_ids: Sequence[int],
    cfg: Optional[PostProcessConfig] = None,
    decode_at: str = "output",
    input_hw: Optional[Tuple[int, int]] = None,
    semantic: str = "labels",
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
) -> List[Dict]:
    """Raw network outputs of a batch -> detectron2 results, used by ``PixelCentroidHead.inference``
    and for exported networks (``pe_panoptic.export.exporter.postprocess``).

    Args:
        outputs: ``sem_logits [B, N, h, w]``, ``inst [B, C, h, w]`` and optionally
            ``depth [B, 1, h, w]`` for a padded input ``[B, 3, H, W]`` with ``h / H = 8 / 14``
            (torch tensors on any device; convert onnxruntime's numpy arrays with
            ``torch.from_numpy``).
        image_sizes: unpadded (resized) ``(h, w)`` of every image in the network input.
        original_sizes: ``(height, width)`` to paste each result at (the original image).
        encoding, thing_ids, cfg: as :func:`pe_panoptic.postprocess.panoptic_from_outputs`.
        decode_at: ``"output"`` decodes at the output resolution and pastes the panoptic map
            at the original size (:func:`pe_panoptic.postprocess.resize_panoptic`); ``"image"``
            decodes the logits and code bilinearly upsampled to the original size, computed in
            column bands (:func:`pe_panoptic.postprocess.fullsize.panoptic_at_size`).
        input_hw: padded network input size ``(H, W)``; default ``(h, w) * 14 / 8``.
        semantic: what ``"sem_seg"`` holds. ``"labels"``: the ``[H, W]`` long class map, the
            argmax of the bilinearly upsampled logits, computed a few classes at a time (memory
            ``O(H W)``); ``"probs"``: detectron2's ``[N, H, W]`` softmax probabilities (``4 N H W``
            bytes: 6.4 GB for 133 classes at 12 MP, so only for small images).
        chunk_bytes: budget of the largest temporary of the full-size steps
            (:mod:`pe_panoptic.postprocess.upsample`).

    Returns per image ``{"sem_seg": [H, W] labels or [N, H, W] probabilities, "panoptic_seg":
    (seg [H, W] int32, segments_info), "depth": [H, W]}`` (depth only if present in ``outputs``).
    Apart from ``semantic="probs"``, nothing of size ``N H W`` or ``C H W`` is allocated.
    """
    if decode_at not in ("output", "image"):
        raise ValueError(f"decode_at must be 'output' or 'image', got {decode_at!r}")
    if semantic not in SEMANTIC_OUTPUTS:
        raise ValueError(f"semantic must be one of {SEMANTIC_OUTPUTS}, got {semantic!r}")
    for k in ("sem_logits", "inst"):
        if k not in outputs or outputs[k].dim() != 4:
            raise ValueError(f"outputs[{k!r}] must be a [B, C, h, w] tensor")
    sem_all, inst_all = outputs["sem_logits"], outputs["inst"]
    B = sem_all.shape[0]
    if len(image_sizes) != B or len(original_sizes) != B:
        raise ValueError(
            f"got {len(image_sizes)} image_sizes and {len(original_sizes)} original_sizes for a batch of {B}"
        )
    out_h, out_w = inst_all.shape[-2:]
    pad_h, pad_w = input_hw if input_hw is not None else (round(out_h * 14 / 8), round(out_w * 14 / 8))
    sy, sx = out_h / pad_h, out_w / pad_w
    results = []
    for i in range(B):
        ih, iw = image_sizes[i]
        size = tuple(int(v) for v in original_sizes[i])
        ch = max(1, int(round(ih * sy)))
        cw = max(1, int(round(iw * sx)))
        sem = sem_all[i, :, :ch, :cw].float()
        inst = inst_all[i, :, :ch, :cw].float()
        labels = None
        if decode_at == "image":
            panoptic, labels = panoptic_at_size(sem, inst, size, encoding, thing_ids, cfg, chunk_bytes)
        else:
            panoptic = resize_panoptic(*panoptic_from_outputs(sem, inst, encoding, thing_ids, cfg), size)
        if semantic == "probs":
            sem_seg = bilinear(sem, size).softmax(0)
        else:
            sem_seg = labels if labels is not None else upsampled_argmax(sem, size, chunk_bytes)
        res = {"sem_seg": sem_seg, "panoptic_seg": panoptic}
        if outputs.get("depth") is not None:
            res["depth"] = bilinear(outputs["depth"][i, :, :ch, :cw].float(), size)[0]
        results.append(res)
    return results
