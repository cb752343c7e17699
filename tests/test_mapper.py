"""Tests of PanopticCentroidDatasetMapper on the real fixtures and on broken files."""
import json
import logging

import numpy as np
import pytest
import torch
from PIL import Image

from detectron2.data import DatasetCatalog
from detectron2.data import transforms as T
from panopticapi.utils import id2rgb, rgb2id

from pe_panoptic.data.mapper import (
    InvalidSampleError,
    PanopticCentroidDatasetMapper,
    PanopticTargets,
    build_test_augmentations,
    build_train_augmentations,
    read_image_8bit,
)
from pe_panoptic.encoding import normalize_coords
from pe_panoptic.data.targets import output_sample_indices


# ----------------------------------------------------------------------------- helpers
def _png_ids(path):
    return rgb2id(np.asarray(Image.open(path).convert("RGB"))).astype(np.int64)


def _expected_at_outputs(d, out, resized):
    """Independent decoding of the original PNG at the positions the mapper's targets sample:
    output pixel centre -> padded input pixel -> (torch nearest resize) original pixel."""
    pan = _png_ids(d["pan_seg_file_name"])
    H0, W0 = pan.shape
    hu, wu = out["image_size_unpadded"]
    Hp, Wp = out["image"].shape[1:]
    h, w = out["targets"]["sem_seg"].shape
    ys, xs = output_sample_indices(Hp, h), output_sample_indices(Wp, w)
    if resized:  # labels follow the image's PIL resize with NEAREST: src = floor((dst + 0.5) * in / out)
        oy, ox = np.floor((ys + 0.5) * (H0 / hu)).astype(int), np.floor((xs + 0.5) * (W0 / wu)).astype(int)
    else:
        oy, ox = ys, xs
    inside = (ys < hu)[:, None] & (xs < wu)[None, :]
    ids = pan[np.minimum(oy, H0 - 1)][:, np.minimum(ox, W0 - 1)]
    ids[~inside] = 0  # padding is unlabeled
    return pan, ids


def _lut(segments, key, default):
    table = {s["id"]: key(s) for s in segments}
    return lambda ids: np.vectorize(lambda i: table.get(int(i), default), otypes=[object])(ids)


def _check_classes_and_void(d, out, ids):
    t = out["targets"]
    segs = d["segments_info"]
    cls = _lut(segs, lambda s: s["category_id"], 255)(ids).astype(np.int64)
    np.testing.assert_array_equal(t["sem_seg"].numpy(), cls)
    inst = _lut(segs, lambda s: bool(s["isthing"]) and not s["iscrowd"], False)(ids).astype(bool)
    crowd = _lut(segs, lambda s: bool(s["iscrowd"]), False)(ids).astype(bool)
    np.testing.assert_array_equal(t["inst_valid"].numpy(), inst)
    assert np.all(t["inst_weight"].numpy()[crowd] == 0)
    void = ids == 0
    assert void.any()
    assert np.all(t["sem_seg"].numpy()[void] == 255) and np.all(t["sem_weight"].numpy()[void] == 0)
    assert not t["inst_valid"].numpy()[void].any()
    # inst_ids: one index per instance, compact 1..K
    k = t["inst_ids"].numpy()
    assert set(np.unique(k[inst])) == set(range(1, k.max() + 1)) and np.all(k[~inst] == 0)
    for i in np.unique(ids[inst]):
        assert len(np.unique(k[ids == i])) == 1


@pytest.fixture(scope="module")
def coco(d2_datasets):
    return DatasetCatalog.get("coco_2017_val_panoptic")


# ----------------------------------------------------------------------------- real data
def test_coco_no_resize_classes_void_and_exact_centroids(coco):
    mapper = PanopticCentroidDatasetMapper(False, augmentations=[], with_targets=True, panoptic=PanopticTargets())
    assert len(coco) == 3
    for d in coco:
        out = mapper(d)
        H0, W0 = out["height"], out["width"]
        Hp, Wp = out["image"].shape[1:]
        assert out["image"].dtype == torch.uint8 and out["image"].shape[0] == 3
        assert out["image_size_unpadded"] == (H0, W0) and Hp % 14 == 0 and Wp % 14 == 0
        assert Hp - H0 < 14 and Wp - W0 < 14
        assert out["targets"]["sem_seg"].shape == (Hp * 8 // 14, Wp * 8 // 14)
        assert out["file_name"] == d["file_name"] and out["image_id"] == d["image_id"]
        assert torch.all(out["image"][:, H0:] == 0) and torch.all(out["image"][:, :, W0:] == 0)
        pan, ids = _expected_at_outputs(d, out, resized=False)
        _check_classes_and_void(d, out, ids)
        # centroid = numpy mean of the instance's pixel coordinates on the original PNG
        uv = out["targets"]["inst_uv"].numpy()
        valid = out["targets"]["inst_valid"].numpy()
        for i in np.unique(ids[valid]):
            yy, xx = np.nonzero(pan == i)
            exp_u = float(normalize_coords(torch.tensor(xx.mean(), dtype=torch.float64), Wp))
            exp_v = float(normalize_coords(torch.tensor(yy.mean(), dtype=torch.float64), Hp))
            np.testing.assert_allclose(uv[0][ids == i], exp_u, atol=1e-6)
            np.testing.assert_allclose(uv[1][ids == i], exp_v, atol=1e-6)


def test_coco_test_resize_classes_and_centroids(coco):
    mapper = PanopticCentroidDatasetMapper(False, augmentations=build_test_augmentations(518), with_targets=True,
                                           panoptic=PanopticTargets())
    for d in coco:
        out = mapper(d)
        hu, wu = out["image_size_unpadded"]
        assert max(hu, wu) == 518
        assert out["image"].shape[1:] == (int(np.ceil(hu / 14) * 14), int(np.ceil(wu / 14) * 14))
        assert out["targets"]["sem_seg"].shape[1] == 296  # 518 * 8 / 14
        pan, ids = _expected_at_outputs(d, out, resized=True)
        _check_classes_and_void(d, out, ids)
        # centroid = mean pixel position of the instance in the resized map; the resized map is
        # rebuilt here independently: PIL's NEAREST resize of the int32 id map (what the image
        # resize does to pixel positions)
        Hp, Wp = out["image"].shape[1:]
        H0, W0 = pan.shape
        resized = np.asarray(Image.fromarray(pan.astype(np.int32), mode="I").resize((wu, hu), Image.NEAREST))
        uv = out["targets"]["inst_uv"].numpy()
        valid = out["targets"]["inst_valid"].numpy()
        sy, sx = hu / H0, wu / W0
        for i in np.unique(ids[valid]):
            yy, xx = np.nonzero(resized == i)
            np.testing.assert_allclose(uv[0][ids == i], 2 * (xx.mean() + 0.5) / Wp - 1, atol=1e-6)
            np.testing.assert_allclose(uv[1][ids == i], 2 * (yy.mean() + 0.5) / Hp - 1, atol=1e-6)
            # and close to the scaled centroid of the original PNG (nearest-resize error only)
            yy, xx = np.nonzero(pan == i)
            assert abs(uv[0][ids == i][0] - (2 * (xx.mean() + 0.5) * sx / Wp - 1)) < 3.0 / Wp
            assert abs(uv[1][ids == i][0] - (2 * (yy.mean() + 0.5) * sy / Hp - 1)) < 3.0 / Hp


def test_cityscapes_frame_isthing_from_metadata(d2_datasets):
    (d,) = DatasetCatalog.get("cityscapes_fine_panoptic_val")
    assert all("isthing" not in s for s in d["segments_info"])
    with pytest.raises(InvalidSampleError, match="isthing"):
        PanopticCentroidDatasetMapper(False, augmentations=[], with_targets=True, panoptic=PanopticTargets())(d)
    mapper = PanopticCentroidDatasetMapper(
        False, augmentations=[], with_targets=True, panoptic=PanopticTargets(dataset_name="cityscapes_fine_panoptic_val")
    )
    out = mapper(d)
    t = out["targets"]
    assert (out["height"], out["width"]) == (128, 256) and out["image"].shape == (3, 140, 266)
    segs = [dict(s, isthing=s["category_id"] >= 11) for s in d["segments_info"]]
    _, ids = _expected_at_outputs(d, out, resized=False)
    _check_classes_and_void(dict(d, segments_info=segs), out, ids)
    # independent check against the labelTrainIds PNG of the same frame
    train_ids = np.asarray(Image.open(d["sem_seg_file_name"])).astype(np.int64)
    ys, xs = output_sample_indices(140, 80), output_sample_indices(266, 152)
    inside = (ys < 128)[:, None] & (xs < 256)[None, :]
    sampled = train_ids[np.minimum(ys, 127)][:, np.minimum(xs, 255)]
    # (the fixture's PNGs were downsampled separately: they agree except on a few edge pixels)
    assert (t["sem_seg"].numpy()[inside] == sampled[inside]).mean() > 0.99
    n_things = sum(1 for s in segs if s["isthing"] and not s["iscrowd"])
    assert 0 < t["inst_ids"].max() <= n_things


def test_deeplab2_dummy_crowd_region(testdata):
    root = testdata / "extra" / "deeplab2_dummy"
    ann = json.loads((root / "gtFine" / "cityscapes_panoptic_dummy_trainId.json").read_text())["annotations"][0]
    d = dict(
        file_name=str(root / "leftImg8bit" / "dummy_000000_000000_leftImg8bit.png"),
        pan_seg_file_name=str(root / "gtFine" / "cityscapes_panoptic_dummy_trainId" / ann["file_name"]),
        image_id=ann["image_id"],
        segments_info=ann["segments_info"],  # category_id = Cityscapes trainId = contiguous id
    )
    crowd = [s for s in ann["segments_info"] if s["iscrowd"]]
    assert len(crowd) == 1 and crowd[0]["category_id"] == 13  # a crowd of cars
    mapper = PanopticCentroidDatasetMapper(
        False, augmentations=[], with_targets=True, panoptic=PanopticTargets(dataset_name="cityscapes_fine_panoptic_val")
    )
    out = mapper(d)
    t = out["targets"]
    assert out["image"].shape == (3, 812, 812) and t["sem_seg"].shape == (464, 464)
    _, ids = _expected_at_outputs(d, out, resized=False)
    region = ids == crowd[0]["id"]
    assert region.sum() > 100
    assert np.all(t["sem_seg"].numpy()[region] == 13)
    assert np.all(t["inst_weight"].numpy()[region] == 0)
    assert not t["inst_valid"].numpy()[region].any() and np.all(t["inst_ids"].numpy()[region] == 0)
    assert np.all(t["sem_weight"].numpy()[region] > 0)  # the semantic loss still sees it
    # the 5 non-crowd cars are instances; stuff (road, sky, building, vegetation) is not
    assert t["inst_ids"].max() == 5
    np.testing.assert_array_equal(t["inst_valid"].numpy(), np.isin(ids, [26000, 26001, 26002, 26003, 26004]))


def test_train_mode_fixed_size_and_determinism(coco):
    mapper = PanopticCentroidDatasetMapper(True, augmentations=build_train_augmentations(420), input_size=420,
                                           panoptic=PanopticTargets())
    outs = []
    for _ in range(2):
        np.random.seed(123)
        outs.append([mapper(d) for d in coco])
    for a, b in zip(*outs):
        assert torch.equal(a["image"], b["image"])
        for k in a["targets"]:
            assert torch.equal(a["targets"][k], b["targets"][k])
    for out in outs[0]:
        t = out["targets"]
        assert out["image"].shape == (3, 420, 420) and t["sem_seg"].shape == (240, 240)
        hu, wu = out["image_size_unpadded"]
        assert hu <= 420 and wu <= 420
        assert torch.all(out["image"][:, hu:] == 0) and torch.all(out["image"][:, :, wu:] == 0)
        uv = t["inst_uv"][:, t["inst_valid"]]
        assert uv.numel() > 0 and uv.abs().max() < 1
        assert 0 <= t["inst_weight"].min() and t["inst_weight"].max() <= 1


def test_flip_moves_targets_with_image(coco):
    d = coco[0]
    mapper = PanopticCentroidDatasetMapper(
        False, augmentations=[T.RandomFlip(prob=1.0, horizontal=True)], with_targets=True, panoptic=PanopticTargets()
    )
    out = mapper(d)
    plain = PanopticCentroidDatasetMapper(False, augmentations=[], with_targets=True, panoptic=PanopticTargets())(d)
    W0 = out["width"]
    assert torch.equal(out["image"][:, :, :W0], plain["image"][:, :, :W0].flip(-1))
    pan = _png_ids(d["pan_seg_file_name"])[:, ::-1]
    Hp, Wp = out["image"].shape[1:]
    ys, xs = output_sample_indices(Hp, Hp * 8 // 14), output_sample_indices(Wp, Wp * 8 // 14)
    ids = pan[np.minimum(ys, pan.shape[0] - 1)][:, np.minimum(xs, W0 - 1)]
    ids[(ys >= pan.shape[0])[:, None] | (xs >= W0)[None, :]] = 0
    _check_classes_and_void(d, out, ids)


def test_output_size_and_input_size_validation():
    m = PanopticCentroidDatasetMapper(True, augmentations=[], input_size=(420, 518), panoptic=PanopticTargets())
    assert m.output_size((420, 518)) == (240, 296)
    with pytest.raises(ValueError, match="multiple of size_divisibility"):
        PanopticCentroidDatasetMapper(True, augmentations=[], input_size=500, panoptic=PanopticTargets())


def test_test_mode_without_targets(coco):
    out = PanopticCentroidDatasetMapper(False, augmentations=build_test_augmentations(518))(coco[2])
    assert "targets" not in out and out["image"].shape == (3, 392, 518)
    assert out["image_size_unpadded"] == (389, 518) and (out["height"], out["width"]) == (480, 640)


# ----------------------------------------------------------------------------- bad / odd input
def _write_sample(tmp_path, pan, image=None, segments=None, name="s"):
    """Write an RGB image (random, or the given array / PIL image) and the panopticapi PNG of
    ``pan``; return a dataset dict (ids < 100 are stuff of class id % 5, others things)."""
    rng = np.random.default_rng(0)
    img_path = tmp_path / f"{name}.png"
    if image is None:
        image = rng.integers(0, 255, pan.shape + (3,), dtype=np.uint8)
    (image if isinstance(image, Image.Image) else Image.fromarray(image)).save(img_path)
    pan_path = tmp_path / f"{name}_pan.png"
    Image.fromarray(id2rgb(pan)).save(pan_path)
    if segments is None:
        segments = [
            dict(id=int(i), category_id=int(i % 5), iscrowd=0, isthing=bool(i >= 100))
            for i in np.unique(pan) if i != 0
        ]
    return dict(file_name=str(img_path), pan_seg_file_name=str(pan_path), image_id=name, segments_info=segments)


def _toy_pan(h=30, w=40):
    pan = np.zeros((h, w), np.int64)
    pan[:, : w // 2] = 3
    pan[5:15, 5:15] = 100
    pan[18:28, 22:36] = 257
    return pan


def _mapper(**kw):
    kw.setdefault("augmentations", [])
    kw.setdefault("panoptic", PanopticTargets())
    return PanopticCentroidDatasetMapper(True, **kw)


def test_toy_sample_maps(tmp_path):
    out = _mapper()(_write_sample(tmp_path, _toy_pan()))
    assert out["image"].shape == (3, 42, 42) and out["targets"]["inst_ids"].max() == 2


def test_missing_image(tmp_path):
    d = _write_sample(tmp_path, _toy_pan())
    d["file_name"] = str(tmp_path / "nope.jpg")
    with pytest.raises(FileNotFoundError, match="nope.jpg"):
        _mapper()(d)


def test_missing_png(tmp_path):
    d = _write_sample(tmp_path, _toy_pan())
    d["pan_seg_file_name"] = str(tmp_path / "nope.png")
    with pytest.raises(FileNotFoundError, match="panoptic PNG not found.*nope.png"):
        _mapper()(d)


def test_corrupt_image(tmp_path):
    d = _write_sample(tmp_path, _toy_pan())
    (tmp_path / "bad.jpg").write_bytes(b"this is not an image" * 10)
    d["file_name"] = str(tmp_path / "bad.jpg")
    with pytest.raises(InvalidSampleError, match="cannot read image file .*bad.jpg"):
        _mapper()(d)


def test_truncated_png(tmp_path):
    d = _write_sample(tmp_path, _toy_pan())
    data = open(d["pan_seg_file_name"], "rb").read()
    open(d["pan_seg_file_name"], "wb").write(data[: len(data) // 2])
    with pytest.raises(InvalidSampleError, match="cannot read panoptic PNG .*s_pan.png"):
        _mapper()(d)


def test_png_id_not_in_segments_info(tmp_path):
    d = _write_sample(tmp_path, _toy_pan())
    d["segments_info"] = [s for s in d["segments_info"] if s["id"] != 257]
    with pytest.raises(InvalidSampleError, match=r"s_pan.png: ids \[257\] are not in segments_info"):
        _mapper()(d)


def test_segment_absent_from_png(tmp_path):
    d = _write_sample(tmp_path, _toy_pan())
    d["segments_info"].append(dict(id=999, category_id=1, iscrowd=0, isthing=True))
    with pytest.raises(InvalidSampleError, match=r"s_pan.png: segments_info ids \[999\] have no pixel"):
        _mapper()(d)


def test_segment_cropped_away_by_augmentation_is_fine(tmp_path):
    d = _write_sample(tmp_path, _toy_pan())
    # keep columns 20..39, rows 16..29: only stuff-free right half with instance 257
    crop = T.CropTransform(x0=20, y0=16, w=20, h=14)
    out = _mapper(augmentations=[crop])(d)
    t = out["targets"]
    assert out["image_size_unpadded"] == (14, 20) and out["image"].shape == (3, 14, 28)
    assert t["inst_ids"].max() == 1
    assert set(np.unique(t["sem_seg"].numpy())) == {257 % 5, 255}


def test_image_png_size_mismatch(tmp_path):
    d = _write_sample(tmp_path, _toy_pan(), image=np.zeros((30, 41, 3), np.uint8))
    with pytest.raises(InvalidSampleError, match=r"s_pan.png is 40x30 .*/s.png is 41x30"):
        _mapper()(d)


def test_dataset_dict_size_mismatch(tmp_path):
    d = _write_sample(tmp_path, _toy_pan())
    d["height"], d["width"] = 31, 40
    with pytest.raises(InvalidSampleError, match="s.png is 40x30"):
        _mapper()(d)


def test_grayscale_rgba_palette_images(tmp_path):
    gray = np.tile(np.arange(40, dtype=np.uint8)[None] * 6, (30, 1))
    out = _mapper()(_write_sample(tmp_path, _toy_pan(), image=gray, name="g"))
    assert out["image"].shape == (3, 42, 42)
    assert torch.equal(out["image"][0, :30, :40], torch.from_numpy(gray))
    assert torch.equal(out["image"][0], out["image"][2])

    rgba = np.zeros((30, 40, 4), np.uint8)
    rgba[..., 0], rgba[..., 1], rgba[..., 2], rgba[..., 3] = 10, 20, 30, 7
    out = _mapper()(_write_sample(tmp_path, _toy_pan(), image=rgba, name="a"))
    assert out["image"][:, 0, 0].tolist() == [10, 20, 30]

    pal = Image.fromarray(gray).convert("P")
    out = _mapper()(_write_sample(tmp_path, _toy_pan(), image=pal, name="p"))
    assert torch.equal(out["image"][1, :30, :40], torch.from_numpy(gray))


def test_16bit_image_is_rescaled_not_clipped(tmp_path):
    img16 = np.zeros((30, 40), np.uint16)
    img16[:, 10:20], img16[:, 20:30], img16[:, 30:] = 128 * 257, 1000, 65535
    out = _mapper()(_write_sample(tmp_path, _toy_pan(), image=Image.fromarray(img16), name="i16"))
    row = out["image"][0, 0, :40]
    assert row[:10].tolist() == [0] * 10 and row[10:20].tolist() == [128] * 10
    assert row[20:30].tolist() == [4] * 10 and row[30:].tolist() == [255] * 10  # 1000*255/65535 = 3.9


def test_exif_orientation_applied(tmp_path):
    img = np.zeros((10, 20, 3), np.uint8)
    img[:, :10] = 255  # left half white
    pil = Image.fromarray(img)
    exif = pil.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    path = tmp_path / "rot.jpg"
    pil.save(path, exif=exif, quality=100)
    out = read_image_8bit(str(path), "RGB")
    assert out.shape == (20, 10, 3)
    assert out[:10].mean() > 240 and out[10:].mean() < 15  # former left half is now on top


def test_grayscale_panoptic_png_is_rejected(tmp_path):
    d = _write_sample(tmp_path, _toy_pan())
    Image.fromarray(np.zeros((30, 40), np.uint8)).save(d["pan_seg_file_name"])
    with pytest.raises(InvalidSampleError, match="s_pan.png: mode 'L' is not an RGB id image"):
        _mapper()(d)


def test_image_smaller_than_a_patch(tmp_path):
    pan = np.zeros((5, 7), np.int64)
    pan[1:4, 2:6] = 300
    out = _mapper()(_write_sample(tmp_path, pan))
    t = out["targets"]
    assert out["image"].shape == (3, 14, 14) and t["sem_seg"].shape == (8, 8)
    # output pixels sample input rows/cols 0, 2, 4, 6, ...: instance rows 1..3 -> output row 1
    # (input row 2), cols 2..5 -> output cols 1, 2 (input cols 2, 4)
    np.testing.assert_array_equal(np.argwhere(t["inst_valid"].numpy()), [[1, 1], [1, 2]])


def test_training_requires_pan_seg_file(tmp_path):
    d = _write_sample(tmp_path, _toy_pan())
    del d["pan_seg_file_name"]
    with pytest.raises(InvalidSampleError, match="pan_seg_file_name"):
        _mapper()(d)


def test_augmented_image_larger_than_input_size(tmp_path):
    d = _write_sample(tmp_path, _toy_pan())
    with pytest.raises(InvalidSampleError, match="exceeds input_size"):
        _mapper(input_size=28)(d)


def test_skip_invalid_counts_and_logs(tmp_path, caplog):
    good = _write_sample(tmp_path, _toy_pan(), name="good")
    bad = _write_sample(tmp_path, _toy_pan(), name="bad")
    bad["segments_info"] = bad["segments_info"][:1]
    missing = dict(good, file_name=str(tmp_path / "missing.png"))
    mapper = _mapper(skip_invalid=True)
    with caplog.at_level(logging.WARNING, logger="pe_panoptic.data.mapper"):
        assert mapper(bad) is None
        assert mapper(missing) is None
        assert mapper(good) is not None
    assert mapper.num_skipped == 2
    assert mapper.skipped_files == [bad["file_name"], missing["file_name"]]
    assert "bad.png" in caplog.text and "not in segments_info" in caplog.text and "missing.png" in caplog.text


def test_source_index_map_resizes_flips_and_crops_like_the_3_byte_map():
    """The 4-byte (RGBA) source-index map selects the same source pixels under detectron2's
    transforms as the former 3-byte (RGB) one, so targets of images < 2^24 pixels are unchanged."""
    from pe_panoptic.data.mapper import decode_source_index, source_index_image

    for h, w, nh, nw in ((37, 53, 90, 131), (480, 640, 112, 150), (101, 77, 33, 25)):
        new = source_index_image(h, w)
        assert new.shape == (h, w, 4) and new.dtype == np.uint8
        old = np.ascontiguousarray(new[..., :3])  # the 3 low bytes: the former encoding
        np.testing.assert_array_equal(decode_source_index(new), np.arange(h * w).reshape(h, w))
        tfm = T.TransformList([T.ResizeTransform(h, w, nh, nw), T.HFlipTransform(nw), T.CropTransform(3, 2, nw - 5, nh - 4)])
        got_new = decode_source_index(tfm.apply_segmentation(new))
        got_old = rgb2id(tfm.apply_segmentation(old)).astype(np.int64) - 1
        np.testing.assert_array_equal(got_new, got_old)
    with pytest.raises(ValueError, match="source-index map"):
        decode_source_index(new[..., :3])


def test_image_over_2_24_pixels_maps(tmp_path):
    """4100 x 4096 = 16.8 MP: beyond the former 3-byte source index (2^24 - 2 pixels)."""
    h, w = 4096, 4100
    assert h * w + 1 > 1 << 24
    pan = np.zeros((h, w), np.int64)
    pan[: h // 2] = 3
    pan[100:1500, 200:2000] = 100
    pan[2500:4000, 3000:4090] = 257  # bottom right: indices beyond 2^24
    d = _write_sample(tmp_path, pan, image=np.zeros((h, w, 3), np.uint8), name="big")
    out = _mapper(augmentations=[T.ResizeShortestEdge(short_edge_length=112, max_size=112)])(d)
    assert out["image"].shape == (3, 112, 112) and (out["height"], out["width"]) == (h, w)
    t = out["targets"]
    assert int(t["inst_ids"].max()) == 2
    # the bottom-right instance lands bottom right of the output map (64 x 64 for 112 px)
    ys, xs = np.nonzero((t["inst_ids"] == t["inst_ids"][-5, -3]).numpy())
    assert int(t["inst_ids"][-5, -3]) > 0 and ys.min() > 32 and xs.min() > 40


def test_one_panoptic_png_decoder(tmp_path):
    """pe_panoptic.data.panoptic_png is the one ``R + 256 G + 256^2 B`` decoder: it agrees with
    panopticapi's rgb2id (ids using all three bytes) and the semantic evaluator reads through it."""
    from pe_panoptic.data.panoptic_png import panoptic_rgb_to_ids, read_panoptic_ids
    from pe_panoptic.evaluation.semseg import semantic_from_panoptic

    pan = np.array([[0, 1, 255, 256], [65535, 65536, 70000, 2**24 - 1]], dtype=np.int64)
    Image.fromarray(id2rgb(pan)).save(tmp_path / "p.png")
    ids = read_panoptic_ids(str(tmp_path / "p.png"))
    assert ids.dtype == np.int64 and np.array_equal(ids, pan)
    assert np.array_equal(panoptic_rgb_to_ids(id2rgb(pan)), rgb2id(id2rgb(pan)))
    sem = semantic_from_panoptic(str(tmp_path / "p.png"), [dict(id=70000, category_id=3), dict(id=1, category_id=5)])
    assert sem.tolist() == [[255, 5, 255, 255], [255, 255, 3, 255]]


def test_builders_read_labels_only_when_targets_are_built(tmp_path):
    """The mapper asks its builders for labels only when it builds targets: a test mapper with a
    PanopticTargets builder ignores a broken panoptic PNG unless ``with_targets=True``."""
    d = _write_sample(tmp_path, _toy_pan())
    broken = dict(d, pan_seg_file_name=str(tmp_path / "missing.png"))
    out = PanopticCentroidDatasetMapper(False, augmentations=[], panoptic=PanopticTargets())(broken)
    assert "targets" not in out
    with pytest.raises(FileNotFoundError, match="panoptic PNG not found"):
        PanopticCentroidDatasetMapper(False, augmentations=[], panoptic=PanopticTargets(), with_targets=True)(broken)
    # optional panoptic labels: a training dict without a PNG is an error only when nothing else is built
    with pytest.raises(InvalidSampleError, match="no targets to train on"):
        _mapper(panoptic=PanopticTargets(optional=True))({k: v for k, v in d.items() if k != "pan_seg_file_name"})
