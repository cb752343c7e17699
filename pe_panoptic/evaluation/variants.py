"""Score several post-processing variants of ONE trained model in a single pass over a dataset.

The network runs once per batch; every variant (a set of :class:`PostProcessConfig` field
overrides, e.g. ``{"decoder": "vote"}`` or ``{"void_source": "semantic"}``) decodes those same
raw outputs through :meth:`PixelCentroidHead.inference` and feeds its own evaluator. The results
equal separate ``inference_on_dataset`` runs with each config (tested), at the cost of one
forward pass instead of one per variant.
"""
from __future__ import annotations

import dataclasses
import itertools
import logging
import time
from typing import Callable, Dict, Iterable, List, Mapping, Sequence

import torch

from detectron2.evaluation import DatasetEvaluator
from detectron2.utils import comm

from pe_panoptic.postprocess import DECODERS, VOID_SOURCES, PostProcessConfig

__all__ = ["variant_name", "variant_grid", "evaluate_postprocess_variants"]

logger = logging.getLogger(__name__)


def variant_name(overrides: Mapping) -> str:
    """``{"decoder": "vote", "void_source": "semantic"}`` -> ``"decoder=vote,void_source=semantic"``."""
    return ",".join(f"{k}={v}" for k, v in overrides.items()) or "config"


def variant_grid(decoders: Sequence[str] = DECODERS, void_sources: Sequence[str] = VOID_SOURCES) -> List[Dict]:
    """All ``decoder x void_source`` combinations, validated."""
    for d in decoders:
        if d not in DECODERS:
            raise ValueError(f"unknown decoder {d!r}; choose from {DECODERS}")
    for v in void_sources:
        if v not in VOID_SOURCES:
            raise ValueError(f"unknown void_source {v!r}; choose from {VOID_SOURCES}")
    return [{"decoder": d, "void_source": v} for d, v in itertools.product(decoders, void_sources)]


@torch.no_grad()
def evaluate_postprocess_variants(
    model,
    data_loader: Iterable,
    make_evaluator: Callable[[str], DatasetEvaluator],
    variants: Sequence[Mapping],
) -> Dict[str, dict]:
    """Evaluate ``model`` once per post-processing variant, running the network once per batch.

    Args:
        model: a :class:`pe_panoptic.modeling.meta_arch.PixelCentroidHead` (put in eval mode here; its
            ``postprocess_cfg`` is restored afterwards).
        data_loader: test loader yielding lists of mapped inputs.
        make_evaluator: ``name -> DatasetEvaluator`` (a fresh one per variant: each needs its
            own output directory).
        variants: field overrides of the model's ``postprocess_cfg``, one mapping per variant.

    Returns ``{variant_name: evaluator results}`` in the order of ``variants``.
    """
    if not variants:
        raise ValueError("give at least one post-processing variant")
    base = model.postprocess_cfg
    fields = {f.name for f in dataclasses.fields(PostProcessConfig)}
    cfgs = {}
    for ov in variants:
        bad = set(ov) - fields
        if bad:
            raise ValueError(f"unknown PostProcessConfig fields {sorted(bad)}; known: {sorted(fields)}")
        name = variant_name(ov)
        if name in cfgs:
            raise ValueError(f"variant {name!r} given twice")
        cfgs[name] = dataclasses.replace(base, **ov)
    evaluators = {name: make_evaluator(name) for name in cfgs}
    for ev in evaluators.values():
        ev.reset()
    was_training = model.training
    model.eval()
    seconds = dict.fromkeys(cfgs, 0.0)
    n = 0
    try:
        for batch in data_loader:
            for idx in model.size_groups(batch):  # one pass per padded size, as model(batch) runs
                inputs = [batch[i] for i in idx]
                images = model.preprocess_image(inputs)
                outputs = model.forward_features(images.tensor)
                for name, cfg in cfgs.items():
                    model.postprocess_cfg = cfg
                    t = time.perf_counter()
                    results = model.inference(outputs, inputs, images)
                    seconds[name] += time.perf_counter() - t
                    evaluators[name].process(inputs, results)
                n += len(inputs)
    finally:
        model.postprocess_cfg = base
        model.train(was_training)
    out = {}
    for name, ev in evaluators.items():
        res = ev.evaluate()
        if comm.is_main_process():
            res = dict(res or {})
            res["postprocess_ms_per_image"] = 1000.0 * seconds[name] / max(n, 1)
            out[name] = res
            logger.info(f"{name}: {res}")
    return out
