"""pe_panoptic.studies.analysis, tools/analyze_encoding.py and tools/analyze_sizes.py on hand-computed
inputs."""
import importlib.util
import json
import math
import pathlib

import numpy as np
import pytest
from PIL import Image

from pe_panoptic.studies.analysis import (
    binned_mean_iou,
    encoding_contrast,
    instance_ious,
    parse_encoding_spec,
    relative_improvement,
)

ROOT = pathlib.Path(__file__).resolve().parents[1]


def load_tool(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "tools" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def last_json(capsys):
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


# ----------------------------------------------------------------------------- encoding contrast
def pe_distance(k: int, L: int, n: int = 80) -> float:
    """||gamma(u0) - gamma(u0 - 2k/n)|| = 2 sqrt(sum_l sin^2(2^l pi k / n)) (half-angle identity)."""
    return 2.0 * math.sqrt(sum(math.sin(2**l * math.pi * k / n) ** 2 for l in range(L)))


def test_direct_regression_contrast_is_79():
    r = encoding_contrast("rgb", 80)
    assert r.reference == pytest.approx(1 - 1 / 80)
    # L1 on the channel (u + 1) / 2: the other centers are k / 80 away, k = 1..79
    assert r.min_distance == pytest.approx(1 / 80, abs=1e-12)
    assert r.max_distance == pytest.approx(79 / 80, abs=1e-12)
    assert r.contrast_ratio == pytest.approx(79.0, abs=1e-9)
    assert r.void_distance == pytest.approx(159 / 160, abs=1e-12)  # void channel value 0
    assert r.closer_than_void == 79


@pytest.mark.parametrize("L", [2, 3, 4, 5])
def test_pe_contrast_matches_closed_form(L):
    r = encoding_contrast(f"pe{L}", 80)
    d = [pe_distance(k, L) for k in range(1, 80)]
    np.testing.assert_allclose(r.distances.numpy(), d[::-1], atol=1e-12)  # positions ordered -1 -> 1
    assert r.contrast_ratio == pytest.approx(max(d) / min(d), rel=1e-12)
    assert r.void_distance == pytest.approx(math.sqrt(L), abs=1e-12)  # ||gamma(u0)|| = sqrt(L)
    assert r.closer_than_void == sum(x < math.sqrt(L) - 1e-9 for x in d)


def test_pe4_contrast_is_about_5():
    r = encoding_contrast("pe4", 80)
    # min at the neighbour: 2 sqrt(sum_{l<4} sin^2(2^l pi / 80)) = 0.71459
    assert r.min_distance == pytest.approx(0.7145919, abs=1e-6)
    assert r.contrast_ratio == pytest.approx(4.9118, abs=1e-4)
    assert r.closer_than_void == 6  # u0 - 1 is exactly as far as the void code (2)
    with pytest.raises(ValueError, match="encoding spec"):
        parse_encoding_spec("bins")
    with pytest.raises(ValueError, match="grid"):
        encoding_contrast("pe4", 1)


def test_analyze_encoding_tool(tmp_path, capsys):
    tool = load_tool("analyze_encoding")
    res = tool.main(["--encodings", "rgb", "pe4", "--grid", "80", "--output", str(tmp_path)])
    out = capsys.readouterr().out
    assert "| rgb" in out and "| pe4" in out
    printed = json.loads(out.strip().splitlines()[-1])
    assert printed == json.loads(json.dumps(res))
    assert printed["encodings"]["rgb"]["contrast_ratio"] == pytest.approx(79.0)
    assert printed["encodings"]["pe4"]["contrast_ratio"] == pytest.approx(4.9118, abs=1e-4)
    assert printed["reference_u"] == pytest.approx(0.9875)
    with Image.open(printed["plot"]) as im:
        assert im.size[0] > 300 and im.size[1] > 200
    assert json.loads((tmp_path / "encoding_contrast.json").read_text()) == printed


# ----------------------------------------------------------------------------- sizes
# 10 x 20 ground truth: cols 0-4: id 1 (thing, cat 0) rows 0-3 (20 px), id 4 (crowd thing) rows
# 4-5, void rows 6-9; cols 5-9: id 3 (stuff, cat 2); cols 10-19: id 2 (thing, cat 1, 100 px).
GT_SEGS = [
    {"id": 1, "category_id": 0, "isthing": True, "iscrowd": 0},
    {"id": 2, "category_id": 1, "isthing": True, "iscrowd": 0},
    {"id": 3, "category_id": 2, "isthing": False, "iscrowd": 0},
    {"id": 4, "category_id": 0, "isthing": True, "iscrowd": 1},
]


def gt_map():
    gt = np.zeros((10, 20), np.int64)
    gt[0:4, 0:5] = 1
    gt[4:6, 0:5] = 4
    gt[:, 5:10] = 3
    gt[:, 10:20] = 2
    return gt


def pred_a():
    """7: rows 0-7 cols 0-4 (40 px, 10 on void, 10 on crowd) -> IoU with 1: 20 / (20+40-20-10) = 2/3;
    8 (cat 0): cols 12-19 -> IoU with 2: 80 / 100; 9 (cat 1): cols 10-11 -> 20 / 100; 5: stuff."""
    p = np.zeros((10, 20), np.int64)
    p[0:8, 0:5] = 7
    p[:, 5:10] = 5
    p[:, 12:20] = 8
    p[:, 10:12] = 9
    segs = [{"id": 7, "category_id": 0, "isthing": True}, {"id": 8, "category_id": 0, "isthing": True},
            {"id": 9, "category_id": 1, "isthing": True}, {"id": 5, "category_id": 2, "isthing": False}]
    return p, segs


def pred_b():
    """7: rows 0-1 cols 0-4 -> IoU with 1 = 10 / 20 = 0.5 (not > 0.5); 8 (cat 1): cols 10-19 -> 1.0."""
    p = np.zeros((10, 20), np.int64)
    p[0:2, 0:5] = 7
    p[:, 10:20] = 8
    segs = [{"id": 7, "category_id": 0, "isthing": True}, {"id": 8, "category_id": 1, "isthing": True}]
    return p, segs


def test_instance_ious_hand_computed():
    p, segs = pred_a()
    r = instance_ious(gt_map(), GT_SEGS, p, segs)
    assert r.gt_ids.tolist() == [1, 2] and r.areas.tolist() == [20, 100] and r.num_pred == 3
    np.testing.assert_allclose(r.ious, [2 / 3, 0.8])
    assert r.matched.tolist() == [True, True]
    # same category: segment 2 (cat 1) can only match 9 (IoU 0.2): unmatched
    r = instance_ious(gt_map(), GT_SEGS, p, segs, same_category=True)
    np.testing.assert_allclose(r.ious, [2 / 3, 0.0])
    r = instance_ious(gt_map(), GT_SEGS, p, segs, same_category=True, unmatched="max")
    np.testing.assert_allclose(r.ious, [2 / 3, 0.2])
    assert r.matched.tolist() == [True, False]
    # IoU exactly 0.5 does not match
    p, segs = pred_b()
    r = instance_ious(gt_map(), GT_SEGS, p, segs)
    np.testing.assert_allclose(r.ious, [0.0, 1.0])
    # no prediction at all
    r = instance_ious(gt_map(), GT_SEGS, np.zeros((10, 20), np.int64), [])
    np.testing.assert_allclose(r.ious, [0.0, 0.0])
    with pytest.raises(ValueError, match=r"ids \[7\]"):
        instance_ious(gt_map(), GT_SEGS, pred_a()[0], pred_a()[1][1:])
    with pytest.raises(ValueError, match="differ in size"):
        instance_ious(gt_map(), GT_SEGS, np.zeros((5, 5), np.int64), [])


def test_binned_mean_and_relative_improvement():
    mean, count = binned_mean_iou([5, 20, 60, 100, 1000], [0.2, 0.4, 0.9, 0.5, 1.0], [0, 50, 500, math.inf])
    np.testing.assert_allclose(mean, [0.3, 0.7, 1.0])
    assert count.tolist() == [2, 2, 1]
    mean, count = binned_mean_iou([5], [0.5], [0, 10, 20])
    assert count.tolist() == [1, 0] and np.isnan(mean[1])
    rel = relative_improvement([0.5, 0.0, np.nan, 0.8], [0.75, 0.3, 0.5, 0.4])
    np.testing.assert_allclose(rel, [0.5, np.nan, np.nan, -0.5])
    with pytest.raises(ValueError, match="increasing"):
        binned_mean_iou([1.0], [1.0], [0, 0])


def write_dump(folder: pathlib.Path, pan: np.ndarray, segs, to_dataset):
    from panopticapi.utils import id2rgb

    (folder / "pngs").mkdir(parents=True)
    Image.fromarray(id2rgb(pan)).save(folder / "pngs" / "toy.png")
    ann = {"image_id": 7, "file_name": "toy.png",
           "segments_info": [{"id": s["id"], "category_id": to_dataset[s["category_id"]]} for s in segs]}
    (folder / "predictions.json").write_text(json.dumps({"annotations": [ann]}))
    return f"{folder / 'predictions.json'},{folder / 'pngs'}"


@pytest.fixture()
def toy_dataset(tmp_path):
    from detectron2.data import DatasetCatalog, MetadataCatalog
    from panopticapi.utils import id2rgb

    name = "h7_sizes_toy"
    Image.fromarray(id2rgb(gt_map())).save(tmp_path / "gt.png")
    dicts = [{"file_name": str(tmp_path / "toy.jpg"), "image_id": 7, "pan_seg_file_name": str(tmp_path / "gt.png"),
              "segments_info": GT_SEGS}]
    if name in DatasetCatalog.list():
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
    DatasetCatalog.register(name, lambda: dicts)
    MetadataCatalog.get(name).set(thing_dataset_id_to_contiguous_id={10: 0, 11: 1},
                                  stuff_dataset_id_to_contiguous_id={10: 0, 11: 1, 12: 2})
    yield name
    DatasetCatalog.remove(name)
    MetadataCatalog.remove(name)


def test_analyze_sizes_tool_two_dumps(toy_dataset, tmp_path, capsys):
    to_dataset = {0: 10, 1: 11, 2: 12}
    a = write_dump(tmp_path / "a", *pred_a(), to_dataset)
    b = write_dump(tmp_path / "b", *pred_b(), to_dataset)
    out = tmp_path / "out"
    tool = load_tool("analyze_sizes")
    res = tool.main(["--dataset", toy_dataset, "--model", f"A={a}", "--model", f"B={b}", "--bins", "0", "50", "inf",
                     "--output", str(out)])
    printed = last_json(capsys)
    assert printed == json.loads(json.dumps(res))
    assert printed["bins"] == [0, 50, None] and printed["num_images"] == 1
    A, B = printed["models"]["A"], printed["models"]["B"]
    assert A["count"] == [1, 1] and A["num_gt"] == 2 and A["num_matched"] == 2 and B["num_matched"] == 1
    assert A["miou"] == pytest.approx([2 / 3, 0.8]) and B["miou"] == pytest.approx([0.0, 1.0])
    assert A["miou_all"] == pytest.approx((2 / 3 + 0.8) / 2) and B["miou_all"] == pytest.approx(0.5)
    assert printed["relative_improvement"] == pytest.approx([-1.0, 0.25])
    assert printed["relative_improvement_all"] == pytest.approx(0.5 / (11 / 15) - 1)
    assert (out / "sizes.png").is_file() and json.loads((out / "sizes.json").read_text()) == printed
    # one model, same-category matching, unmatched counted with their best IoU
    tool.main(["--dataset", toy_dataset, "--model", f"A={a}", "--bins", "0", "50", "inf", "--same-category",
               "--unmatched", "max", "--output", str(out)])
    printed = last_json(capsys)
    assert printed["models"]["A"]["miou"] == pytest.approx([2 / 3, 0.2]) and printed["relative_improvement"] is None
    with pytest.raises(ValueError, match="NAME=PRED_JSON"):
        tool.main(["--dataset", toy_dataset, "--model", "A", "--output", str(out)])


def test_analyze_sizes_runs_a_config(d2_datasets, tmp_path, capsys):
    """NAME=CONFIG,none: a (random, tiny) model's predictions are dumped and scored."""
    from detectron2.data import DatasetCatalog

    tool = load_tool("analyze_sizes")
    opts = ["model.backbone.model_kwargs.embed_dim=48", "model.backbone.model_kwargs.depth=2",
            "model.backbone.model_kwargs.num_heads=2", "model.backbone.out_indices=[0,1]",
            "model.decoder.width=16", "dataloader.test.num_workers=0",
            "model.dataset_name=coco_2017_val_panoptic"]
    tool.main(["--dataset", "coco_2017_val_panoptic", "--model", f"tiny={ROOT / 'configs/synthetic/pe_tiny.py'},none",
               "--max-images", "2", "--output", str(tmp_path), "--opts"] + opts)
    printed = last_json(capsys)
    dicts = DatasetCatalog.get("coco_2017_val_panoptic")[:2]
    n_gt = sum(s["isthing"] and not s["iscrowd"] for d in dicts for s in d["segments_info"])
    assert printed["models"]["tiny"]["num_gt"] == n_gt == 14 + 26  # non-crowd things of 142238, 439180
    preds = json.loads((tmp_path / "tiny" / "predictions.json").read_text())["annotations"]
    assert len(preds) == 3  # the test loader runs the whole dataset; scoring uses --max-images
    assert all((tmp_path / "tiny" / "pngs" / a["file_name"]).is_file() for a in preds)
