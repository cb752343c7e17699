"""Depth: label files, depth targets of the mapper, NYUv2 layout / registration / conversion, and
the DepthEvaluator against hand-computed metrics."""
import importlib.util
import json
import logging
import math
import os
import pathlib
import uuid

import numpy as np
import pytest
import torch
from PIL import Image

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data import transforms as T
from panopticapi.utils import id2rgb

from pe_panoptic.data.depth_labels import (
    default_pseudo_depth_root,
    depth_targets,
    depth_to_disparity,
    find_pseudo_depth_file,
    normalize_disparity,
    read_disparity,
    read_metric_depth,
)
from pe_panoptic.data.errors import InvalidSampleError
from pe_panoptic.data.mapper import DepthTargets, PanopticCentroidDatasetMapper, PanopticTargets, build_train_augmentations
from pe_panoptic.data.nyu import load_nyuv2_depth, read_split_list, register_nyuv2_depth
from pe_panoptic.evaluation.depth import DepthEvaluator, depth_metrics, eigen_crop_mask
from pe_panoptic.data.targets import output_sample_indices

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _load_prepare():
    spec = importlib.util.spec_from_file_location("prepare_nyuv2", ROOT / "datasets" / "prepare_nyuv2.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


prepare = _load_prepare()


def _save_mm(path, depth_m):
    Image.fromarray(np.rint(np.asarray(depth_m) * 1000).astype(np.uint16)).save(path)
    return str(path)


# ----------------------------------------------------------------------------- label files
def test_read_metric_depth_png_and_npy(tmp_path):
    mm = np.array([[0, 1, 1500], [10000, 65535, 250]], np.uint16)
    Image.fromarray(mm).save(tmp_path / "d.png")
    d = read_metric_depth(str(tmp_path / "d.png"))
    assert d.dtype == np.float32 and d.shape == (2, 3)
    assert np.isnan(d[0, 0])
    np.testing.assert_allclose(d[~np.isnan(d)], [0.001, 1.5, 10.0, 65.535, 0.25], rtol=1e-6)
    np.save(tmp_path / "d.npy", np.array([[1.5, -1.0], [np.inf, 0.0]], np.float64))
    d = read_metric_depth(str(tmp_path / "d.npy"))
    assert d[0, 0] == 1.5 and np.isnan(d[0, 1]) and np.isnan(d[1, 0]) and np.isnan(d[1, 1])
    np.save(tmp_path / "d3.npy", np.full((1, 2, 3), 2.0))  # [1, H, W] is accepted
    assert read_metric_depth(str(tmp_path / "d3.npy")).shape == (2, 3)


def test_bad_depth_files(tmp_path):
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "eight.png")
    with pytest.raises(InvalidSampleError, match=r"eight.png: mode 'L', expected a single-channel 16-bit"):
        read_metric_depth(str(tmp_path / "eight.png"))
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "rgb.png")
    with pytest.raises(InvalidSampleError, match="rgb.png: mode 'RGB'"):
        read_disparity(str(tmp_path / "rgb.png"))
    with pytest.raises(FileNotFoundError, match="nope.png"):
        read_metric_depth(str(tmp_path / "nope.png"))
    (tmp_path / "bad.npy").write_bytes(b"garbage" * 20)
    with pytest.raises(InvalidSampleError, match="cannot read depth file .*bad.npy"):
        read_metric_depth(str(tmp_path / "bad.npy"))
    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"0" * 40)
    with pytest.raises(InvalidSampleError, match="cannot read depth PNG .*bad.png"):
        read_metric_depth(str(tmp_path / "bad.png"))
    np.save(tmp_path / "vol.npy", np.zeros((2, 3, 4)))
    with pytest.raises(InvalidSampleError, match=r"vol.npy: expected a 2-D \[H, W\] map, got shape \(2, 3, 4\)"):
        read_metric_depth(str(tmp_path / "vol.npy"))
    (tmp_path / "d.tif").write_bytes(b"x")
    with pytest.raises(InvalidSampleError, match="unsupported extension '.tif'"):
        read_disparity(str(tmp_path / "d.tif"))


def test_disparity_helpers_hand_values():
    np.testing.assert_allclose(
        depth_to_disparity(np.array([0.5, 2.0, 0.0, 20.0, np.nan]), 1e-3, 10.0), [2.0, 0.5, np.nan, np.nan, np.nan]
    )
    np.testing.assert_allclose(normalize_disparity(np.array([2.0, 4.0, 6.0, np.nan])), [0.0, 0.5, 1.0, np.nan])
    np.testing.assert_array_equal(normalize_disparity(np.array([3.0, 3.0])), [0.0, 0.0])
    assert np.isnan(normalize_disparity(np.array([np.nan]))).all()


def test_depth_targets_sampling_and_validity():
    # 4 x 4 map -> 2 x 2 output: samples rows/cols floor((j + 0.5) * 2) = 1, 3
    d = np.arange(16, dtype=np.float32).reshape(4, 4) * 0.5 + 0.5  # 0.5 .. 8.0
    d[1, 3] = np.nan
    t = depth_targets(d, (2, 2), "metric", 1e-3, 7.0)
    # samples: d[1,1]=3.0, d[1,3]=nan, d[3,1]=7.0 (not < max 7), d[3,3]=8.0
    np.testing.assert_array_equal(t["depth_valid"].numpy(), [[True, False], [False, False]])
    np.testing.assert_allclose(t["depth"].numpy(), [[3.0, 0.0], [0.0, 0.0]])
    t = depth_targets(d, (2, 2), "disparity")
    np.testing.assert_array_equal(t["depth_valid"].numpy(), [[True, False], [True, True]])
    np.testing.assert_allclose(t["depth"].numpy(), [[0.0, 0.0], [0.8, 1.0]])  # (x - 3) / 5
    with pytest.raises(ValueError, match="kind must be one of"):
        depth_targets(d, (2, 2), "relative")


def test_find_pseudo_depth_file(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    np.save(b / "img1.npy", np.ones((2, 2)))
    Image.fromarray(np.ones((2, 2), np.uint8)).save(b / "img2.png")
    Image.fromarray(np.ones((2, 2), np.uint8)).save(a / "img1.png")
    # first root wins; within a root .npy before .png
    assert find_pseudo_depth_file([str(a), str(b)], "/x/img1.jpg") == str(a / "img1.png")
    assert find_pseudo_depth_file([str(b), str(a)], "/x/img1.jpg") == str(b / "img1.npy")
    assert find_pseudo_depth_file(str(b), "/y/img2.jpg") == str(b / "img2.png")
    with pytest.raises(FileNotFoundError, match=r"img3.jpg not found; tried .*a/img3.npy.*a/img3.png.*b/img3.npy"):
        find_pseudo_depth_file([str(a), str(b)], "img3.jpg")
    assert default_pseudo_depth_root("coco_2017_train_panoptic").endswith(
        os.path.join("detectron2_datasets", "coco_2017_train_panoptic_depth_pseudo")
    )


# ----------------------------------------------------------------------------- mapper depth targets
def _depth_sample(tmp_path, h=28, w=42, name="n"):
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(tmp_path / f"{name}.jpg")
    yy, xx = np.mgrid[0:h, 0:w]
    depth = 1.0 + 0.1 * xx + 0.01 * yy  # distinct millimetre values
    depth[:4, :6] = 0.0  # no measurement
    return dict(file_name=str(tmp_path / f"{name}.jpg"), depth_file_name=_save_mm(tmp_path / f"{name}.png", depth),
                image_id=name), np.where(depth > 0, np.rint(depth * 1000) / 1000, np.nan)


def test_mapper_metric_depth_with_flip_and_padding(tmp_path):
    d, depth = _depth_sample(tmp_path)
    mapper = PanopticCentroidDatasetMapper(
        True, augmentations=[T.RandomFlip(prob=1.0, horizontal=True)], input_size=42, depth=DepthTargets("metric")
    )
    out = mapper(d)
    t = out["targets"]
    assert set(t) == {"depth", "depth_valid"}
    assert out["image"].shape == (3, 42, 42) and t["depth"].shape == (24, 24)
    flipped = depth[:, ::-1]
    ys, xs = output_sample_indices(42, 24), output_sample_indices(42, 24)
    exp = np.full((24, 24), np.nan)
    inside = ys < 28
    exp[inside] = flipped[ys[inside]][:, xs]
    valid = np.isfinite(exp)
    np.testing.assert_array_equal(t["depth_valid"].numpy(), valid)
    np.testing.assert_allclose(t["depth"].numpy()[valid], exp[valid], rtol=1e-6)
    assert np.all(t["depth"].numpy()[~valid] == 0)
    assert not t["depth_valid"].numpy()[inside.sum():].any()  # padding rows are invalid
    # the unmeasured block [:4, :6] is now top-right
    assert not t["depth_valid"].numpy()[0, -1] and t["depth_valid"].numpy()[0, 0]


def test_mapper_disparity_pseudo_label_then_gt_fallback(tmp_path):
    d, depth = _depth_sample(tmp_path)
    pseudo = tmp_path / "pseudo"
    pseudo.mkdir()
    disp = np.linspace(0, 1, 28 * 42, dtype=np.float32).reshape(28, 42) * 7 + 3
    disp[0, 0] = np.nan
    np.save(pseudo / "n.npy", disp)
    mapper = PanopticCentroidDatasetMapper(True, augmentations=[],
                                           depth=DepthTargets("disparity", root=pseudo))  # a PathLike works too
    t = mapper(d)["targets"]
    ys, xs = output_sample_indices(28, 16), output_sample_indices(42, 24)
    s = disp[ys][:, xs]
    exp = (s - np.nanmin(s)) / (np.nanmax(s) - np.nanmin(s))
    assert t["depth"].shape == (16, 24)
    np.testing.assert_array_equal(t["depth_valid"].numpy(), np.isfinite(exp))
    np.testing.assert_allclose(t["depth"].numpy()[np.isfinite(exp)], exp[np.isfinite(exp)], atol=1e-6)
    assert t["depth"].max() == 1.0 and t["depth"][t["depth_valid"]].min() == 0.0
    # no pseudo-label: 1 / depth of the ground truth, normalized
    os.remove(pseudo / "n.npy")
    t = mapper(d)["targets"]
    inv = 1.0 / depth[ys][:, xs]
    exp = (inv - np.nanmin(inv)) / (np.nanmax(inv) - np.nanmin(inv))
    np.testing.assert_array_equal(t["depth_valid"].numpy(), np.isfinite(exp))
    np.testing.assert_allclose(t["depth"].numpy()[np.isfinite(exp)], exp[np.isfinite(exp)], atol=1e-5)
    # neither: the error lists the files tried
    del d["depth_file_name"]
    with pytest.raises(FileNotFoundError, match=r"pseudo depth label of image .*n.jpg not found; tried .*n.npy"):
        mapper(d)


def test_coco_depth_follows_panoptic_augmentation(d2_datasets, tmp_path):
    """The pseudo-label of each COCO image is its own class map: after random scale jitter, crop
    and flip, the depth target must equal the (normalized) semantic target pixel for pixel."""
    coco = DatasetCatalog.get("coco_2017_val_panoptic")
    from pe_panoptic.evaluation.semseg import semantic_from_panoptic

    for d in coco:
        sem = semantic_from_panoptic(d["pan_seg_file_name"], d["segments_info"]).astype(np.float32)
        sem[sem == 255] = np.nan
        np.save(tmp_path / (pathlib.Path(d["file_name"]).stem + ".npy"), sem)
    mapper = PanopticCentroidDatasetMapper(
        True, augmentations=build_train_augmentations(280, 0.3, 2.0), input_size=280,
        panoptic=PanopticTargets(dataset_name="coco_2017_val_panoptic"),
        depth=DepthTargets("disparity", root=str(tmp_path)),
    )
    np.random.seed(7)
    for d in coco:
        t = mapper(d)["targets"]
        assert t["depth"].shape == t["sem_seg"].shape == (160, 160)
        labeled = t["sem_seg"] != 255
        np.testing.assert_array_equal(t["depth_valid"].numpy(), labeled.numpy())
        cls = t["sem_seg"][labeled].double()
        lo, hi = cls.min(), cls.max()
        exp = (cls - lo) / (hi - lo) if hi > lo else torch.zeros_like(cls)
        np.testing.assert_allclose(t["depth"][labeled].double().numpy(), exp.numpy(), atol=1e-6)


def test_mapper_depth_errors(tmp_path):
    d, _ = _depth_sample(tmp_path)
    with pytest.raises(ValueError, match="panoptic=None and depth=None builds no targets"):
        PanopticCentroidDatasetMapper(True, augmentations=[])
    with pytest.raises(ValueError, match="kind must be one of"):
        DepthTargets("relative")
    # the former string / bool settings are refused with the builder to use instead
    with pytest.raises(TypeError, match=r"depth must be None or a target builder such as DepthTargets\('metric'\)"):
        PanopticCentroidDatasetMapper(True, augmentations=[], depth="metric")
    with pytest.raises(TypeError, match="panoptic must be None or a target builder such as PanopticTargets"):
        PanopticCentroidDatasetMapper(True, augmentations=[], panoptic="auto")
    mapper = PanopticCentroidDatasetMapper(True, augmentations=[], depth=DepthTargets("metric"))
    with pytest.raises(InvalidSampleError, match="n.jpg: depth='metric' needs 'depth_file_name'"):
        mapper({k: v for k, v in d.items() if k != "depth_file_name"})
    _save_mm(tmp_path / "small.png", np.ones((27, 42)))
    with pytest.raises(InvalidSampleError, match=r"depth label of .*n.jpg is 42x27 .* image is 42x28"):
        mapper(dict(d, depth_file_name=str(tmp_path / "small.png")))
    # skip_invalid counts the sample and names it
    skipping = PanopticCentroidDatasetMapper(True, augmentations=[], depth=DepthTargets("metric"), skip_invalid=True)
    assert skipping(dict(d, depth_file_name=str(tmp_path / "missing.png"))) is None
    assert skipping.num_skipped == 1 and skipping.skipped_files == [d["file_name"]]


def test_panoptic_auto_mixes_panoptic_and_depth_only_dicts(tmp_path):
    d, _ = _depth_sample(tmp_path)
    pan = np.zeros((28, 42), np.int64)
    pan[5:15, 5:20] = 300
    Image.fromarray(id2rgb(pan)).save(tmp_path / "pan.png")
    pd = dict(d, pan_seg_file_name=str(tmp_path / "pan.png"),
              segments_info=[dict(id=300, category_id=1, iscrowd=0, isthing=True)])
    mapper = PanopticCentroidDatasetMapper(True, augmentations=[], panoptic=PanopticTargets(optional=True),
                                           depth=DepthTargets("metric"))
    assert set(mapper(pd)["targets"]) == {"sem_seg", "inst_uv", "inst_valid", "inst_ids", "inst_weight",
                                          "sem_weight", "depth", "depth_valid"}
    assert set(mapper(d)["targets"]) == {"depth", "depth_valid"}


# ----------------------------------------------------------------------------- NYUv2 layout
def _mat_layout(rgbs, depths):
    """Arrays as h5py sees nyu_depth_v2_labeled.mat: images [N, 3, W, H], depths [N, W, H]."""
    return np.stack([r.transpose(2, 1, 0) for r in rgbs]), np.stack([d.T for d in depths])


def _nyu_arrays(n=5, h=24, w=32):
    rng = np.random.default_rng(3)
    yy, xx = np.mgrid[0:h, 0:w]
    # smooth images (JPEG keeps them within a few grey levels); depths < 9 m so 1.1 x stays < 10 m
    rgbs = [np.stack([xx * 4 + 10 * i, yy * 5 + 20, xx + yy + 60], -1).astype(np.uint8) for i in range(n)]
    depths = [rng.uniform(0.5, 9.0, (h, w)).astype(np.float32) for _ in range(n)]
    depths[0][0, :5] = 0.0
    return rgbs, depths


def test_labeled_samples_undo_the_matlab_transpose():
    rgbs, depths = _nyu_arrays(2)
    images, dmaps = _mat_layout(rgbs, depths)
    assert images.shape == (2, 3, 32, 24) and dmaps.shape == (2, 32, 24)
    samples = prepare.LabeledSamples(images, dmaps)
    assert len(samples) == 2
    rgb, depth = samples[1]
    np.testing.assert_array_equal(rgb, rgbs[1])
    np.testing.assert_array_equal(depth, depths[1])
    with pytest.raises(ValueError, match=r"images must be \[N, 3, W, H\]"):
        prepare.LabeledSamples(np.zeros((2, 24, 32, 3)), dmaps)
    with pytest.raises(ValueError, match="depths must be"):
        prepare.LabeledSamples(images, dmaps[:, :, :20])


def test_read_split_indices_from_splits_mat(tmp_path):
    from scipy.io import savemat

    savemat(tmp_path / "splits.mat", {"testNdxs": np.array([[2], [5]], np.float64),
                                      "trainNdxs": np.array([[1], [3], [4]], np.float64)})
    np.testing.assert_array_equal(prepare.read_split_indices(str(tmp_path / "splits.mat")), [1, 4])
    np.testing.assert_array_equal(prepare.read_split_indices(str(tmp_path / "splits.mat"), "trainNdxs"), [0, 2, 3])
    savemat(tmp_path / "zero.mat", {"testNdxs": np.array([[0], [1]])})
    with pytest.raises(ValueError, match="1-based"):
        prepare.read_split_indices(str(tmp_path / "zero.mat"))
    with pytest.raises(ValueError, match="no variable 'testNdxs'"):
        savemat(tmp_path / "other.mat", {"x": np.ones(2)})
        prepare.read_split_indices(str(tmp_path / "other.mat"))


def test_depth_to_png_array():
    np.testing.assert_array_equal(
        prepare.depth_to_png_array(np.array([0.0, 1.2344, 1.2346, -1.0, np.nan, 65.535, 70.0])),
        [0, 1234, 1235, 0, 0, 65535, 0],
    )


@pytest.fixture()
def nyu_root(tmp_path):
    rgbs, depths = _nyu_arrays(5)
    root = tmp_path / "nyuv2"
    counts = prepare.convert_labeled(prepare.LabeledSamples(*_mat_layout(rgbs, depths)), [1, 3], str(root),
                                     progress=False)
    assert counts == {"train": 3, "test": 2}
    return root, rgbs, depths


@pytest.fixture()
def nyu_test_name(nyu_root):
    name = f"nyuv2_depth_test_{uuid.uuid4().hex[:8]}"
    register_nyuv2_depth(name, str(nyu_root[0]), "test")
    yield name
    DatasetCatalog.remove(name)
    MetadataCatalog.remove(name)


def test_convert_labeled_layout_and_loader(nyu_root):
    root, rgbs, depths = nyu_root
    assert (root / "splits" / "test.txt").read_text() == "00002\n00004\n"
    assert (root / "splits" / "train.txt").read_text() == "00001\n00003\n00005\n"
    dicts = load_nyuv2_depth(str(root), "test")
    assert [x["image_id"] for x in dicts] == ["00002", "00004"]
    assert dicts[0]["file_name"] == str(root / "test" / "rgb" / "00002.jpg")
    assert dicts[0]["depth_file_name"] == str(root / "test" / "depth" / "00002.png")
    rgb = np.asarray(Image.open(dicts[1]["file_name"]))
    assert rgb.shape == (24, 32, 3) and np.abs(rgb.astype(int) - rgbs[3]).mean() < 4  # JPEG
    np.testing.assert_allclose(read_metric_depth(dicts[1]["depth_file_name"]), np.rint(depths[3] * 1000) / 1000,
                               atol=1e-6)
    d0 = read_metric_depth(str(root / "train" / "depth" / "00001.png"))
    assert np.isnan(d0[0, :5]).all() and np.isfinite(d0[1]).all()


def test_split_list_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="NYUv2 split list not found: .*train.txt.*prepare_nyuv2.py"):
        load_nyuv2_depth(str(tmp_path), "train")
    (tmp_path / "l.txt").write_text("# comment\na\n\nb\na\n")
    with pytest.raises(ValueError, match=r"l.txt:5: duplicate stem 'a'"):
        read_split_list(str(tmp_path / "l.txt"))
    (tmp_path / "l.txt").write_text("a\nscene/b\n")
    with pytest.raises(ValueError, match=r"l.txt:2: 'scene/b' is not a plain file stem"):
        read_split_list(str(tmp_path / "l.txt"))
    (tmp_path / "splits").mkdir()
    (tmp_path / "splits" / "test.txt").write_text("x\n")
    with pytest.raises(FileNotFoundError, match=r"test/rgb/x.jpg listed in splits/test.txt does not exist"):
        load_nyuv2_depth(str(tmp_path), "test")


def test_import_list(tmp_path):
    src = tmp_path / "sync"
    (src / "bedroom_0001").mkdir(parents=True)
    rgb = np.full((6, 8, 3), 100, np.uint8)
    Image.fromarray(rgb).save(src / "bedroom_0001" / "rgb_00007.jpg")
    Image.fromarray(rgb).save(src / "bedroom_0001" / "rgb_00008.png")
    mm = np.arange(48, dtype=np.uint16).reshape(6, 8) * 100
    Image.fromarray(mm).save(src / "bedroom_0001" / "sync_depth_00007.png")
    Image.fromarray(mm).save(src / "bedroom_0001" / "sync_depth_00008.png")
    lst = tmp_path / "train.txt"
    lst.write_text("/bedroom_0001/rgb_00007.jpg /bedroom_0001/sync_depth_00007.png 518.8579\n"
                   "bedroom_0001/rgb_00008.png bedroom_0001/sync_depth_00008.png\n")
    out = tmp_path / "nyuv2"
    assert prepare.import_list(str(lst), str(src), str(out), progress=False) == 2
    assert read_split_list(str(out / "splits" / "train.txt")) == ["bedroom_0001__rgb_00007", "bedroom_0001__rgb_00008"]
    assert (out / "train" / "rgb" / "bedroom_0001__rgb_00007.jpg").read_bytes() == \
        (src / "bedroom_0001" / "rgb_00007.jpg").read_bytes()
    np.testing.assert_array_equal(np.asarray(Image.open(out / "train" / "depth" / "bedroom_0001__rgb_00008.png")), mm)
    assert len(load_nyuv2_depth(str(out), "train")) == 2
    lst.write_text("bedroom_0001/rgb_00009.jpg bedroom_0001/sync_depth_00009.png\n")
    with pytest.raises(FileNotFoundError, match=r"train.txt:1: .*rgb_00009.jpg not found"):
        prepare.import_list(str(lst), str(src), str(out), progress=False)


def test_prepare_cli_requires_arguments():
    with pytest.raises(SystemExit):
        prepare.parse_args([])
    with pytest.raises(SystemExit):
        prepare.parse_args(["--mat", "x.mat"])  # no --splits


# ----------------------------------------------------------------------------- evaluator
def test_depth_metrics_hand_computed():
    gt = torch.tensor([[1.0, 2.0], [4.0, 1.0]])
    pred = torch.tensor([[1.25, 2.0], [2.0, 7.0]])
    valid = torch.tensor([[True, True], [True, False]])
    m = depth_metrics(pred, gt, valid)
    assert m["AbsRel"] == pytest.approx((0.25 + 0 + 0.5) / 3)
    assert m["SqRel"] == pytest.approx((0.0625 + 0 + 1.0) / 3)
    assert m["RMSE"] == pytest.approx(math.sqrt((0.0625 + 0 + 4) / 3))
    assert m["log10"] == pytest.approx((math.log10(1.25) + math.log10(2)) / 3)
    e = [math.log(1.25), 0.0, math.log(0.5)]
    assert m["RMSE_log"] == pytest.approx(math.sqrt(sum(x * x for x in e) / 3))
    assert m["SILog"] == pytest.approx(100 * math.sqrt(sum(x * x for x in e) / 3 - (sum(e) / 3) ** 2))
    # ratios 1.25, 1, 2: 1.25 is not < 1.25; 2 is not < 1.25^3 = 1.953
    assert (m["delta1"], m["delta2"], m["delta3"]) == pytest.approx((1 / 3, 2 / 3, 2 / 3))


def test_eigen_crop_mask():
    m = eigen_crop_mask(480, 640)
    assert int(m.sum()) == 426 * 560 and m[45, 41] and not m[44, 41] and not m[45, 40] and m[470, 600]
    assert not m[471, 600] and not m[470, 601]
    m = eigen_crop_mask(240, 320)  # scaled: rows round(22.5)=22 .. round(235.5)=236, cols 20.5->20 .. 300.5->300
    assert int(m.sum()) == (236 - 22) * (300 - 20)


def test_depth_evaluator_hand_computed(nyu_test_name, tmp_path):
    ev = DepthEvaluator(nyu_test_name, eigen_crop=False)
    gt_a = _save_mm(tmp_path / "a.png", np.array([[1.0, 2.0], [4.0, 0.0]]))
    gt_b = _save_mm(tmp_path / "b.png", np.array([[2.0, 2.0], [2.0, 12.0]]))
    ev.reset()
    ev.process(
        [{"file_name": "a.jpg", "depth_file_name": gt_a}, {"file_name": "b.jpg", "depth_file_name": gt_b}],
        [{"depth": torch.tensor([[1.25, 2.0], [2.0, 5.0]])},
         # NaN -> min_depth is not counted (gt 2 m): use finite values; 20 m clipped to 10 is on an invalid gt
         {"depth": torch.tensor([[1.0, 2.0], [2.0, 20.0]])}],
    )
    r = ev.evaluate()["depth"]
    rmse_a, rmse_b = math.sqrt((0.0625 + 4) / 3), math.sqrt(1 / 3)
    assert r["num_images"] == 2 and r["num_skipped"] == 0
    assert r["AbsRel"] == pytest.approx((0.25 + 1 / 6) / 2)
    assert r["RMSE"] == pytest.approx((rmse_a + rmse_b) / 2)  # per image, then averaged
    assert r["log10"] == pytest.approx(((math.log10(1.25) + math.log10(2)) / 3 + math.log10(2) / 3) / 2)
    assert (r["delta1"], r["delta2"], r["delta3"]) == pytest.approx((0.5, 2 / 3, 2 / 3))


def test_depth_evaluator_clips_predictions_and_skips_empty(nyu_test_name, tmp_path, caplog):
    ev = DepthEvaluator(nyu_test_name, eigen_crop=False)
    gt = _save_mm(tmp_path / "g.png", np.array([[5.0, 5.0]]))
    empty = _save_mm(tmp_path / "e.png", np.array([[0.0, 11.0]]))
    ev.reset()
    with caplog.at_level(logging.WARNING):
        ev.process([{"file_name": "g", "depth_file_name": gt}, {"file_name": "e", "depth_file_name": empty}],
                   [{"depth": torch.tensor([[float("inf"), float("nan")]])}, {"depth": torch.ones(1, 2)}])
    r = ev.evaluate()["depth"]
    # inf -> 10, nan -> 0.001: AbsRel = (5/5 + 4.999/5) / 2
    assert r["AbsRel"] == pytest.approx((1.0 + 4.999 / 5) / 2)
    assert r["num_images"] == 1 and r["num_skipped"] == 1 and "e.png has no valid depth pixel" in caplog.text
    with pytest.raises(ValueError, match=r"prediction \(3, 2\) .* differ in size"):
        ev.process([{"file_name": "g", "depth_file_name": gt}], [{"depth": torch.ones(3, 2)}])
    with pytest.raises(KeyError, match="has no 'depth'"):
        ev.process([{"file_name": "g", "depth_file_name": gt}], [{"sem_seg": torch.ones(3, 2)}])


def test_depth_evaluator_eigen_crop_from_metadata(nyu_test_name, tmp_path):
    assert MetadataCatalog.get(nyu_test_name).evaluator_type == "depth"
    gt = np.full((480, 640), 2.0)
    pred = torch.full((480, 640), 2.0)
    pred[:45] = 4.0  # outside the crop: ignored
    pred[100, 100] = 3.0  # one wrong pixel inside
    ev = DepthEvaluator(nyu_test_name)  # eigen_crop=True from the test split's metadata
    ev.reset()
    ev.process([{"file_name": "x", "depth_file_name": _save_mm(tmp_path / "x.png", gt)}], [{"depth": pred}])
    r = ev.evaluate()["depth"]
    n = 426 * 560
    assert r["AbsRel"] == pytest.approx(0.5 / n) and r["RMSE"] == pytest.approx(math.sqrt(1.0 / n))
    assert r["delta1"] == pytest.approx(1 - 1 / n)


def test_nyu_config_loader_and_evaluator_end_to_end(nyu_root, nyu_test_name):
    """configs/common/data/nyu_depth.py: the train loader yields depth targets, and the test loader +
    build_evaluators + inference_on_dataset give the hand-computed metrics of a model that
    predicts 1.1 x the ground truth."""
    from detectron2.config import LazyConfig, instantiate
    from detectron2.evaluation import inference_on_dataset

    root, _, depths = nyu_root
    train_name = f"nyuv2_depth_train_{uuid.uuid4().hex[:8]}"
    register_nyuv2_depth(train_name, str(root), "train")
    try:
        cfg = LazyConfig.load(str(ROOT / "configs" / "common" / "data" / "nyu_depth.py"))
        cfg.dataloader.train.dataset.names = train_name
        cfg.dataloader.train.mapper.depth.dataset_name = train_name
        cfg.dataloader.train.total_batch_size = 2
        cfg.dataloader.train.num_workers = 0
        cfg.dataloader.test.dataset.names = nyu_test_name
        cfg.dataloader.test.num_workers = 0
        cfg.dataloader.evaluator.dataset_name = nyu_test_name
        cfg.dataloader.evaluator.output_dir = None
        batch = next(iter(instantiate(cfg.dataloader.train)))
        assert len(batch) == 2
        for x in batch:
            assert x["image"].shape == (3, 518, 518) and set(x["targets"]) == {"depth", "depth_valid"}
            assert x["targets"]["depth"].shape == (296, 296)
            v = x["targets"]["depth_valid"]
            # 24 x 32 -> ~388 x 518 (+ padding): output rows from 222 on sample input rows >= 389
            assert v[:220].float().mean() > 0.99 and not v[222:].any()
            assert float(x["targets"]["depth"][v].min()) > 0.49 and float(x["targets"]["depth"][v].max()) < 9.01

        class FakeDepthModel(torch.nn.Module):
            def forward(self, inputs):
                outs = []
                for x in inputs:
                    assert x["image"].shape[1:] == (392, 518) and (x["height"], x["width"]) == (24, 32)
                    gt = torch.from_numpy(read_metric_depth(x["depth_file_name"]))
                    outs.append({"depth": torch.nan_to_num(gt, nan=1.0) * 1.1})
                return outs

        evaluator = instantiate(cfg.dataloader.evaluator)
        assert [type(e).__name__ for e in evaluator._evaluators] == ["DepthEvaluator"]
        res = inference_on_dataset(FakeDepthModel(), instantiate(cfg.dataloader.test), evaluator)["depth"]
        # eigen crop of 24 x 32: rows 2..23 (round(2.25)=2, round(23.55)=24), cols 2..30
        crop = eigen_crop_mask(24, 32).numpy()
        exp_rmse = np.mean([math.sqrt(np.mean((0.1 * (np.rint(depths[i] * 1000) / 1000)[crop]) ** 2)) for i in (1, 3)])
        assert res["num_images"] == 2
        assert res["AbsRel"] == pytest.approx(0.1, rel=1e-5) and res["delta1"] == 1.0
        assert res["RMSE"] == pytest.approx(exp_rmse, rel=1e-5)
        assert res["log10"] == pytest.approx(math.log10(1.1), rel=1e-5)
    finally:
        DatasetCatalog.remove(train_name)
        MetadataCatalog.remove(train_name)
