"""The evaluator list of a dataset, from its metadata (as Mask2Former's ``train_net`` builds it)."""
import logging
from typing import List, Optional

from detectron2.data import MetadataCatalog
from detectron2.evaluation import COCOPanopticEvaluator, DatasetEvaluators

logger = logging.getLogger(__name__)


def build_evaluators(dataset_name: str, output_dir: Optional[str] = None, *,
                     panoptic: bool = True, semantic: bool = True, with_depth: bool = False):
    """Every metric the dataset supports, from its metadata (as Mask2Former's train_net does):
    PQ (``COCOPanopticEvaluator``; for ``evaluator_type="cityscapes_panoptic_seg"`` also the
    official cityscapesScripts evaluation), semantic mIoU, and depth metrics (``DepthEvaluator``)
    for depth datasets (``evaluator_type="depth"``) or, with ``with_depth``, for any dataset with
    metric depth ground truth (metadata ``depth_kind="metric"``)."""
    meta = MetadataCatalog.get(dataset_name)
    etype = getattr(meta, "evaluator_type", None)
    evaluators: List = []
    is_panoptic = etype in ("coco_panoptic_seg", "cityscapes_panoptic_seg") or hasattr(meta, "panoptic_json")
    if panoptic and is_panoptic:
        evaluators.append(COCOPanopticEvaluator(dataset_name, output_dir))
    if panoptic and etype == "cityscapes_panoptic_seg":
        from pe_panoptic.evaluation import CityscapesPanopticEvaluator

        evaluators.append(CityscapesPanopticEvaluator(dataset_name, output_dir))
    if semantic and is_panoptic:
        from pe_panoptic.evaluation import PanopticSemSegEvaluator

        evaluators.append(PanopticSemSegEvaluator(dataset_name, distributed=True, output_dir=None))
    if etype == "depth" or (with_depth and getattr(meta, "depth_kind", None) == "metric"):
        from pe_panoptic.evaluation import DepthEvaluator

        evaluators.append(DepthEvaluator(dataset_name))
    elif with_depth:
        logger.warning(f"with_depth=True but dataset {dataset_name!r} has no metric depth ground truth: "
                       "depth is not evaluated on it")
    if not evaluators:
        raise ValueError(f"no evaluator for dataset {dataset_name!r} (evaluator_type={etype!r})")
    return DatasetEvaluators(evaluators)
