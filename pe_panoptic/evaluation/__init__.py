from pe_panoptic.evaluation.panoptic import PanopticEvaluator, pq_from_annotations  # noqa: F401
from pe_panoptic.evaluation.gt_check import GroundTruthError, check_panoptic_gt  # noqa: F401
from pe_panoptic.evaluation.cityscapes import CityscapesPanopticEvaluator  # noqa: F401
from pe_panoptic.evaluation.depth import DepthEvaluator, depth_metrics, eigen_crop_mask  # noqa: F401
from pe_panoptic.evaluation.semseg import PanopticSemSegEvaluator, semantic_from_panoptic  # noqa: F401
from pe_panoptic.evaluation.build import build_evaluators  # noqa: F401,E402
