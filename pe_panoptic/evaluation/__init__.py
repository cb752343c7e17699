from .semseg import PanopticSemSegEvaluator, semantic_from_panoptic
