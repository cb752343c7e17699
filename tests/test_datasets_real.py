"""Real datasets through the data configs and detectron2's loaders: COCO panoptic classes against the
raw panopticapi JSON, the COCO / Cityscapes data configs end to end, and the bad-input cases that
tests/test_mapper.py does not cover (image without segments, EXIF-rotated JPEG with its PNG,
skip_invalid through a real detectron2 data loader)."""
import json
import logging
import pathlib

import numpy as np
import pytest
import torch
from PIL import Image

from detectron2.config import LazyConfig, instantiate
from detectron2.data import DatasetCatalog, MetadataCatalog, build_detection_train_loader
from detectron2.data.common import DatasetFromList, ToIterableDataset
from detectron2.data.samplers import TrainingSampler
from panopticapi.utils import id2rgb, rgb2id

from pe_panoptic.data.errors import InvalidSampleError
from pe_panoptic.data.mapper import PanopticCentroidDatasetMapper, PanopticTargets
from pe_panoptic.evaluation.build import build_evaluators
from pe_panoptic.data.targets import output_sample_indices

ROOT = pathlib.Path(__file__).resolve().parents[1]
DATA_CONFIGS = ROOT / "configs" / "common" / "data"


def _sampled_ids(png_path, Hp, Wp, h, w):
    pan = rgb2id(np.asarray(Image.open(png_path).convert("RGB"))).astype(np.int64)
    ys, xs = output_sample_indices(Hp, h), output_sample_indices(Wp, w)
    inside = (ys < pan.shape[0])[:, None] & (xs < pan.shape[1])[None, :]
    ids = pan[np.minimum(ys, pan.shape[0] - 1)][:, np.minimum(xs, pan.shape[1] - 1)]
    ids[~inside] = 0
    return ids


# ----------------------------------------------------------------------------- COCO
def test_coco_133_contiguous_classes_match_raw_json(testdata, d2_datasets):
    """Contiguous class of every output pixel = index (in detectron2's metadata) of the category
    name that the raw panopticapi JSON gives the pixel's segment; void / unknown = 255."""
    meta = MetadataCatalog.get("coco_2017_val_panoptic")
    assert len(meta.stuff_classes) == 133 and len(meta.thing_dataset_id_to_contiguous_id) == 80
    raw = json.loads((testdata / "detectron2_datasets/coco/annotations/panoptic_val2017.json").read_text())
    name_of = {c["id"]: c["name"] for c in raw["categories"]}
    raw_ann = {a["file_name"]: a for a in raw["annotations"]}
    mapper = PanopticCentroidDatasetMapper(False, augmentations=[], with_targets=True,
                                           panoptic=PanopticTargets(dataset_name="coco_2017_val_panoptic"))
    assert mapper.panoptic.num_classes == 133
    seen = set()
    for d in DatasetCatalog.get("coco_2017_val_panoptic"):
        out = mapper(d)
        t = out["targets"]
        ann = raw_ann[pathlib.Path(d["pan_seg_file_name"]).name]
        lut = {s["id"]: meta.stuff_classes.index(name_of[s["category_id"]]) for s in ann["segments_info"]}
        ids = _sampled_ids(d["pan_seg_file_name"], *out["image"].shape[1:], *t["sem_seg"].shape)
        exp = np.vectorize(lambda i: lut.get(int(i), 255))(ids)
        np.testing.assert_array_equal(t["sem_seg"].numpy(), exp)
        # things: raw isthing of the category; instance pixels are exactly the non-crowd things
        isthing = {c["id"]: c["isthing"] for c in raw["categories"]}
        inst = np.vectorize(lambda i: any(s["id"] == i and isthing[s["category_id"]] and not s["iscrowd"]
                                          for s in ann["segments_info"]))(ids)
        np.testing.assert_array_equal(t["inst_valid"].numpy(), inst)
        seen |= set(np.unique(exp).tolist())
    assert len(seen - {255}) >= 10  # several stuff and thing classes are exercised


def _small_loader_cfg(name, train_names, test_names, batch):
    cfg = LazyConfig.load(str(DATA_CONFIGS / name))
    cfg.dataloader.train.dataset.names = train_names
    cfg.dataloader.train.mapper.panoptic.dataset_name = train_names
    cfg.dataloader.train.total_batch_size = batch
    cfg.dataloader.train.num_workers = 0
    cfg.dataloader.test.num_workers = 0
    assert cfg.dataloader.test.dataset.names == test_names
    return cfg


def test_coco_data_config_end_to_end(d2_datasets, tmp_path, caplog):
    cfg = _small_loader_cfg("coco_panoptic.py", "coco_2017_val_panoptic", "coco_2017_val_panoptic", 3)
    np.random.seed(0)
    batch = next(iter(instantiate(cfg.dataloader.train)))
    assert len(batch) == 3
    for x in batch:
        t = x["targets"]
        assert x["image"].shape == (3, 336, 336) and t["sem_seg"].shape == (192, 192)
        assert set(t) == {"sem_seg", "inst_uv", "inst_valid", "inst_ids", "inst_weight", "sem_weight"}
        assert int(t["sem_seg"][t["sem_seg"] != 255].max()) < 133
    (x,) = next(iter(instantiate(cfg.dataloader.test)))
    assert "targets" not in x and max(x["image"].shape[1:]) == 336 and x["image"].shape[1] % 14 == 0
    cfg.dataloader.evaluator.output_dir = str(tmp_path)
    evs = instantiate(cfg.dataloader.evaluator)._evaluators
    assert [type(e).__name__ for e in evs] == ["PanopticEvaluator", "PanopticSemSegEvaluator"]
    with caplog.at_level(logging.WARNING, logger="pe_panoptic.engine.trainer"):
        evs = build_evaluators("coco_2017_val_panoptic", str(tmp_path), with_depth=True)._evaluators
    assert len(evs) == 2 and "has no metric depth ground truth" in caplog.text


# ----------------------------------------------------------------------------- Cityscapes
def test_cityscapes_data_config_end_to_end(d2_datasets):
    """Builtin Cityscapes dicts (no `isthing`) through the config's train loader (784 x 1568
    crops) and test loader (resized to 784 x 1568)."""
    cfg = _small_loader_cfg("cityscapes_panoptic.py", "cityscapes_fine_panoptic_val",
                            "cityscapes_fine_panoptic_val", 1)
    (d,) = DatasetCatalog.get("cityscapes_fine_panoptic_val")
    frame_classes = {s["category_id"] for s in d["segments_info"]}
    np.random.seed(0)
    (x,) = next(iter(instantiate(cfg.dataloader.train)))
    t = x["targets"]
    assert x["image"].shape == (3, 784, 1568) and t["sem_seg"].shape == (448, 896)
    labeled = set(np.unique(t["sem_seg"].numpy()).tolist()) - {255}
    assert labeled and labeled <= frame_classes
    thing_px = t["sem_seg"][t["inst_valid"]]
    assert thing_px.numel() > 0 and bool(((thing_px >= 11) & (thing_px <= 18)).all())  # trainIds of things
    assert not bool(t["inst_valid"][(t["sem_seg"] < 11)].any())
    (x,) = next(iter(instantiate(cfg.dataloader.test)))
    assert x["image"].shape == (3, 784, 1568) and (x["height"], x["width"]) == (128, 256)
    assert x["image_id"] == "frankfurt_000000_000294"
    evs = build_evaluators("cityscapes_fine_panoptic_val", None)._evaluators
    assert [type(e).__name__ for e in evs] == ["PanopticEvaluator", "CityscapesPanopticEvaluator",
                                               "PanopticSemSegEvaluator"]


# ----------------------------------------------------------------------------- bad / odd input
def _write(tmp_path, name, image, pan, segments):
    img_path = tmp_path / f"{name}.jpg"
    (image if isinstance(image, Image.Image) else Image.fromarray(image)).save(img_path, quality=95)
    Image.fromarray(id2rgb(pan)).save(tmp_path / f"{name}_pan.png")
    return dict(file_name=str(img_path), pan_seg_file_name=str(tmp_path / f"{name}_pan.png"), image_id=name,
                segments_info=segments)


def test_image_with_no_segments(tmp_path):
    rng = np.random.default_rng(0)
    d = _write(tmp_path, "empty", rng.integers(0, 255, (28, 42, 3), dtype=np.uint8), np.zeros((28, 42), np.int64), [])
    t = PanopticCentroidDatasetMapper(True, augmentations=[], panoptic=PanopticTargets())(d)["targets"]
    assert t["sem_seg"].shape == (16, 24)
    assert bool((t["sem_seg"] == 255).all()) and bool((t["sem_weight"] == 0).all())
    assert not bool(t["inst_valid"].any()) and bool((t["inst_ids"] == 0).all())
    assert bool((t["inst_weight"] == 0).all())  # EDS: no boundary anywhere -> w_min = 0
    t = PanopticCentroidDatasetMapper(True, augmentations=[], panoptic=PanopticTargets(use_eds=False))(d)["targets"]
    assert bool((t["inst_weight"] == 1).all())  # without EDS every pixel learns the void code
    # ...but a PNG with labeled pixels and no segments_info is an error
    pan = np.zeros((28, 42), np.int64)
    pan[3:9, 3:9] = 5
    bad = _write(tmp_path, "nosegs", rng.integers(0, 255, (28, 42, 3), dtype=np.uint8), pan, [])
    with pytest.raises(InvalidSampleError, match=r"nosegs_pan.png: ids \[5\] are not in segments_info"):
        PanopticCentroidDatasetMapper(True, augmentations=[], panoptic=PanopticTargets())(bad)


def test_exif_rotated_jpeg_with_panoptic_png(tmp_path):
    """A JPEG stored 14 x 28 (h x w) with EXIF orientation 6 (displayed rotated 90 degrees clockwise,
    28 x 14): the panoptic PNG is in the displayed orientation and the targets follow it."""
    raw = np.zeros((14, 28, 3), np.uint8)
    raw[:, :14] = 255  # left half white -> top half after the rotation
    pil = Image.fromarray(raw)
    exif = pil.getexif()
    exif[0x0112] = 6
    pan = np.full((28, 14), 3, np.int64)
    pan[:14] = 300  # the white (top) half is an instance
    segs = [dict(id=3, category_id=1, iscrowd=0, isthing=False), dict(id=300, category_id=2, iscrowd=0, isthing=True)]
    d = _write(tmp_path, "rot", pil, pan, segs)
    pil.save(d["file_name"], exif=exif, quality=100)
    out = PanopticCentroidDatasetMapper(True, augmentations=[], panoptic=PanopticTargets())(d)
    assert out["image"].shape == (3, 28, 14) and (out["height"], out["width"]) == (28, 14)
    assert out["image"][:, :14].float().mean() > 240 and out["image"][:, 14:].float().mean() < 15
    t = out["targets"]
    assert t["inst_valid"].shape == (16, 8)
    rows = output_sample_indices(28, 16)
    np.testing.assert_array_equal(t["inst_valid"].numpy(), np.repeat((rows < 14)[:, None], 8, 1))
    np.testing.assert_allclose(t["inst_uv"][:, t["inst_valid"]].numpy().T, [[0.0, -0.5]] * int(t["inst_valid"].sum()))
    # a PNG in the stored (unrotated) orientation does not match the displayed image
    Image.fromarray(id2rgb(pan.T.copy())).save(d["pan_seg_file_name"])
    with pytest.raises(InvalidSampleError, match=r"rot_pan.png is 28x14 \(w x h\) but image .*rot.jpg is 14x28"):
        PanopticCentroidDatasetMapper(True, augmentations=[], panoptic=PanopticTargets())(d)


def _skip_samples(tmp_path):
    rng = np.random.default_rng(1)
    pan = np.zeros((28, 28), np.int64)
    pan[4:20, 4:20] = 300
    segs = [dict(id=300, category_id=1, iscrowd=0, isthing=True)]
    good = [_write(tmp_path, f"good{i}", rng.integers(0, 255, (28, 28, 3), dtype=np.uint8), pan, segs) for i in range(2)]
    bad = _write(tmp_path, "bad", rng.integers(0, 255, (28, 28, 3), dtype=np.uint8), pan, [])  # id 300 unknown
    return good, bad


def _check_skips(mapper, batches, good, bad, caplog):
    files = [x["file_name"] for b in batches for x in b]
    assert len(files) == 12 and set(files) <= {g["file_name"] for g in good}
    assert mapper.num_skipped >= 2 and mapper.skipped_files == [bad["file_name"]] * mapper.num_skipped
    assert f"{mapper.num_skipped} skipped so far" in caplog.text and "bad.jpg" in caplog.text
    assert "not in segments_info" in caplog.text


def test_skip_invalid_through_detectron2_iterable_loader(tmp_path, caplog):
    good, bad = _skip_samples(tmp_path)
    mapper = PanopticCentroidDatasetMapper(True, augmentations=[], panoptic=PanopticTargets(), skip_invalid=True)
    dataset = ToIterableDataset(DatasetFromList(good + [bad], copy=False), TrainingSampler(3, shuffle=True, seed=0))
    loader = build_detection_train_loader(dataset=dataset, mapper=mapper, total_batch_size=2, num_workers=0,
                                          aspect_ratio_grouping=False)
    with caplog.at_level(logging.WARNING, logger="pe_panoptic.data.mapper"):
        it = iter(loader)
        batches = [next(it) for _ in range(6)]  # 12 good samples: the bad one came by at least 2 times
    _check_skips(mapper, batches, good, bad, caplog)


def test_skip_invalid_through_detectron2_list_loader(tmp_path, caplog):
    good, bad = _skip_samples(tmp_path)
    mapper = PanopticCentroidDatasetMapper(True, augmentations=[], panoptic=PanopticTargets(), skip_invalid=True)
    loader = build_detection_train_loader(dataset=good + [bad], mapper=mapper, total_batch_size=2, num_workers=0,
                                          sampler=TrainingSampler(3, shuffle=True, seed=0), aspect_ratio_grouping=False)
    with caplog.at_level(logging.WARNING, logger="pe_panoptic.data.mapper"):
        it = iter(loader)
        batches = [next(it) for _ in range(6)]
    _check_skips(mapper, batches, good, bad, caplog)
