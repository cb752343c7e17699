"""Config + weights -> model, and one image -> the model's outputs (detectron2's ``DefaultPredictor``).

* :func:`load_model`: a LazyConfig file with checked ``key=value`` overrides
  (:func:`pe_panoptic.engine.config_overrides.load_config`) -> ``(cfg, model)``, the model on the
  resolved device (:func:`pe_panoptic.engine.device.resolve_device`) in eval mode, with the
  weights loaded strictly (:func:`pe_panoptic.engine.checkpoint_io.load_weights`: ``.pkl`` only
  with ``trust_pickle``). Every tool builds its model with it.
* :class:`Predictor`: one image (a path, or a numpy ``HWC`` uint8 array) -> the model's results
  at the ORIGINAL image size. The image goes through the config's TEST mapper
  (``cfg.dataloader.test.mapper``): a path is mapped by the mapper itself, exactly as the test
  loader maps it; an array goes through the mapper's own augmentations and
  :meth:`~pe_panoptic.data.mapper.PanopticCentroidDatasetMapper.padded_size` (zero padding, as
  the mapper pads). :meth:`Predictor.run` also returns the mapped input and the raw network
  outputs of the image's unpadded region (for pictures of the instance embedding).
"""
from __future__ import annotations

import logging
import os
from typing import Dict, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from pe_panoptic.engine.device import resolve_device

__all__ = ["Predictor", "load_model", "unpadded_outputs"]

logger = logging.getLogger(__name__)

ImageLike = Union[str, os.PathLike, np.ndarray]


def load_model(config_file: str, overrides: Sequence[str] = (), weights: Optional[str] = "",
               device: Optional[str] = "auto", trust_pickle: bool = False, *, missing_weights: str = "warn"):
    """``(cfg, model)``: the config of ``config_file`` with ``overrides``, and its model on
    ``device`` in eval mode with ``weights`` loaded strictly.

    Args:
        device: ``"auto"`` / a device name (:func:`resolve_device`); ``None``: the config's
            ``train.device`` (``auto`` when it has none).
        weights: checkpoint file; ``""`` / ``None``: none (random init).
        missing_weights: without ``weights``: ``"warn"`` (log a warning), ``"ignore"`` or
            ``"error"`` (``ValueError``).
    """
    from detectron2.config import instantiate

    from pe_panoptic.engine.checkpoint_io import load_weights
    from pe_panoptic.engine.config_overrides import load_config

    if missing_weights not in ("warn", "ignore", "error"):
        raise ValueError(f"missing_weights must be 'warn', 'ignore' or 'error', got {missing_weights!r}")
    cfg = load_config(config_file, overrides)
    option = "--device"
    if device is None:
        device, option = cfg.get("train", {}).get("device", "auto"), "train.device"
    model = instantiate(cfg.model).to(resolve_device(device, option)).eval()
    if weights:
        load_weights(model, weights, trust_pickle=trust_pickle)
    elif missing_weights == "error":
        raise ValueError(f"{config_file}: no weights given; predicting with random weights is meaningless")
    elif missing_weights == "warn":
        logger.warning(f"{config_file}: no weights given, the model is randomly initialized")
    return cfg, model


def unpadded_outputs(outputs: Dict[str, torch.Tensor], image_size_unpadded: Tuple[int, int],
                     input_hw: Tuple[int, int]) -> Dict[str, torch.Tensor]:
    """The raw outputs ``[1, C, h, w]`` of one image cropped to its unpadded region, the region
    the model's inference decodes (:func:`pe_panoptic.postprocess.batch_results`)."""
    oh, ow = next(iter(outputs.values())).shape[-2:]
    ch = max(1, int(round(image_size_unpadded[0] * oh / input_hw[0])))
    cw = max(1, int(round(image_size_unpadded[1] * ow / input_hw[1])))
    return {k: v[..., :ch, :cw] for k, v in outputs.items()}


class Predictor:
    """The model of a config on one image at a time, with the config's test mapper.

    Args:
        cfg: the LazyConfig (its ``dataloader.test.mapper`` maps the images).
        model: the model (moved to ``device``, set to eval mode); default: ``instantiate(cfg.model)``.
        device: ``"auto"`` or a device name.

    ``predictor(image)`` returns the model's result dict for the image (``panoptic_seg``,
    ``sem_seg``, ...) at the image's original size, as ``model(test_loader_batch)`` does.
    """

    def __init__(self, cfg, model: Optional[torch.nn.Module] = None, device: Optional[str] = "auto"):
        from detectron2.config import instantiate
        from detectron2.data import MetadataCatalog

        self.cfg = cfg
        self.device = resolve_device(device)
        self.model = (model if model is not None else instantiate(cfg.model)).to(self.device).eval()
        test = cfg.dataloader.test
        self.mapper = instantiate(test.mapper)
        names = test.dataset.names if "dataset" in test else None
        name = names if isinstance(names, str) or names is None else list(names)[0]
        self.metadata = MetadataCatalog.get(name) if name else None

    @classmethod
    def from_config(cls, config_file: str, overrides: Sequence[str] = (), weights: Optional[str] = "",
                    device: Optional[str] = "auto", trust_pickle: bool = False, **kwargs) -> "Predictor":
        """:func:`load_model` then a predictor on that model."""
        cfg, model = load_model(config_file, overrides, weights, device, trust_pickle, **kwargs)
        return cls(cfg, model, str(next(model.parameters()).device) if device is None else device)

    # ------------------------------------------------------------------------------ mapping
    def map_image(self, image: ImageLike, image_format: str = "RGB") -> dict:
        """The test mapper's input dict of ``image``: a file is mapped by the mapper; an array
        (``HWC`` uint8 in ``image_format``) goes through the mapper's augmentations and padding."""
        if isinstance(image, (str, os.PathLike)):
            return self.mapper({"file_name": os.fspath(image)})
        if not isinstance(image, np.ndarray) or image.ndim != 3 or image.dtype != np.uint8:
            raise TypeError(f"image must be a file path or an HWC uint8 array, got "
                            f"{getattr(image, 'dtype', type(image).__name__)} of shape {getattr(image, 'shape', '?')}")
        return self._map_array(self._to_mapper_format(image, image_format))

    def _to_mapper_format(self, image: np.ndarray, image_format: str) -> np.ndarray:
        want = getattr(self.mapper, "image_format", "RGB")
        if image_format == want:
            return image
        if {image_format, want} == {"RGB", "BGR"}:
            return np.ascontiguousarray(image[:, :, ::-1])
        raise ValueError(f"an image in {image_format!r} cannot be given to a test mapper reading {want!r} images")

    def _map_array(self, image: np.ndarray) -> dict:
        from detectron2.data import transforms as T

        aug = T.AugInput(image)
        self.mapper.augmentations(aug)
        resized = aug.image
        hu, wu = resized.shape[:2]
        if hu == 0 or wu == 0:
            raise ValueError(f"a {image.shape[1]}x{image.shape[0]} image has an empty size after the test augmentations")
        H, W = self.mapper.padded_size((hu, wu), "<array>")
        padded = np.pad(resized, ((0, H - hu), (0, W - wu), (0, 0)), mode="constant", constant_values=0)
        return {"image": torch.as_tensor(np.ascontiguousarray(padded.transpose(2, 0, 1))),
                "height": image.shape[0], "width": image.shape[1], "image_size_unpadded": (hu, wu)}

    # ------------------------------------------------------------------------------ running
    @torch.no_grad()
    def __call__(self, image: ImageLike, image_format: str = "RGB") -> dict:
        return self.model([self.map_image(image, image_format)])[0]

    @torch.no_grad()
    def run(self, image: ImageLike, image_format: str = "RGB") -> Tuple[dict, Dict[str, torch.Tensor], dict]:
        """``(mapped input, raw outputs of the unpadded region [1, C, h, w], result)``; the result
        is the one of ``predictor(image)`` (same forward, the model's own inference)."""
        m = self.model
        d = self.map_image(image, image_format)
        images = m.preprocess_image([d])
        outputs = m.forward_features(images.tensor)
        result = m.inference(outputs, [d], images)[0]
        input_hw = tuple(images.tensor.shape[-2:])
        return dict(d, input_hw=input_hw), unpadded_outputs(outputs, d["image_size_unpadded"], input_hw), result
