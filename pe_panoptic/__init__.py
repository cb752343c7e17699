"""pe_panoptic: a detectron2 plugin for "A Simple and Generalist Approach for Panoptic Segmentation".

Importing this package registers into detectron2's registries:

* ``BACKBONE_REGISTRY``: ``build_dinov2_backbone`` (DINOv2 from timm, yacs configs);
* ``META_ARCH_REGISTRY``: ``PixelCentroidHead``;
* ``DatasetCatalog`` / ``MetadataCatalog``: ``synthetic_panoptic_train`` / ``synthetic_panoptic_val``
  (files under ``$DETECTRON2_DATASETS/synthetic_panoptic``, generated on demand) and
  ``nyuv2_depth_train`` / ``nyuv2_depth_test`` (``$DETECTRON2_DATASETS/nyuv2``, see datasets/README.md).

COCO and Cityscapes panoptic use detectron2's builtin registrations.
"""
__version__ = "0.1.0"

import warnings  # noqa: E402

# detectron2 scripts a few functions with torch.jit.script at import time, which torch >= 2.10
# deprecates with one FutureWarning per call: noise for a user who asked for --help. Exactly that
# message from torch.jit's own module is hidden; every other warning stays visible.
warnings.filterwarnings("ignore", message=r"`torch\.jit\.script` is deprecated", category=FutureWarning,
                        module=r"torch\.jit\._script")

from pe_panoptic.modeling import backbone  # noqa: F401,E402  (BACKBONE_REGISTRY)
from pe_panoptic import data  # noqa: F401,E402  (datasets, mappers)
from pe_panoptic.modeling import meta_arch  # noqa: F401,E402  (META_ARCH_REGISTRY)
