"""Cityscapes evaluation on the real val frame: detectron2's COCOPanopticEvaluator, cityscapesScripts'
official panoptic evaluation (via CityscapesPanopticEvaluator) and mIoU, with the ground truth as
prediction (PQ 100) and with one segment given the wrong class (hand-computed PQ)."""
import numpy as np
import pytest
import torch
from PIL import Image

from detectron2.data import DatasetCatalog, MetadataCatalog
from panopticapi.utils import rgb2id

from pe_panoptic.evaluation.build import build_evaluators
from pe_panoptic.evaluation.cityscapes import CityscapesPanopticEvaluator, to_dataset_segments

NAME = "cityscapes_fine_panoptic_val"
CAR, TRUCK = 13, 14  # contiguous ids (Cityscapes trainIds); labelIds 26, 27


@pytest.fixture(scope="module")
def frame(d2_datasets):
    (d,) = DatasetCatalog.get(NAME)
    ids = rgb2id(np.asarray(Image.open(d["pan_seg_file_name"]).convert("RGB"))).astype(np.int64)
    return d, ids


def _prediction(d, ids, relabel=None):
    """Ground truth as a model output: segments renumbered 1..S (as the model does), contiguous
    classes with isthing from the metadata, and a one-hot sem_seg."""
    things = set(MetadataCatalog.get(NAME).thing_dataset_id_to_contiguous_id.values())
    seg = np.zeros_like(ids)
    segments = []
    sem = torch.zeros((19,) + ids.shape)
    for k, s in enumerate(d["segments_info"], 1):
        cat = (relabel or {}).get(s["id"], s["category_id"])
        seg[ids == s["id"]] = k
        segments.append({"id": k, "category_id": cat, "isthing": cat in things, "score": 1.0})
        sem[cat][torch.from_numpy(ids == s["id"])] = 1.0
    return {"panoptic_seg": (torch.from_numpy(seg).to(torch.int32), segments), "sem_seg": sem}


def _evaluate(d, pred):
    ev = build_evaluators(NAME, None)
    ev.reset()
    ev.process([d], [pred])
    return ev, ev.evaluate()


def test_ground_truth_as_prediction_gives_pq_100(frame):
    d, ids = frame
    assert all("isthing" not in s for s in d["segments_info"])  # builtin Cityscapes dicts
    ev, res = _evaluate(d, _prediction(d, ids))
    assert [type(e).__name__ for e in ev._evaluators] == [
        "PanopticEvaluator", "CityscapesPanopticEvaluator", "PanopticSemSegEvaluator"]
    for key in ("panoptic_seg", "cityscapes_panoptic_seg"):
        for m in ("PQ", "SQ", "RQ", "PQ_th", "PQ_st"):
            assert res[key][m] == pytest.approx(100.0), (key, m)
    assert res["sem_seg"]["mIoU"] == pytest.approx(100.0)


def test_one_wrong_segment_hand_computed_pq(frame):
    """Car 26002 (the largest car) predicted as a truck. Categories with a TP/FP/FN: 8 stuff
    (road, sidewalk, building, fence, pole, traffic sign, vegetation, sky; all PQ 1), person (4 TP:
    PQ 1), car (2 TP, 1 FN: PQ = RQ = 2 / 2.5 = 0.8, SQ 1), truck (1 FP: 0). PQ = 9.8 / 11."""
    d, ids = frame
    assert {s["id"]: s["category_id"] for s in d["segments_info"]}[26002] == CAR
    _, res = _evaluate(d, _prediction(d, ids, relabel={26002: TRUCK}))
    expected = {
        "PQ": 100 * 9.8 / 11, "SQ": 100 * 10 / 11, "RQ": 100 * 9.8 / 11,
        "PQ_th": 100 * 1.8 / 3, "SQ_th": 100 * 2 / 3, "RQ_th": 100 * 1.8 / 3,
        "PQ_st": 100.0, "SQ_st": 100.0, "RQ_st": 100.0,
    }
    for key in ("cityscapes_panoptic_seg", "panoptic_seg"):  # official script and panopticapi agree
        for m, v in expected.items():
            assert res[key][m] == pytest.approx(v), (key, m)
    # semantic: the truck prediction covers car 26002 (1572 px; cars 26000/26001: 6 + 224 px)
    assert int((ids == 26002).sum()) == 1572
    assert res["sem_seg"]["IoU-car"] == pytest.approx(100 * 230 / 1802)
    assert np.isnan(res["sem_seg"]["IoU-truck"])  # SemSegEvaluator: IoU only for classes in the ground truth


def test_label_divisor_convention_and_category_mapping(frame):
    """detectron2's ``segments_info=None`` output (category * label_divisor + instance, -1 void)."""
    d, ids = frame
    seg = np.full(ids.shape, -1, np.int64)
    for s in d["segments_info"]:
        seg[ids == s["id"]] = s["category_id"] * 1000 + s["id"] % 1000 * (s["category_id"] >= 11)
    ev = CityscapesPanopticEvaluator(NAME)
    ev.process([d], [{"panoptic_seg": (torch.from_numpy(seg), None)}])
    res = ev.evaluate()["cityscapes_panoptic_seg"]
    assert res["PQ"] == pytest.approx(100.0)
    # contiguous trainId -> labelId through the metadata
    conv = to_dataset_segments([{"id": 1, "category_id": CAR, "isthing": True},
                                {"id": 2, "category_id": 0, "isthing": False},
                                {"id": 3, "category_id": 26}], ev._contiguous_to_dataset)
    assert conv == [{"id": 1, "category_id": 26, "iscrowd": 0}, {"id": 2, "category_id": 7, "iscrowd": 0},
                    {"id": 3, "category_id": 26, "iscrowd": 0}]
    with pytest.raises(KeyError, match="contiguous category_id 40"):
        to_dataset_segments([{"id": 1, "category_id": 40, "isthing": True}], ev._contiguous_to_dataset)


def test_missing_prediction_and_output_dir(frame, tmp_path):
    d, ids = frame
    ev = CityscapesPanopticEvaluator(NAME)
    ev.reset()
    with pytest.raises(ValueError, match=r"1 of the 1 images .* have no prediction .*frankfurt_000000_000294"):
        ev.evaluate()
    ev = CityscapesPanopticEvaluator(NAME, output_dir=str(tmp_path))
    ev.process([d], [_prediction(d, ids)])
    assert ev.evaluate()["cityscapes_panoptic_seg"]["PQ"] == pytest.approx(100.0)
    work = tmp_path / "cityscapes_panoptic_eval"
    assert (work / "results.json").is_file() and (work / "predictions.json").is_file()
    assert (work / "predictions" / "frankfurt_000000_000294_panoptic.png").is_file()
    with pytest.raises(ValueError, match="has no metadata 'panoptic_json'"):
        CityscapesPanopticEvaluator("nyuv2_depth_test")
