"""pe_panoptic.studies.visualize (centroid colour map, decoded centroids, EDS map) and tools/demo.py on
images, a dataset with ground truth, a COCO panoptic JSON and a video."""
import colorsys
import dataclasses
import importlib.util
import json
import math
import pathlib

import numpy as np
import pytest
import torch
from PIL import Image

from pe_panoptic.studies.visualize import (
    HUE_RANGE,
    cells_to_image_xy,
    centroid_colors,
    eds_map,
    hsv_to_rgb,
    segment_centroid_cells,
    weights_to_rgb,
)

ROOT = pathlib.Path(__file__).resolve().parents[1]
COCO = "coco_2017_val_panoptic"
TINY = ["model.backbone.model_kwargs.embed_dim=48", "model.backbone.model_kwargs.depth=2",
        "model.backbone.model_kwargs.num_heads=2", "model.backbone.out_indices=[0,1]",
        "model.decoder.width=16"]


@pytest.fixture(scope="module")
def demo():
    spec = importlib.util.spec_from_file_location("demo_tool", ROOT / "tools" / "demo.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def run_demo(demo, capsys, args):
    res = demo.main(["--config-file", str(ROOT / "configs/synthetic/pe_tiny.py"), "--device", "cpu"] + args
                    + ["--opts"] + TINY)
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed == json.loads(json.dumps(res))
    return printed


# ----------------------------------------------------------------------------- pure functions
def test_hsv_to_rgb_matches_colorsys():
    g = torch.Generator().manual_seed(0)
    h, s, v = torch.rand(3, 50, generator=g, dtype=torch.float64)
    ours = hsv_to_rgb(h, s, v)
    ref = torch.tensor([colorsys.hsv_to_rgb(*x) for x in zip(h.tolist(), s.tolist(), v.tolist())], dtype=torch.float64)
    torch.testing.assert_close(ours, ref, atol=1e-12, rtol=0)


def test_centroid_colors_hand_values():
    grid = (2, 4)  # gh, gw
    code = torch.tensor([[-1, 0], [3, 1 * 4 + 2]])
    got = centroid_colors(code, grid)
    assert got.dtype == torch.uint8 and got.shape == (2, 2, 3)
    assert got[0, 0].tolist() == [0, 0, 0]  # void
    for (r, c), (iv, iu) in {(0, 1): (0, 0), (1, 0): (0, 3), (1, 1): (1, 2)}.items():
        rgb = colorsys.hsv_to_rgb(HUE_RANGE * (iu + 0.5) / 4, 1.0, 0.35 + 0.65 * (iv + 0.5) / 2)
        assert got[r, c].tolist() == [round(255 * x) for x in rgb]


def test_segment_centroid_cells_mode_per_thing():
    seg = torch.tensor([[1, 1, 1, 2],
                        [1, 1, 2, 2],
                        [3, 3, 4, 4],
                        [3, 3, 4, 0]])
    code = torch.tensor([[5, 5, 7, 9],
                         [5, -1, 9, 9],
                         [1, 1, -1, -1],
                         [2, 2, -1, 3]])
    info = [{"id": 1, "isthing": True}, {"id": 2, "isthing": True}, {"id": 3, "isthing": False},
            {"id": 4, "isthing": True}, {"id": 6, "isthing": True, "iscrowd": 1}]
    ids, cells = segment_centroid_cells(seg, code, info)
    # 1: cells 5,5,7,5 (one void) -> 5; 2: 9,9,9 -> 9; 3 is stuff; 4 has only void codes
    assert ids.tolist() == [1, 2] and cells.tolist() == [5, 9]
    ids, cells = segment_centroid_cells(seg, code, [{"id": 3, "isthing": False}])
    assert ids.numel() == 0 and cells.numel() == 0


def test_cells_to_image_xy_hand_values():
    # grid 4 x 8; input 28 x 56 (padded), resized image 28 x 42 in it, original 56 x 84
    xy = cells_to_image_xy(torch.tensor([0 * 8 + 7, 3 * 8 + 0]), (4, 8), (28, 56), (28, 42), (56, 84))
    # x = (x_in + 0.5) * 84 / 42 - 0.5, y = (y_in + 0.5) * 56 / 28 - 0.5 with
    # cell (iv 0, iu 7): u = 0.875 -> x_in = 0.9375 * 56 - 0.5 = 52.0 -> x = 104.5
    #                    v = -0.75 -> y_in = 0.125 * 28 - 0.5 = 3.0  -> y = 6.5
    # cell (iv 3, iu 0): u = -0.875 -> x_in = 3.0 -> x = 6.5; v = 0.75 -> y_in = 24.0 -> y = 48.5
    torch.testing.assert_close(xy, torch.tensor([[104.5, 6.5], [6.5, 48.5]]))


def test_eds_map_hand_values():
    pan = np.array([[1, 1, 0, 0, 2]])
    segs = [{"id": 1, "category_id": 0, "isthing": True}, {"id": 2, "category_id": 0, "isthing": True, "iscrowd": 1}]
    # boundaries at columns 1|2 and 3|4; distances [1, 0, 0, 0, 0]; the crowd pixel weighs 0
    np.testing.assert_allclose(eds_map(pan, segs, D=2.0), [[math.exp(-0.25), 1, 1, 1, 0]], rtol=1e-6)
    np.testing.assert_allclose(eds_map(pan, segs, D=2.0, w_min=0.5), [[0.5 + 0.5 * math.exp(-0.25), 1, 1, 1, 0]],
                               rtol=1e-6)
    rgb = weights_to_rgb(np.array([[0.0, 1.0]]))
    assert rgb.shape == (1, 2, 3) and rgb.dtype == np.uint8 and rgb[0, 0].sum() < 10 and rgb[0, 1].sum() > 400


def test_oracle_embedding_decodes_to_gt_centroids(d2_datasets):
    """Perfect PE outputs of a COCO image: the decoded centroid of every instance (the dots of
    <name>_centroids.png) lies within one grid cell of its true center of mass."""
    from detectron2.data import DatasetCatalog

    from pe_panoptic.data.mapper import PanopticCentroidDatasetMapper, PanopticTargets, build_test_augmentations, read_panoptic_ids
    from pe_panoptic.encoding import PositionalEncoding
    from pe_panoptic.postprocess import decode_cells
    from pe_panoptic.data.targets import instance_centroids
    from pe_panoptic.studies.visualize import resize_labels

    d = DatasetCatalog.get(COCO)[0]
    mapped = PanopticCentroidDatasetMapper(False, augmentations=build_test_augmentations(840), with_targets=True,
                                           panoptic=PanopticTargets(dataset_name=COCO))(d)
    t, enc, grid = mapped["targets"], PositionalEncoding(4), (80, 80)
    inst = enc.targets(t["inst_uv"][None], t["inst_valid"][None])[0]
    H, W = mapped["height"], mapped["width"]
    (hu, wu), (Hin, Win) = mapped["image_size_unpadded"], tuple(mapped["image"].shape[-2:])
    ch, cw = round(hu * inst.shape[1] / Hin), round(wu * inst.shape[2] / Win)
    code = resize_labels(decode_cells(inst[:, :ch, :cw], enc, grid)[0], (H, W))
    pan = torch.from_numpy(read_panoptic_ids(d["pan_seg_file_name"]))
    ids, cells = segment_centroid_cells(pan, code, d["segments_info"])
    assert len(ids) == 14  # the non-crowd things
    xy = cells_to_image_xy(cells, grid, (Hin, Win), (hu, wu), (H, W)).numpy()
    err = np.abs(xy - instance_centroids(pan.numpy(), ids.numpy()))
    cell = np.array([Win / grid[1] * W / wu, Hin / grid[0] * H / hu])  # cell size in image pixels
    assert (err <= cell).all(), (err.max(0), cell)
    # the colour map: black on (almost all) stuff pixels, coloured on instances (resampling to the
    # output resolution and back moves boundaries by about a pixel)
    black = centroid_colors(code, grid).sum(-1).eq(0)
    stuff = torch.isin(pan, torch.tensor([s["id"] for s in d["segments_info"] if not s["isthing"]]))
    assert black[stuff].float().mean() > 0.97 and (~black)[pan == int(ids[0])].float().mean() > 0.97


# ----------------------------------------------------------------------------- the tool
def test_demo_on_dataset_and_images(demo, d2_datasets, tmp_path, capsys):
    img = d2_datasets / "coco" / "val2017" / "000000039769.jpg"
    out = tmp_path / "vis"
    printed = run_demo(demo, capsys, ["--dataset", COCO, "--max-inputs", "1", "--output", str(out)])
    assert [r["name"] for r in printed["images"]] == ["000000142238"] and printed["device"] == "cpu"
    assert printed["images"][0]["eds_source"] == "ground truth"
    files = printed["images"][0]["files"]
    assert files["eds"] == str(out / "000000142238_eds.png")
    with Image.open(files["panoptic"]) as im:
        assert im.size == (640, 427)
    for kind in ("centroids", "eds"):
        with Image.open(files[kind]) as im:  # image + caption banner
            assert im.size[0] == 640 and im.size[1] > 427
    # an image without ground truth: EDS from the prediction; the same image with --gt-json
    printed = run_demo(demo, capsys, ["--input", str(img), "--output", str(out)])
    assert printed["images"][0]["eds_source"].startswith("prediction")
    ann = d2_datasets / "coco" / "annotations"
    printed = run_demo(demo, capsys, ["--input", str(img.parent), "--gt-json", str(ann / "panoptic_val2017.json"),
                                      "--gt-root", str(img.parent.parent / "panoptic_val2017"), "--max-inputs", "1",
                                      "--output", str(tmp_path / "vis_gt")])  # `out` holds this image's outputs
    assert [r["name"] for r in printed["images"]] == ["000000039769"]  # folder, sorted
    assert printed["images"][0]["eds_source"] == "ground truth"
    with pytest.raises(FileNotFoundError, match="no such file"):
        run_demo(demo, capsys, ["--input", str(tmp_path / "missing*.jpg"), "--output", str(out)])


def test_demo_on_video(demo, tmp_path, capsys):
    import cv2

    src = tmp_path / "clip.mp4"
    writer = cv2.VideoWriter(str(src), cv2.VideoWriter_fourcc(*"mp4v"), 5.0, (84, 56))
    rng = np.random.default_rng(0)
    for _ in range(3):
        writer.write(rng.integers(0, 256, (56, 84, 3), dtype=np.uint8))
    writer.release()
    printed = run_demo(demo, capsys, ["--video-input", str(src), "--output", str(tmp_path / "out")])
    assert printed["video"]["frames"] == 3 and printed["video"]["fps"] == pytest.approx(5.0)
    cap = cv2.VideoCapture(printed["video"]["video"])
    frames = []
    while True:
        ok, f = cap.read()
        if not ok:
            break
        frames.append(f)
    cap.release()
    assert len(frames) == 3 and frames[0].shape == (56, 84, 3)


def test_centroid_map_follows_void_source(demo, d2_datasets):
    """The decoded-centroid map is decoded as the post-processing decodes: with the paper's
    void_source a random model's near-zero instance output is void everywhere; with "semantic"
    exactly the semantic thing pixels get a cell, so every pixel of a thing segment has one."""
    from detectron2.config import LazyConfig, instantiate

    cfg = LazyConfig.apply_overrides(LazyConfig.load(str(ROOT / "configs/synthetic/pe_tiny.py")), TINY)
    torch.manual_seed(0)
    model = instantiate(cfg.model).eval()
    image = np.random.default_rng(0).integers(0, 256, (98, 126, 3), dtype=np.uint8)
    pred = demo.DemoPredictor(cfg, model, "cpu")
    res = pred(image)
    assert res["code"].shape == (98, 126) and bool((res["code"] == -1).all())
    model.postprocess_cfg = dataclasses.replace(model.postprocess_cfg, void_source="semantic")
    res = pred(image)
    seg, info = res["panoptic_seg"]
    things = [s["id"] for s in info if s["isthing"]]
    assert things, "the random model should predict some thing pixels"
    in_thing = torch.isin(seg, torch.tensor(things))
    assert bool((res["code"][in_thing] >= 0).all())
    assert 0 < int((res["code"] >= 0).sum()) < res["code"].numel()
