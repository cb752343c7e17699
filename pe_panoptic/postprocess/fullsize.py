"""``decode_at="image"``: the post-processing of bilinearly upsampled outputs, in column bands.

:func:`panoptic_at_size` computes ``panoptic_from_outputs(bilinear(sem), bilinear(inst))`` at the
original image size without ever holding the upsampled ``[N, H, W]`` logits or ``[C, H, W]``
embedding (nor the ``[gh + gw, H, W]`` distances of the grid decode): the upsampled maps are
produced band by band (:func:`pe_panoptic.postprocess.upsample.bilinear_column_bands`), and each
band is reduced at once to per-pixel maps (semantic max / argmax / log-sum-exp, thing-restricted
argmax, decoded cell and distance). The instance decoder and the panoptic merge then run on these
``[H, W]`` maps; a second pass over the bands reads the logit of each instance's class (only
those classes are upsampled again). Peak memory is ``O((N + C) h W + H W)`` plus one band.

The upsampled floats are exactly the unbanded ones, and so are the semantic max / argmax, the
thing-restricted argmax and the decoded cells. A map that fits one band gives the unbanded result
exactly. In a wider one, the log-sum-exp over classes and the decode distance (a reduction over
channels and a small matrix product, whose SIMD / BLAS path PyTorch picks by tensor shape) can
differ in the last bit at a few pixels: scores then differ around the 7th digit, and only a
decode that is an exact tie between two cells (or cell and void) could change.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

import torch

from pe_panoptic.encoding import CentroidEncoding
from pe_panoptic.postprocess.config import PostProcessConfig, resolve_cfg
from pe_panoptic.postprocess.grid import check_inst, decode_cells
from pe_panoptic.postprocess.instances import instances_from_cells
from pe_panoptic.postprocess.merge import SemanticMaps, merge_from_maps, semantic_maps, thing_argmax, thing_class_mask
from pe_panoptic.postprocess.upsample import DEFAULT_CHUNK_BYTES, band_width, bilinear_column_bands

__all__ = ["panoptic_at_size"]


def _class_logits_at(sem: torch.Tensor, pix_cls: torch.Tensor, size, band: int) -> torch.Tensor:
    """``[H, W]``: the upsampled logit of class ``pix_cls[y, x]`` at every pixel, upsampling only
    the classes that occur."""
    used = torch.unique(pix_cls)
    out = torch.empty(pix_cls.shape, dtype=torch.float32, device=sem.device)
    for x0, x1, tile in bilinear_column_bands(sem[used], size, band):
        pos = torch.searchsorted(used, pix_cls[:, x0:x1].contiguous())
        out[:, x0:x1] = tile.gather(0, pos[None])[0]
    return out


def panoptic_at_size(
    sem_logits: torch.Tensor,
    inst: torch.Tensor,
    size: Tuple[int, int],
    encoding: CentroidEncoding,
    thing_ids: Sequence[int],
    cfg: Optional[PostProcessConfig] = None,
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
) -> Tuple[Tuple[torch.Tensor, List[Dict]], torch.Tensor]:
    """Panoptic output of the outputs ``sem_logits [N, h, w]``, ``inst [C, h, w]`` upsampled to
    ``size = (H, W)`` (module doc), and the semantic argmax ``[H, W]`` of the upsampled logits.

    Returns ``((panoptic_seg [H, W] int32, segments_info), sem_labels [H, W] long)``.
    ``chunk_bytes`` bounds one band's upsampled channels and decode distances.
    """
    cfg = resolve_cfg(cfg, {})
    check_inst(inst, encoding)
    if not torch.is_tensor(sem_logits) or sem_logits.dim() != 3 or sem_logits.shape[1:] != inst.shape[1:]:
        raise ValueError(
            f"sem_logits must be [N, h, w] with the h, w of inst {tuple(inst.shape[1:])}, got "
            f"{getattr(sem_logits, 'shape', type(sem_logits))}"
        )
    N = sem_logits.shape[0]
    H, W = (int(v) for v in size)
    dev = sem_logits.device
    is_thing_cls = thing_class_mask(thing_ids, N, dev)
    thing_idx = torch.nonzero(is_thing_cls).squeeze(1)
    has_things = thing_idx.numel() > 0
    gh, gw = cfg.grid
    band = band_width(H, N + inst.shape[0] + gh + gw, chunk_bytes)

    full_max = torch.empty(H, W, device=dev)
    full_arg = torch.empty(H, W, dtype=torch.long, device=dev)
    lse = torch.empty(H, W, device=dev)
    thing_arg = torch.empty(H, W, dtype=torch.long, device=dev) if has_things else full_arg
    code = torch.empty(H, W, dtype=torch.long, device=dev)
    ndist = torch.empty(H, W, device=dev)
    bands = zip(bilinear_column_bands(sem_logits, (H, W), band), bilinear_column_bands(inst, (H, W), band))
    for (x0, x1, sem), (_, _, emb) in bands:
        maps = semantic_maps(sem)
        full_max[:, x0:x1], full_arg[:, x0:x1], lse[:, x0:x1] = maps
        if has_things:  # equals the full argmax wherever that is a thing class
            thing_arg[:, x0:x1] = thing_argmax(sem.reshape(N, -1), thing_idx).view(H, x1 - x0)
        thing_pixels = is_thing_cls[maps.arg] if cfg.void_source == "semantic" else None
        code[:, x0:x1], ndist[:, x0:x1] = decode_cells(emb, encoding, cfg.grid, thing_pixels)
        del sem, emb, maps

    inst_map, inst_scores = instances_from_cells(code, ndist, cfg)
    del code, ndist
    held = [thing_arg]  # handed over: merge_from_maps frees it before the class logits pass
    del thing_arg

    def class_logits(pix_cls: torch.Tensor) -> torch.Tensor:
        return _class_logits_at(sem_logits, pix_cls, (H, W), band)

    maps = SemanticMaps(full_max, full_arg, lse)
    panoptic = merge_from_maps(inst_map, inst_scores, maps, is_thing_cls, held.pop, class_logits,
                               cfg.thing_fraction, cfg.min_stuff_area)
    return panoptic, full_arg
