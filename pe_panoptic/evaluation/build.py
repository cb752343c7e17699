"""The evaluator list of a dataset, from its metadata (as Mask2Former's ``train_net`` builds it)."""
import logging
from typing import List, Optional

from detectron2.data import MetadataCatalog
from detectron2.evaluation import DatasetEvaluators

from pe_panoptic.evaluation.panoptic import PanopticEvaluator

logger = logging.getLogger(__name__)


def build_evaluators(dataset_name: str, output_dir: Optional[str] = None, *,
                     panoptic: bool = True, semantic: bool = True, with_depth: bool = False):
    """Every metric the dataset supports, from its metadata (as Mask2Former's train_net does):
    PQ (:class:`pe_panoptic.evaluation.panoptic.PanopticEvaluator`: detectron2's
    ``COCOPanopticEvaluator`` with checked ground truth and NaN for an undefined PQ; for ``evaluator_type="cityscapes_panoptic_seg"`` also the
    official cityscapesScripts evaluation), semantic mIoU, and depth metrics (``DepthEvaluator``)
    for depth datasets (``evaluator_type="depth"``) or, with ``with_depth``, for any dataset with
    metric depth ground truth (metadata ``depth_kind="metric"``)."""
    meta = MetadataCatalog.get(dataset_name)
    etype = getattr(meta, "evaluator_type", None)
    evaluators: List = []
    is_panoptic = etype in ("coco_panoptic_seg", "cityscapes_panoptic_seg") or hasattr(meta, "panoptic_json")
    if panoptic and is_panoptic:
        evaluators.append(PanopticEvaluator(dataset_name, output_dir))
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


def check_evaluator_dataset(cfg) -> None:
    """The evaluator must score the dataset the test loader reads: ``ValueError`` naming the
    override that is missing when ``dataloader.evaluator.dataset_name`` is not the (single)
    ``dataloader.test.dataset.names`` (the run would fail only after inference with
    ``KeyError: '... is not in dataset ...'``)."""
    ev = cfg.dataloader.get("evaluator", None)
    test = cfg.dataloader.get("test", None)
    if ev is None or test is None or "dataset_name" not in ev:
        return
    names = test.get("dataset", {}).get("names", None)
    names = [names] if isinstance(names, str) else list(names or [])
    if len(names) == 1 and ev.dataset_name != names[0]:
        raise ValueError(f"dataloader.test.dataset.names={names[0]} but dataloader.evaluator.dataset_name="
                         f"{ev.dataset_name}: the evaluator would look for the test images in the wrong dataset; "
                         f"add the override dataloader.evaluator.dataset_name={names[0]}")
