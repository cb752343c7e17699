from .cityscapes import CityscapesPanopticEvaluator  # noqa: F401
from .depth import DepthEvaluator, depth_metrics, eigen_crop_mask  # noqa: F401
from .semseg import PanopticSemSegEvaluator, semantic_from_panoptic  # noqa: F401
