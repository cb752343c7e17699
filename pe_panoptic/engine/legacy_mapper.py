"""Mapper arguments of saved runs from before the target builders, for ``config.yaml``.

Until the mapper took target builders it had the panoptic settings (``dataset_name``,
``eds_D``, ``use_eds``, ``include_void``, ...) and the depth settings (``depth="metric"``,
``depth_root``, ``min_depth``, ...) as its own arguments and ``panoptic=True/False/"auto"``.
:func:`upgrade_mapper_args` rewrites such a mapper node of a loaded config into today's
``panoptic=PanopticTargets(...)`` / ``depth=DepthTargets(...)`` nodes (same behaviour) and says
which it rewrote, so that such a run still evaluates and resumes. Nothing else reads this.
"""
import logging
from typing import List

logger = logging.getLogger(__name__)

PANOPTIC_TARGETS = "pe_panoptic.data.panoptic_builder.PanopticTargets"
DEPTH_TARGETS = "pe_panoptic.data.depth_builder.DepthTargets"
#: former mapper argument -> PanopticTargets argument
PANOPTIC_ARGS = {"dataset_name": "dataset_name", "thing_ids": "thing_ids", "ignore_label": "ignore_label",
                 "eds_D": "eds_D", "eds_w_min": "eds_w_min", "use_eds": "use_eds", "include_void": "include_void"}
#: former mapper argument -> DepthTargets argument
DEPTH_ARGS = {"depth_root": "root", "min_depth": "min_depth", "max_depth": "max_depth", "depth_scale": "scale"}


def _is_mapper(node) -> bool:
    target = node.get("_target_")
    return isinstance(target, str) and target.startswith("pe_panoptic.") and \
        target.endswith(".PanopticCentroidDatasetMapper")


def _is_old(node) -> bool:
    return any(k in node for k in (*PANOPTIC_ARGS, *DEPTH_ARGS)) or \
        isinstance(node.get("panoptic"), (bool, str)) or isinstance(node.get("depth"), str)


def _moved(node, key):
    """The value of ``node[key]`` to put one level deeper (a relative interpolation gets one more dot)."""
    from omegaconf import OmegaConf

    if OmegaConf.is_config(node) and OmegaConf.is_interpolation(node, key):
        text = OmegaConf.to_container(node, resolve=False)[key]
        return "${." + text[2:] if text.startswith("${.") else text
    return node[key]


def _upgrade(node) -> None:
    dataset_name = _moved(node, "dataset_name") if "dataset_name" in node else None
    panoptic = node.pop("panoptic", True)
    depth = node.pop("depth", None)
    pan_args = {new: _moved(node, old) for old, new in PANOPTIC_ARGS.items() if old in node}
    depth_args = {new: _moved(node, old) for old, new in DEPTH_ARGS.items() if old in node}
    for old in (*PANOPTIC_ARGS, *DEPTH_ARGS):
        node.pop(old, None)
    node["panoptic"] = None if panoptic is False else \
        {"_target_": PANOPTIC_TARGETS, **pan_args, "optional": panoptic == "auto"}
    node["depth"] = None if depth is None else \
        {"_target_": DEPTH_TARGETS, "kind": depth, "dataset_name": dataset_name, **depth_args}


def upgrade_mapper_args(cfg, source: str = "the config") -> List[str]:
    """Rewrite, in place, every ``PanopticCentroidDatasetMapper`` node of ``cfg`` that has the
    former arguments; log and return the paths of the rewritten nodes."""
    changed: List[str] = []

    def walk(node, path):
        if hasattr(node, "items"):
            if _is_mapper(node) and _is_old(node):
                _upgrade(node)
                changed.append(path or "<root>")
            for k, v in list(node.items()):
                walk(v, f"{path}.{k}" if path else str(k))
        elif isinstance(node, (list, tuple)) or (hasattr(node, "__iter__") and hasattr(node, "__len__")
                                                and not isinstance(node, (str, bytes))):
            for i, v in enumerate(node):
                walk(v, f"{path}.{i}")

    walk(cfg, "")
    if changed:
        logger.warning(f"{source} has mappers with the arguments from before the target builders; read as "
                       f"panoptic=PanopticTargets(...) / depth=DepthTargets(...): " + ", ".join(changed))
    return changed
