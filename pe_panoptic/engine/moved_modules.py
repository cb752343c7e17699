"""Module paths that moved when the package was reorganized (issue 19), for saved ``config.yaml``.

A run's ``config.yaml`` names its classes and functions by module path (``_target_:
pe_panoptic.meta_arch.PixelCentroidHead``). Runs saved before the reorganization name the old
flat modules; :func:`upgrade_config` rewrites those names to today's in a loaded config and says
which it rewrote, so that such a run still evaluates and resumes. Nothing else reads this table.
"""
import logging
import re
from typing import Dict, List

logger = logging.getLogger(__name__)

#: old module -> new module
MOVED: Dict[str, str] = {
    "pe_panoptic.backbone": "pe_panoptic.modeling.backbone",
    "pe_panoptic.pos_embed": "pe_panoptic.modeling.pos_embed",
    "pe_panoptic.checkpoint": "pe_panoptic.modeling.backbone_weights",
    "pe_panoptic.decoder": "pe_panoptic.modeling.decoder",
    "pe_panoptic.meta_arch": "pe_panoptic.modeling.meta_arch",
    "pe_panoptic.losses": "pe_panoptic.modeling.losses",
    "pe_panoptic.targets": "pe_panoptic.data.targets",
    "pe_panoptic.solver": "pe_panoptic.engine.solver",
    "pe_panoptic.recipes": "pe_panoptic.engine.recipes",
    "pe_panoptic.checkpoint_io": "pe_panoptic.engine.checkpoint_io",
    "pe_panoptic.config_overrides": "pe_panoptic.engine.config_overrides",
    "pe_panoptic.run_dir": "pe_panoptic.engine.run_dir",
    "pe_panoptic.learning_curve": "pe_panoptic.engine.learning_curve",
    "pe_panoptic.mask2former_baseline": "pe_panoptic.baselines.mask2former",
    "pe_panoptic.onnx_dinov2": "pe_panoptic.export.onnx_dinov2",
    "pe_panoptic.paper_rows": "pe_panoptic.studies.paper_rows",
    "pe_panoptic.analysis": "pe_panoptic.studies.analysis",
    "pe_panoptic.benchmark": "pe_panoptic.studies.benchmark",
    "pe_panoptic.equal_budget": "pe_panoptic.studies.equal_budget",
    "pe_panoptic.visualize": "pe_panoptic.studies.visualize",
}
#: old names whose module became a package of the same name: (old object path) -> new
MOVED_OBJECTS: Dict[str, str] = {
    "pe_panoptic.engine.build_evaluators": "pe_panoptic.evaluation.build.build_evaluators",
    "pe_panoptic.engine.PETrainer": "pe_panoptic.engine.trainer.PETrainer",
    "pe_panoptic.baselines.build_separated_evaluators": "pe_panoptic.baselines.panoptic_fpn.build_separated_evaluators",
    "pe_panoptic.baselines.SemanticFromPanopticOutputs": "pe_panoptic.baselines.panoptic_fpn.SemanticFromPanopticOutputs",
    "pe_panoptic.baselines.register_panoptic_separated": "pe_panoptic.baselines.panoptic_fpn.register_panoptic_separated",
}
_MODULE = re.compile(r"^(" + "|".join(re.escape(k) for k in sorted(MOVED, key=len, reverse=True)) + r")(?=\.|$)")


def upgrade_name(name: str) -> str:
    """``name`` with a moved module path replaced by today's (unchanged if nothing moved)."""
    if name in MOVED_OBJECTS:
        return MOVED_OBJECTS[name]
    return _MODULE.sub(lambda m: MOVED[m.group(1)], name)


def upgrade_config(cfg, source: str = "the config") -> List[str]:
    """Rewrite, in place, every ``_target_`` string of ``cfg`` that names a moved module; log and
    return the ``old -> new`` pairs."""
    changed: List[str] = []

    def walk(node):
        if hasattr(node, "items"):
            for k, v in list(node.items()):
                if k == "_target_" and isinstance(v, str):
                    new = upgrade_name(v)
                    if new != v:
                        node[k] = new
                        changed.append(f"{v} -> {new}")
                else:
                    walk(v)
        elif isinstance(node, (list, tuple)) or (hasattr(node, "__iter__") and hasattr(node, "__len__")
                                                and not isinstance(node, (str, bytes))):
            for v in node:
                walk(v)

    walk(cfg)
    if changed:
        logger.warning(f"{source} names modules that moved in the package reorganization; read as today's: "
                       + "; ".join(sorted(set(changed))))
    return changed
