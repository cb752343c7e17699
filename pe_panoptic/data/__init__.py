"""Datasets: importing this package registers the built-in synthetic panoptic splits and the
NYUv2 depth splits (``nyuv2_depth_{train,test}``); COCO / Cityscapes panoptic use detectron2's
builtin registrations, with :mod:`.validation`'s file checks put in front of their loaders."""
from pe_panoptic.data.synthetic import (  # noqa: F401  (import registers synthetic_panoptic_{train,val})
    SYNTHETIC_CATEGORIES,
    SceneConfig,
    ensure_synthetic_panoptic,
    generate_synthetic_panoptic,
    load_synthetic_panoptic,
    register_synthetic_panoptic,
    synthetic_panoptic_metadata,
)
from pe_panoptic.data.errors import InvalidSampleError  # noqa: F401
from pe_panoptic.data.mapper import PanopticCentroidDatasetMapper, build_test_augmentations, build_train_augmentations  # noqa: F401
from pe_panoptic.data.panoptic_builder import PanopticTargets  # noqa: F401
from pe_panoptic.data.depth_builder import DepthTargets  # noqa: F401
from pe_panoptic.data.nyu import NYUV2_SPLITS, load_nyuv2_depth, register_nyuv2_depth  # noqa: F401  (registers nyuv2_depth_*)
from pe_panoptic.data.validation import (  # noqa: F401,E402
    DatasetError,
    install_validation,
    validate_cityscapes_panoptic,
    validate_coco_panoptic,
)

install_validation()  # detectron2's builtin COCO / Cityscapes panoptic datasets (registered at import)
