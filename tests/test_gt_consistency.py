"""Evaluation never trusts inconsistent panoptic ground truth (issue 22, BAD 5 / BAD 6), and an
undefined PQ is reported as NaN instead of a ZeroDivisionError (issue 22, all-crowd split).

A copy of the real COCO panoptic fixture (JSON in tmp_path, PNGs copied, images linked) is
registered with detectron2's own ``register_coco_panoptic`` and scored by
:class:`pe_panoptic.evaluation.PanopticEvaluator` (the evaluator of ``build_evaluators``) with
perfect predictions made from the ground truth; each corruption of the issue is refused, naming
the file and the segment."""
import itertools
import json
import logging
import math
import os
import shutil

import numpy as np
import pytest
import torch

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets.coco_panoptic import register_coco_panoptic
from pe_panoptic.data.panoptic_png import read_panoptic_ids
from pe_panoptic.data.validation import DatasetError, install_validation
from pe_panoptic.evaluation import GroundTruthError, PanopticEvaluator, PanopticSemSegEvaluator, build_evaluators

COCO = "coco_2017_val_panoptic"
_COUNTER = itertools.count()


@pytest.fixture
def coco_copy(d2_datasets, tmp_path):
    src = d2_datasets / "coco"
    root = tmp_path / "coco"
    (root / "images").mkdir(parents=True)
    shutil.copytree(src / "panoptic_val2017", root / "panoptic")
    for f in (src / "val2017").iterdir():
        os.symlink(f, root / "images" / f.name)
    data = json.loads((src / "annotations" / "panoptic_val2017.json").read_text())
    names = []

    def register(change=lambda d: None, name="gt_check_coco_copy"):
        name = f"{name}_{next(_COUNTER)}"  # install_validation wraps a name once per process
        d = json.loads(json.dumps(data))
        change(d)
        path = root / f"{name}.json"
        path.write_text(json.dumps(d))
        meta = MetadataCatalog.get(COCO).as_dict()
        cats = {k: v for k, v in meta.items() if "classes" in k or "colors" in k or "contiguous" in k}
        register_coco_panoptic(name, cats, str(root / "images"), str(root / "panoptic"), str(path))
        install_validation([name])
        names.append(name)
        return name, str(path), root / "panoptic"

    yield register
    for n in names:
        if n in DatasetCatalog.list():
            DatasetCatalog.remove(n)
            MetadataCatalog.remove(n)


def perfect_predictions(name):
    """``(inputs, outputs)`` whose panoptic prediction is the ground truth itself."""
    meta = MetadataCatalog.get(name)
    th, st = meta.thing_dataset_id_to_contiguous_id, meta.stuff_dataset_id_to_contiguous_id
    inputs, outputs = [], []
    for d in DatasetCatalog.get(name):
        pan = read_panoptic_ids(d["pan_seg_file_name"])
        seg = np.zeros(pan.shape, np.int32)
        info = []
        for k, s in enumerate(d["segments_info"], 1):
            seg[pan == s["id"]] = k
            info.append({"id": k, "category_id": s["category_id"], "isthing": bool(s["isthing"])})
        inputs.append({"file_name": d["file_name"], "image_id": d["image_id"]})
        outputs.append({"panoptic_seg": (torch.from_numpy(seg), info),
                        "sem_seg": torch.from_numpy(np.zeros(pan.shape, np.int64))})
    assert th or st
    return inputs, outputs


def evaluate(name, tmp_path, cls=PanopticEvaluator, **kw):
    ev = cls(name, str(tmp_path / "eval"), **kw)
    ev.reset()
    inputs, outputs = perfect_predictions(name)
    ev.process(inputs, outputs)
    return ev.evaluate()["panoptic_seg"]


def test_consistent_ground_truth_scores_100_and_build_evaluators_uses_the_checked_evaluator(coco_copy, tmp_path):
    name, _, _ = coco_copy()
    res = evaluate(name, tmp_path)
    assert res["PQ"] == pytest.approx(100.0)
    assert isinstance(build_evaluators(name)._evaluators[0], PanopticEvaluator)


def test_duplicate_image_id_is_refused_at_load_and_in_the_evaluator(coco_copy, tmp_path):
    def dup(d):
        d["annotations"][1]["image_id"] = d["annotations"][0]["image_id"]
    name, path, _ = coco_copy(dup)
    iid = json.loads(open(path).read())["annotations"][0]["image_id"]
    with pytest.raises(DatasetError, match=rf"{path}: 1 problem:\n  annotation 1 .*duplicate image_id {iid}"):
        DatasetCatalog.get(name)
    from pe_panoptic.evaluation.gt_check import check_panoptic_gt
    with pytest.raises(GroundTruthError, match=rf"{path}: image_id {iid} is used by more than one annotation"):
        check_panoptic_gt(json.loads(open(path).read()), path, str(tmp_path))


@pytest.mark.parametrize("case", ["segment_absent_from_png", "wrong_area", "png_id_absent_from_json"])
def test_ground_truth_disagreeing_with_its_pngs_is_refused_naming_file_and_segment(coco_copy, tmp_path, case):
    name, path, pngs = coco_copy(name=f"gt_check_{case}")
    data = json.loads(open(path).read())
    ann = data["annotations"][0]
    png = str(pngs / ann["file_name"])
    seg = ann["segments_info"][0]
    if case == "segment_absent_from_png":
        ann["segments_info"].append(dict(seg, id=seg["id"] + 7777777, area=10))
        pattern = rf"{png}: segment id {seg['id'] + 7777777} .* has no pixel in the PNG"
    elif case == "wrong_area":
        area = seg["area"]  # seg is the dict being edited: keep the true area first
        ann["segments_info"][0]["area"] = area + 5
        pattern = rf"{png}: segment id {seg['id']} has area {area + 5} in the JSON but {area} pixels"
    else:
        dropped = ann["segments_info"].pop()
        pattern = rf"{png}: PNG ids \[{dropped['id']}\] are not in the JSON's segments_info"
    inputs, outputs = perfect_predictions(name)  # predictions from the consistent ground truth
    open(path, "w").write(json.dumps(data))
    ev = PanopticEvaluator(name, str(tmp_path / "eval"))
    ev.reset()
    ev.process(inputs, outputs)
    with pytest.raises(GroundTruthError, match=rf"{path}: the ground truth disagrees .*\n  image_id .*{pattern}"):
        ev.evaluate()
    if case != "wrong_area":  # mIoU reads the PNG on its own: checked there too, on first read
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
        name, _, _ = coco_copy(lambda d: d.update(annotations=data["annotations"]), name=f"gt_check_sem_{case}")
        sem = PanopticSemSegEvaluator(name, distributed=False)
        sem.reset()
        inputs, outputs = perfect_predictions(name) if case == "png_id_absent_from_json" else (inputs, outputs)
        with pytest.raises(GroundTruthError, match=pattern):
            sem.process(inputs, outputs)


def test_all_crowd_split_warns_at_load_and_evaluates_without_crashing(coco_copy, tmp_path, caplog):
    """A split whose segments are all crowd: warned at load, and the evaluation returns (panopticapi
    raised ZeroDivisionError after training). With one crowd region per category (panopticapi keeps
    one crowd region per category and image), the perfect prediction lies inside the crowd regions,
    which panopticapi ignores: no category has a TP, FP or FN, and PQ / PQ_th / PQ_st are
    undefined, reported as NaN with a warning, through the real pq_compute."""
    from PIL import Image
    from panopticapi.utils import id2rgb

    def crowd(d):
        d["annotations"] = d["annotations"][:1]
        ann = d["annotations"][0]
        d["images"] = [im for im in d["images"] if im["id"] == ann["image_id"]]
        png = root / "panoptic" / ann["file_name"]
        pan = read_panoptic_ids(str(png))
        merged = np.zeros_like(pan)
        segments = []
        for cat in sorted({s["category_id"] for s in ann["segments_info"]}):  # one crowd segment a category
            mask = np.isin(pan, [s["id"] for s in ann["segments_info"] if s["category_id"] == cat])
            sid = len(segments) + 1
            merged[mask] = sid
            ys, xs = np.nonzero(mask)
            segments.append({"id": sid, "category_id": cat, "iscrowd": 1, "area": int(mask.sum()),
                             "bbox": [int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1),
                                      int(ys.max() - ys.min() + 1)]})
        Image.fromarray(id2rgb(merged)).save(png)
        ann["segments_info"] = segments

    root = tmp_path / "coco"  # coco_copy's folder (the same tmp_path): its PNGs are copies
    name, path, _ = coco_copy(crowd)
    with caplog.at_level(logging.WARNING):
        DatasetCatalog.get(name)
    assert f"{path}: every segment is a crowd region" in caplog.text
    ev = PanopticEvaluator(name, str(tmp_path / "eval"))
    ev.reset()
    inputs, outputs = perfect_predictions(name)
    assert len(outputs[0]["panoptic_seg"][1]) >= 3  # things and stuff predicted
    ev.process(inputs, outputs)
    with caplog.at_level(logging.WARNING):
        res = ev.evaluate()["panoptic_seg"]
    assert all(math.isnan(res[k]) for k in ("PQ", "PQ_th", "PQ_st", "SQ", "RQ")), res
    assert f"PQ of {name!r} is undefined (reported as NaN)" in caplog.text


def test_pq_from_annotations_nan_for_an_empty_group(coco_copy, tmp_path):
    """No category of a group has a segment: that group's PQ is NaN, not a ZeroDivisionError."""
    import pe_panoptic.evaluation.panoptic as P

    class Stat:  # panopticapi's PQStat with every category empty
        pq_per_cat = {c: type("S", (), {"tp": 0, "fp": 0, "fn": 0})() for c in (1, 2)}

        def pq_average(self, categories, isthing):
            raise ZeroDivisionError

    import panopticapi.evaluation as pe
    orig = pe.pq_compute_multi_core
    pe.pq_compute_multi_core = lambda *a, **k: Stat()
    try:
        gt = {"categories": [{"id": 1, "isthing": 1}, {"id": 2, "isthing": 0}], "annotations": [{"image_id": 7}]}
        out = P.pq_from_annotations(gt, {"annotations": [{"image_id": 7}]}, str(tmp_path), str(tmp_path))
    finally:
        pe.pq_compute_multi_core = orig
    assert all(math.isnan(out[g]["pq"]) and out[g]["n"] == 0 for g in ("All", "Things", "Stuff"))


def test_only_predicted_scores_the_images_given(coco_copy, tmp_path):
    name, _, _ = coco_copy()
    ev = PanopticEvaluator(name, str(tmp_path / "eval"), only_predicted=True)
    ev.reset()
    inputs, outputs = perfect_predictions(name)
    ev.process(inputs[:1], outputs[:1])
    assert ev.evaluate()["panoptic_seg"]["PQ"] == pytest.approx(100.0)
    from detectron2.evaluation import COCOPanopticEvaluator, DatasetEvaluators
    from pe_panoptic.evaluation.panoptic import score_only_predicted
    both = score_only_predicted(DatasetEvaluators([PanopticEvaluator(name), PanopticSemSegEvaluator(name)]))
    assert both._evaluators[0]._only_predicted
    with pytest.raises(TypeError, match="COCOPanopticEvaluator scores every image"):
        score_only_predicted(COCOPanopticEvaluator(name))
    full = PanopticEvaluator(name, str(tmp_path / "eval2"))
    full.reset()
    full.process(inputs[:1], outputs[:1])
    with pytest.raises(KeyError, match="no prediction for the image with id"):
        full.evaluate()
