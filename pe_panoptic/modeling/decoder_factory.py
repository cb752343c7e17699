"""The decoder of a LazyConfig without hand-typed input channels (cf. ViTDet, whose neck reads
its input shape from the backbone).

``model.decoder = L(transposed_conv_decoder)(width=256, num_upsample=3)`` is a factory: the
meta-arch (:class:`pe_panoptic.modeling.meta_arch.PixelCentroidHead`) calls it with
``in_channels = concat_channels(backbone.output_shape())``, so changing
``model.backbone.out_indices`` or the ViT size alone gives a matching decoder. The built module is
a :class:`pe_panoptic.modeling.decoder.TransposedConvDecoder` (same parameters and state-dict keys
as one configured by hand).
"""
from __future__ import annotations

import functools
from typing import Callable, Union

from pe_panoptic.modeling.decoder import TransposedConvDecoder

__all__ = ["transposed_conv_decoder"]


def transposed_conv_decoder(
    *,
    width: int = 256,
    num_upsample: int = 3,
    norm: Union[str, Callable] = "BN",
    activation: str = "gelu",
    position_input: str = "none",
    num_harmonics: int = 4,
    image_skip: int = 0,
    upsample_impl: str = "matmul",
) -> Callable[..., TransposedConvDecoder]:
    """``TransposedConvDecoder`` with every argument but ``in_channels`` (same meanings and
    defaults); returns ``factory(in_channels=...) -> TransposedConvDecoder``."""
    return functools.partial(
        TransposedConvDecoder, width=width, num_upsample=num_upsample, norm=norm, activation=activation,
        position_input=position_input, num_harmonics=num_harmonics, image_skip=image_skip,
        upsample_impl=upsample_impl,
    )
