"""detectron2 model-zoo baselines (Panoptic FPN) on the datasets and evaluators of pe_panoptic.

Panoptic FPN trains on "separated" panoptic data, as detectron2's
``coco_2017_train_panoptic_separated``: instance annotations (boxes + masks) from a COCO
instances JSON, and a semantic map where every thing pixel is class 0 and the stuff classes are
``1..S``. :func:`register_panoptic_separated` derives such a dataset ``<name>_separated`` from a
"standard" panoptic registration that has an instances JSON (metadata ``json_file``), e.g. the
synthetic dataset; the stuff-only PNGs are written next to the panoptic PNGs on first use.

Evaluation is the one of :func:`pe_panoptic.evaluation.build.build_evaluators`: PQ with
``COCOPanopticEvaluator`` (on the separated dataset: its metadata maps Panoptic FPN's separated
category ids back to dataset ids) and semantic mIoU with
:class:`pe_panoptic.evaluation.PanopticSemSegEvaluator` on the standard dataset, fed the semantic
map of Panoptic FPN's panoptic output (:class:`SemanticFromPanopticOutputs`), since its own
``sem_seg`` only knows "things" + stuff classes.
"""
from __future__ import annotations

import logging
import os
from typing import Dict, List, Optional

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets.coco import load_coco_json, load_sem_seg
from detectron2.data.datasets.coco_panoptic import merge_to_panoptic
from detectron2.evaluation import COCOPanopticEvaluator, DatasetEvaluator, DatasetEvaluators

__all__ = [
    "separated_metadata",
    "stuff_only_map",
    "write_stuff_only_pngs",
    "register_panoptic_separated",
    "SemanticFromPanopticOutputs",
    "build_separated_evaluators",
    "register_all_separated",
]

logger = logging.getLogger(__name__)

#: standard panoptic datasets that get a ``_separated`` twin when this module is imported
SEPARATED_SOURCES = ("synthetic_panoptic_train", "synthetic_panoptic_val")


def _standard_ids(meta):
    things = {int(k): int(v) for k, v in meta.thing_dataset_id_to_contiguous_id.items()}
    everything = {int(k): int(v) for k, v in meta.stuff_dataset_id_to_contiguous_id.items()}
    everything.update(things)
    stuff_ids = sorted((k for k in everything if k not in things), key=lambda k: everything[k])
    return things, everything, stuff_ids


def separated_metadata(standard_name: str) -> dict:
    """Metadata of the separated twin of a standard panoptic dataset (layout of detectron2's
    ``_get_coco_panoptic_separated_meta``): things contiguous ``0..T-1``; stuff contiguous
    ``1..S`` in the standard order, ``0`` = "things"."""
    meta = MetadataCatalog.get(standard_name)
    try:
        things, everything, stuff_ids = _standard_ids(meta)
    except AttributeError as e:
        raise ValueError(f"{standard_name!r} has no panoptic metadata (thing/stuff_dataset_id_to_contiguous_id)") from e
    names = list(meta.stuff_classes)
    colors = list(getattr(meta, "stuff_colors", [[0, 0, 0]] * len(names)))
    thing_ids = sorted(things, key=lambda k: things[k])
    stuff_map = {k: i + 1 for i, k in enumerate(stuff_ids)}
    stuff_map[0] = 0
    return {
        "thing_dataset_id_to_contiguous_id": {k: i for i, k in enumerate(thing_ids)},
        "thing_classes": [names[everything[k]] for k in thing_ids],
        "thing_colors": [list(colors[everything[k]]) for k in thing_ids],
        "stuff_dataset_id_to_contiguous_id": stuff_map,
        "stuff_classes": ["things"] + [names[everything[k]] for k in stuff_ids],
        "stuff_colors": [[82, 18, 128]] + [list(colors[everything[k]]) for k in stuff_ids],
    }


def stuff_only_map(pan_ids: np.ndarray, segments_info: List[dict], stuff_map: Dict[int, int],
                   ignore_label: int = 255) -> np.ndarray:
    """Separated semantic map ``[H, W]`` uint8 from a panoptic id map: thing segments -> 0, stuff
    segments -> their separated contiguous id, unlabeled (id 0) -> ``ignore_label``.

    ``segments_info`` carries *dataset* category ids (COCO panoptic JSON).
    """
    uniq, inv = np.unique(pan_ids, return_inverse=True)
    cat = {int(s["id"]): int(s["category_id"]) for s in segments_info}
    lut = np.full(len(uniq), ignore_label, dtype=np.uint8)
    for i, u in enumerate(uniq.tolist()):  # one entry per segment of the image
        if u in cat:
            lut[i] = stuff_map.get(cat[u], 0)
        elif u != 0:
            raise ValueError(f"segment id {u} of the panoptic PNG is not in segments_info")
    return lut[inv.reshape(pan_ids.shape)]


def write_stuff_only_pngs(panoptic_json: str, panoptic_root: str, out_root: str,
                          stuff_map: Dict[int, int]) -> str:
    """Write ``out_root/<name>.png`` (see :func:`stuff_only_map`) for every annotation of a COCO
    panoptic JSON. Idempotent: an existing PNG newer than its source is kept; files are replaced
    atomically (several processes may run this concurrently)."""
    import json

    from pe_panoptic.data.panoptic_png import read_panoptic_ids

    with open(panoptic_json) as f:
        anns = json.load(f)["annotations"]
    os.makedirs(out_root, exist_ok=True)
    for ann in anns:
        src = os.path.join(panoptic_root, ann["file_name"])
        dst = os.path.join(out_root, ann["file_name"])
        if os.path.exists(dst) and os.path.getmtime(dst) >= os.path.getmtime(src):
            continue
        ids = read_panoptic_ids(src)
        sem = stuff_only_map(ids, ann["segments_info"], stuff_map)
        tmp = f"{dst}.{os.getpid()}.tmp.png"
        Image.fromarray(sem).save(tmp)
        os.replace(tmp, dst)
    return out_root


def _load_separated(standard_name: str, name: str) -> List[dict]:
    meta = MetadataCatalog.get(standard_name)
    smeta = MetadataCatalog.get(name)
    sem_root = write_stuff_only_pngs(meta.panoptic_json, meta.panoptic_root, smeta.sem_seg_root,
                                     smeta.stuff_dataset_id_to_contiguous_id)
    return merge_to_panoptic(load_coco_json(meta.json_file, meta.image_root, name),
                             load_sem_seg(sem_root, meta.image_root))


def register_panoptic_separated(standard_name: str, name: Optional[str] = None) -> str:
    """Register ``<standard_name>_separated`` (returns its name). The standard dataset's metadata
    must have ``json_file`` (COCO instances JSON with masks), ``panoptic_json``,
    ``panoptic_root`` and ``image_root``; stuff-only PNGs go to ``<panoptic_root>_stuffonly``."""
    name = name or f"{standard_name}_separated"
    meta = MetadataCatalog.get(standard_name)
    missing = [k for k in ("json_file", "panoptic_json", "panoptic_root", "image_root") if not hasattr(meta, k)]
    if missing:
        raise ValueError(f"register_panoptic_separated: dataset {standard_name!r} metadata lacks {missing}")
    if name in DatasetCatalog.list():
        raise ValueError(f"register_panoptic_separated: {name!r} is already registered")
    DatasetCatalog.register(name, lambda: _load_separated(standard_name, name))
    MetadataCatalog.get(name).set(
        panoptic_root=meta.panoptic_root,
        image_root=meta.image_root,
        panoptic_json=meta.panoptic_json,
        json_file=meta.json_file,
        sem_seg_root=meta.panoptic_root.rstrip("/") + "_stuffonly",
        evaluator_type="coco_panoptic_seg",
        ignore_label=255,
        standard_dataset=standard_name,
        **separated_metadata(standard_name),
    )
    return name


class SemanticFromPanopticOutputs(DatasetEvaluator):
    """Feed ``evaluator`` (a semantic evaluator of the *standard* dataset, e.g.
    ``PanopticSemSegEvaluator``) with ``sem_seg`` derived from a Panoptic FPN output: each pixel
    gets the class of its panoptic segment; pixels left unlabeled by the panoptic merge get the
    best *stuff* class of the model's semantic head (its "things" channel has no class). The
    result is a one-hot ``[C, H, W]`` over the standard contiguous classes."""

    def __init__(self, evaluator: DatasetEvaluator, separated_name: str, standard_name: Optional[str] = None):
        smeta = MetadataCatalog.get(separated_name)
        standard_name = standard_name or smeta.standard_dataset
        _, everything, _ = _standard_ids(MetadataCatalog.get(standard_name))
        self.num_classes = len(MetadataCatalog.get(standard_name).stuff_classes)
        thing_to_std = {c: everything[d] for d, c in smeta.thing_dataset_id_to_contiguous_id.items()}
        stuff_to_std = {c: everything[d] for d, c in smeta.stuff_dataset_id_to_contiguous_id.items() if c > 0}
        self._thing_lut = torch.tensor([thing_to_std[i] for i in range(len(thing_to_std))], dtype=torch.long)
        # index 0 ("things") is never used: its logit is excluded below
        self._stuff_lut = torch.tensor([0] + [stuff_to_std[i] for i in range(1, len(stuff_to_std) + 1)],
                                       dtype=torch.long)
        self.evaluator = evaluator

    def semantic(self, output: dict) -> torch.Tensor:
        seg, infos = output["panoptic_seg"]
        seg = seg.long()
        logits = output["sem_seg"]
        stuff = logits[1:].argmax(0) + 1
        pred = self._stuff_lut.to(seg.device)[stuff.to(seg.device)]
        if infos:
            n = int(seg.max()) + 1
            lut = torch.full((n,), -1, dtype=torch.long, device=seg.device)
            for s in infos:  # one entry per segment
                luts = self._thing_lut if s["isthing"] else self._stuff_lut
                lut[s["id"]] = int(luts[int(s["category_id"])])
            seg_cls = lut[seg]
            pred = torch.where(seg_cls >= 0, seg_cls, pred)
        return F.one_hot(pred, self.num_classes).permute(2, 0, 1).float()

    def reset(self):
        self.evaluator.reset()

    def process(self, inputs, outputs):
        self.evaluator.process(inputs, [{"sem_seg": self.semantic(o)} for o in outputs])

    def evaluate(self):
        return self.evaluator.evaluate()


def build_separated_evaluators(dataset_name: str, output_dir: Optional[str] = None) -> DatasetEvaluators:
    """PQ and mIoU of a Panoptic FPN on the separated dataset ``dataset_name`` (see module doc)."""
    from pe_panoptic.evaluation import PanopticSemSegEvaluator

    standard = MetadataCatalog.get(dataset_name).get("standard_dataset", None)
    if standard is None:
        raise ValueError(f"{dataset_name!r} is not a separated dataset of register_panoptic_separated")
    # the semantic adapter runs first: COCOPanopticEvaluator.process rewrites segments_info in place
    # (pops "isthing", maps category ids to dataset ids)
    return DatasetEvaluators([
        SemanticFromPanopticOutputs(PanopticSemSegEvaluator(standard, distributed=True), dataset_name, standard),
        COCOPanopticEvaluator(dataset_name, output_dir),
    ])


def register_all_separated() -> None:
    """Register ``<name>_separated`` for :data:`SEPARATED_SOURCES` (skipping existing ones)."""
    from pe_panoptic import data  # noqa: F401  (registers the synthetic datasets)

    for src in SEPARATED_SOURCES:
        if f"{src}_separated" not in DatasetCatalog.list():
            register_panoptic_separated(src)


register_all_separated()
