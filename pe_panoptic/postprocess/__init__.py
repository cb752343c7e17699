"""Post-processing: per-pixel outputs of ONE image -> detectron2 panoptic output.

Inputs are the semantic logits ``sem_logits [N, h, w]`` and the instance embedding
``inst [C, h, w]`` at the network's output resolution, plus the instance encoding
(:mod:`pe_panoptic.encoding`). The output is detectron2's panoptic format
``(panoptic_seg [h, w] int32, segments_info)`` with ``0 = void`` and segment ids ``1..S``; every
``segments_info`` entry has ``id``, ``category_id`` (contiguous), ``isthing``, ``score`` and
``area``. Everything runs on the input tensors' device (CPU or CUDA), vectorized.

Paper, Sec. 3 / 5 ("Inference"): each pixel is attached by nearest-neighbour search to one
position of a discretized uv-grid or to the void code; non-maximum suppression as in Painter
removes duplicates; each class-agnostic instance gets its semantic class by majority voting;
stuff comes from the semantic head alone. One module per step, as detectron2's Panoptic-DeepLab
keeps its post-processing apart from the rest:

* :mod:`.config` -- :class:`PostProcessConfig` (decoder, ``void_source``, thresholds);
* :mod:`.grid` -- per-pixel grid decoding (:func:`decode_cells`, the ``void_source`` rule) and
  the brute-force reference :func:`naive_decode`;
* :mod:`.instances` -- the class-agnostic decoders ``nn`` (paper), ``vote``, ``painter``
  (:func:`instance_map_from_outputs`) with their suppression primitives :func:`grid_nms` and
  :func:`matrix_nms`;
* :mod:`.merge` -- the semantic / instance merge and scores (:func:`merge_instances_and_semantics`);
* :mod:`.results` -- one image end to end (:func:`panoptic_from_outputs`), pasting at another
  size (:func:`resize_panoptic`) and the batch entry point (:func:`batch_results`);
* :mod:`.upsample` and :mod:`.fullsize` -- the steps at the original image size in bounded
  memory: the semantic class map a few classes at a time, ``decode_at="image"`` in column bands
  (:func:`panoptic_at_size`).
"""
from pe_panoptic.postprocess.config import DECODERS, VOID_SOURCES, PostProcessConfig
from pe_panoptic.postprocess.grid import decode_cells, decode_scale, naive_decode
from pe_panoptic.postprocess.instances import grid_nms, instance_map_from_outputs, matrix_nms
from pe_panoptic.postprocess.merge import merge_instances_and_semantics, thing_pixel_mask
from pe_panoptic.postprocess.fullsize import panoptic_at_size
from pe_panoptic.postprocess.results import SEMANTIC_OUTPUTS, batch_results, panoptic_from_outputs, resize_panoptic

__all__ = [
    "DECODERS",
    "VOID_SOURCES",
    "PostProcessConfig",
    "decode_scale",
    "decode_cells",
    "grid_nms",
    "matrix_nms",
    "instance_map_from_outputs",
    "thing_pixel_mask",
    "merge_instances_and_semantics",
    "panoptic_from_outputs",
    "naive_decode",
    "resize_panoptic",
    "batch_results",
    "SEMANTIC_OUTPUTS",
    "panoptic_at_size",
]
