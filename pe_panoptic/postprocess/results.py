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

from ..encoding import CentroidEncoding
from .config import PostProcessConfig, resolve_cfg
from .grid import check_inst
from .instances import instance_map_from_outputs
from .merge import merge_instances_and_semantics, thing_pixel_mask

__all__ = ["panoptic_from_outputs", "resize_panoptic", "batch_results"]


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
    the convention of the targets (:func:`pe_panoptic.targets.sample_at_output`); torch's legacy
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
    area = torch.bincount(out.reshape(-1).long(), minlength=n)
    areas = area[ids].tolist() if ids.numel() else []
    infos = [dict(s, area=a) for s, a in zip(segments_info, areas) if a > 0]
    return out, infos


def batch_results(
    outputs: Mapping[str, torch.Tensor],
    image_sizes: Sequence[Tuple[int, int]],
    original_sizes: Sequence[Tuple[int, int]],
    encoding: CentroidEncoding,
    thing_ids: Sequence[int],
    cfg: Optional[PostProcessConfig] = None,
    decode_at: str = "output",
    input_hw: Optional[Tuple[int, int]] = None,
) -> List[Dict]:
    """Raw network outputs of a batch -> detectron2 results, used by ``PixelCentroidHead.inference``
    and for exported networks (``pe_panoptic.export.postprocess``).

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
            upsamples logits and code first.
        input_hw: padded network input size ``(H, W)``; default ``(h, w) * 14 / 8``.

    Returns per image ``{"sem_seg": [N, H, W] probabilities, "panoptic_seg": (seg [H, W] int32,
    segments_info), "depth": [H, W]}`` (depth only if present in ``outputs``).
    """
    if decode_at not in ("output", "image"):
        raise ValueError(f"decode_at must be 'output' or 'image', got {decode_at!r}")
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
        height, width = (int(v) for v in original_sizes[i])
        ch = max(1, int(round(ih * sy)))
        cw = max(1, int(round(iw * sx)))
        sem = sem_all[i, :, :ch, :cw].float()
        inst = inst_all[i, :, :ch, :cw].float()
        sem_full = F.interpolate(sem[None], size=(height, width), mode="bilinear", align_corners=False)[0]
        res = {"sem_seg": sem_full.softmax(0)}
        if decode_at == "image":
            inst_full = F.interpolate(inst[None], size=(height, width), mode="bilinear", align_corners=False)[0]
            seg, info = panoptic_from_outputs(sem_full, inst_full, encoding, thing_ids, cfg)
        else:
            seg, info = panoptic_from_outputs(sem, inst, encoding, thing_ids, cfg)
            seg, info = resize_panoptic(seg, info, (height, width))
        res["panoptic_seg"] = (seg, info)
        if outputs.get("depth") is not None:
            d = outputs["depth"][i, :, :ch, :cw].float()
            res["depth"] = F.interpolate(d[None], size=(height, width), mode="bilinear", align_corners=False)[0, 0]
        results.append(res)
    return results
