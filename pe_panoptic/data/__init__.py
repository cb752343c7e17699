"""Datasets: importing this package registers the built-in synthetic panoptic splits."""
from .synthetic import (  # noqa: F401  (import registers synthetic_panoptic_{train,val})
    SYNTHETIC_CATEGORIES,
    SceneConfig,
    ensure_synthetic_panoptic,
    generate_synthetic_panoptic,
    load_synthetic_panoptic,
    register_synthetic_panoptic,
    synthetic_panoptic_metadata,
)
from .mapper import PanopticCentroidDatasetMapper, build_test_augmentations, build_train_augmentations  # noqa: F401
