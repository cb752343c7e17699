"""The models ``tools/benchmark.py`` times: from a LazyConfig or from a DINOv2 backbone name."""
from __future__ import annotations

import os
from typing import Mapping, Optional, Sequence

from torch import nn

__all__ = ["build_benchmark_model"]


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

