"""NYUv2 raw dump preparation: PGM/PPM reading (the dump's little-endian depth), the toolbox's
synchronisation and Kinect conversion against hand values, and prepare -> register -> dataset
dicts -> mapper depth targets on a tiny fabricated raw layout."""
import importlib.util
import json
import logging
import pathlib
import uuid

import numpy as np
import pytest

from detectron2.data import DatasetCatalog, MetadataCatalog

from pe_panoptic.data.errors import InvalidSampleError
from pe_panoptic.data.mapper import DepthTargets, PanopticCentroidDatasetMapper, build_train_augmentations
from pe_panoptic.data.nyu import register_nyuv2_depth
import sys  # noqa: E402

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "datasets"))  # datasets/nyu_raw.py, kinect.py
import kinect  # noqa: E402
import nyu_raw  # noqa: E402
from nyu_raw import (  # noqa: E402
    RawFrame,
    parse_frame_name,
    prepare_nyuv2_raw,
    read_netpbm,
    read_raw_depth,
    read_scene_list,
    scene_frames,
    synchronise_frames,
)

ROOT = pathlib.Path(__file__).resolve().parents[1]
H, W = 480, 640
RAW = 1000  # -> 351.3 / (1092.5 - 1000) = 3.7978... m
RAW_M = 351.3 / (1092.5 - RAW)


def _pgm(path, raw, header=None):
    """A depth frame as the dump stores it: a P5 header and little-endian 16-bit samples."""
    h, w = raw.shape
    path.write_bytes((header or f"P5\n{w} {h}\n65535\n".encode()) + raw.astype("<u2").tobytes())


def _ppm(path, rgb):
    h, w = rgb.shape[:2]
    path.write_bytes(f"P6\n{w} {h}\n255\n".encode() + rgb.astype(np.uint8).tobytes())


def _raw_depth():
    raw = np.full((H, W), RAW, np.uint16)
    raw[:40, :] = 2047  # no measurement (the noise mask: the frame's maximum)
    return raw


def _scene(root, name, depth_times, rgb_times, bad=()):
    d = root / name
    d.mkdir(parents=True)
    rng = np.random.default_rng(len(name))
    names = []
    for i, t in enumerate(rgb_times):
        n = f"r-{t:.6f}-{1000 + i}.ppm"
        _ppm(d / n, rng.integers(0, 255, (H, W, 3)))
        names.append(n)
    for i, t in enumerate(depth_times):
        n = f"d-{t:.6f}-{2000 + i}.pgm"
        if i in bad:
            (d / n).write_bytes(b"P5\n640 480\n65535\n" + b"\x00" * 100)  # truncated
        else:
            _pgm(d / n, _raw_depth())
        names.append(n)
    (d / f"a-{depth_times[0]:.6f}-1.dump").write_bytes(b"\x00" * 16)
    (d / "INDEX.txt").write_text("\n".join(sorted(names)) + "\n")
    (d / "notes.txt").write_text("a stray file\n")
    return d


# ------------------------------------------------------------------------------------ file format
def test_netpbm_byte_order_and_errors(tmp_path):
    raw = np.array([[1, 1000], [2047, 65535]], np.uint16)
    _pgm(tmp_path / "d.pgm", raw, header=b"P5\n# a comment\n2 2\n65535\n")
    np.testing.assert_array_equal(read_raw_depth(str(tmp_path / "d.pgm")), raw)
    # the PGM standard's big-endian reading of the same bytes is the swapped value
    np.testing.assert_array_equal(read_netpbm(str(tmp_path / "d.pgm")), raw.byteswap())
    rgb = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    _ppm(tmp_path / "r.ppm", rgb)
    np.testing.assert_array_equal(read_netpbm(str(tmp_path / "r.ppm")), rgb)
    (tmp_path / "t.pgm").write_bytes(b"P5\n4 4\n65535\n" + b"\x00" * 10)
    with pytest.raises(InvalidSampleError, match=r"t\.pgm: truncated: 10 bytes"):
        read_raw_depth(str(tmp_path / "t.pgm"))
    (tmp_path / "x.pgm").write_bytes(b"P2\n1 1\n255\n0\n")
    with pytest.raises(InvalidSampleError, match=r"x\.pgm: not a binary PGM/PPM"):
        read_netpbm(str(tmp_path / "x.pgm"))
    with pytest.raises(InvalidSampleError, match=r"r\.ppm: expected a 16-bit single-channel PGM"):
        read_raw_depth(str(tmp_path / "r.ppm"))


def test_frame_names():
    assert parse_frame_name("r-1294439283.377657-2381571548.ppm") == RawFrame(
        "r-1294439283.377657-2381571548.ppm", "r", 1294439283.377657, 2381571548)
    assert parse_frame_name("d-1.5-7.pgm").kind == "d"
    assert parse_frame_name("INDEX.txt") is None
    with pytest.raises(InvalidSampleError, match="must end in .pgm"):
        parse_frame_name("d-1.5-7.ppm")


def _frames(kind, times):
    return [RawFrame(f"{kind}-{t}-0", kind, t, 0) for t in times]


def test_synchronisation_follows_get_synched_frames():
    # every depth frame kept; forward-only pointer; a tie moves on to the later RGB frame
    depth = _frames("d", [1.00, 1.04, 1.05, 1.30, 2.00])
    rgb = _frames("r", [0.98, 1.03, 1.07, 1.20, 1.40])
    got = synchronise_frames(depth, rgb)
    assert [g.index for g in got] == [0, 1, 2, 3, 4]
    assert [g.rgb for g in got] == ["r-0.98-0", "r-1.03-0", "r-1.07-0", "r-1.4-0", "r-1.4-0"]
    np.testing.assert_allclose([g.time_diff for g in got], [0.02, 0.01, 0.02, 0.10, 0.60], atol=1e-9)
    # the pointer never goes back, even if an earlier RGB frame would be closer
    assert [g.rgb for g in synchronise_frames(_frames("d", [5.0, 1.0]), rgb)] == ["r-1.4-0", "r-1.4-0"]
    with pytest.raises(InvalidSampleError, match="no RGB frame"):
        synchronise_frames(depth, [])


# ------------------------------------------------------------------------------------ Kinect model
def test_depth_rel2depth_abs_hand_values():
    got = kinect.depth_rel2depth_abs(np.array([1000, 500, 2047, 1080, 1092.5, 0]))
    np.testing.assert_allclose(got, [351.3 / 92.5, 351.3 / 592.5, 0.0, 10.0, 0.0, 351.3 / 1092.5])


def test_toolbox_rotation_and_undistort():
    # camera_params.m: R = inv(reshape(-[...], 3, 3)'), close to -I
    np.testing.assert_allclose(kinect.DEPTH_TO_RGB_R, -np.eye(3), atol=6e-3)
    assert kinect.DEPTH_TO_RGB_R[0, 1] == pytest.approx(5.0359919480810989e-03, rel=1e-3)
    img = np.arange(12 * 16, dtype=float).reshape(12, 16)
    same = kinect.undistort(img, (10.0, 10.0, 7.5, 5.5), (0, 0, 0, 0, 0))
    np.testing.assert_allclose(same[:-1, :-1], img[:-1, :-1])  # identity inside; last row/col: fill
    assert (same[-1] == 255).all() and (same[:, -1] == 255).all()
    # radial k1 > 0 samples further out: a horizontal ramp is stretched away from the centre
    ramp = np.tile(np.arange(16.0), (12, 1))
    out = kinect.undistort(ramp, (10.0, 10.0, 7.5, 5.5), (0.1, 0, 0, 0, 0))
    x = (12 - 7.5) / 10, (5 - 5.5) / 10
    assert out[5, 12] == pytest.approx(10 * x[0] * (1 + 0.1 * (x[0] ** 2 + x[1] ** 2)) + 7.5)
    assert out[5, 12] > 12 and out[5, 3] < 3


def test_project_depth_map_single_point_lands_where_the_toolbox_puts_it():
    raw = np.full((H, W), 2047, np.uint16)
    raw[240, 320] = RAW  # 0-based (240, 320) = MATLAB (241, 321)
    depth, rgb = kinect.project_depth_map(raw, np.zeros((H, W, 3), np.uint8), undistort_images=False)
    fx_d, fy_d, cx_d, cy_d = kinect.DEPTH_INTRINSICS
    p = np.array([(321 - cx_d) * RAW_M / fx_d, (241 - cy_d) * RAW_M / fy_d, RAW_M])
    q = kinect.DEPTH_TO_RGB_R @ p + kinect.DEPTH_TO_RGB_T
    fx, fy, cx, cy = kinect.RGB_INTRINSICS
    x, y = int(np.rint(q[0] * fx / q[2] + cx)), int(np.rint(q[1] * fy / q[2] + cy))
    assert (x, y) != (321, 241)  # the RGB camera sees it elsewhere
    assert np.count_nonzero(depth) == 1 and depth[y - 1, x - 1] == pytest.approx(RAW_M)
    assert rgb.dtype == np.uint8 and rgb.shape == (H, W, 3)


# ------------------------------------------------------------------------------------ end to end
@pytest.fixture()
def raw_layout(tmp_path):
    raw = tmp_path / "raw"
    # scene A: 5 depth frames (#2 truncated), 6 RGB frames; scene B: 2 depth frames
    _scene(raw, "bedroom_0001", [10.00, 10.05, 10.10, 10.15, 10.20], [9.99, 10.04, 10.06, 10.12, 10.16, 10.30],
           bad=(2,))
    _scene(raw, "kitchen_0003a", [20.0, 20.1], [20.01, 20.12])
    scenes = tmp_path / "train_scenes.txt"
    scenes.write_text("# BTS-style scene list\nbedroom_0001\nkitchen_0003a\n\n")
    return raw, scenes


def test_prepare_register_load_map_end_to_end(raw_layout, tmp_path, caplog):
    raw, scenes = raw_layout
    depth, rgb, other = scene_frames(str(raw / "bedroom_0001"))
    assert (len(depth), len(rgb), other) == (5, 6, 1)  # notes.txt is 'other'; INDEX.txt, a-*.dump known
    out = tmp_path / "nyuv2"
    with caplog.at_level(logging.WARNING, logger="datasets/nyu_raw.py"):
        stats = prepare_nyuv2_raw(str(raw), str(scenes), str(out), sample_step=2)
    # scene A: frames 0, 2, 4 sampled, 2 is truncated; scene B: frame 0
    assert (stats.synced_frames, stats.sampled_frames, stats.written) == (7, 4, 3)
    assert dict(stats.skipped) == {"unreadable or empty frame": 1}
    assert any("d-10.100000-2002.pgm" in r.getMessage() and "truncated" in r.getMessage() for r in caplog.records)
    stems = (out / "splits" / "train.txt").read_text().split()
    assert stems == ["bedroom_0001__00000", "bedroom_0001__00004", "kitchen_0003a__00000"]

    name = f"nyuv2_raw_train_{uuid.uuid4().hex[:8]}"
    register_nyuv2_depth(name, str(out), "train")
    try:
        dicts = DatasetCatalog.get(name)
        assert [d["image_id"] for d in dicts] == stems
        assert MetadataCatalog.get(name).depth_kind == "metric"
        mapper = PanopticCentroidDatasetMapper(
            True, augmentations=build_train_augmentations(size=112, min_scale=1.0, max_scale=1.0, flip=False),
            input_size=112, depth=DepthTargets("metric", dataset_name=name))
        x = mapper(dicts[0])
        t = x["targets"]
        assert set(t) == {"depth", "depth_valid"} and t["depth"].shape == (64, 64)
        v = t["depth_valid"]
        assert 0.3 < float(v.float().mean()) < 0.75  # 112 x 84 of 112 x 112 is image; borders have no depth
        np.testing.assert_allclose(t["depth"][v].numpy(), RAW_M, atol=1e-3)  # millimetre PNG
        assert not v[:3].any()  # the rows the Kinect did not measure
    finally:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)


def test_prepare_errors_and_counts(raw_layout, tmp_path, monkeypatch):
    raw, scenes = raw_layout
    with pytest.raises(InvalidSampleError, match=r"d-10\.100000-2002\.pgm: truncated"):
        prepare_nyuv2_raw(str(raw), str(scenes), str(tmp_path / "a"), sample_step=2, strict=True)
    missing = tmp_path / "scenes2.txt"
    missing.write_text("kitchen_0003a\nliving_room_0099\n")
    with pytest.raises(FileNotFoundError, match=r"1 of the 2 scenes .*living_room_0099"):
        prepare_nyuv2_raw(str(raw), str(missing), str(tmp_path / "b"))
    stats = prepare_nyuv2_raw(str(raw), str(missing), str(tmp_path / "c"), allow_missing_scenes=True,
                              sample_step=1, max_time_diff=0.015)
    # kitchen: frame 0 is 0.01 s from its RGB frame, frame 1 0.02 s
    assert stats.missing_scenes == ["living_room_0099"] and stats.written == 1
    assert dict(stats.skipped) == {"RGB too far in time": 1}
    # the frame BTS excludes as faulty is skipped by name
    assert "d-1315166703.129542-2466101449.pgm" in nyu_raw.KNOWN_FAULTY_FRAMES
    monkeypatch.setattr(nyu_raw, "KNOWN_FAULTY_FRAMES", frozenset({"d-20.100000-2001.pgm"}))
    stats = prepare_nyuv2_raw(str(raw), str(missing), str(tmp_path / "d"), allow_missing_scenes=True,
                              sample_step=1, undistort_images=False)
    assert stats.written == 1 and dict(stats.skipped) == {"known faulty frame": 1}
    (tmp_path / "dup.txt").write_text("a\na\n")
    with pytest.raises(ValueError, match=r"dup\.txt:2: duplicate scene 'a'"):
        read_scene_list(str(tmp_path / "dup.txt"))


def _load_tool():
    spec = importlib.util.spec_from_file_location("prepare_nyuv2_raw", ROOT / "datasets" / "prepare_nyuv2_raw.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_tool_cli(raw_layout, tmp_path, capsys):
    raw, scenes = raw_layout
    scenes.write_text("kitchen_0003a\n")
    out = tmp_path / "nyu_cli"
    tool = _load_tool()
    assert tool.main(["--raw-root", str(raw), "--scenes", str(scenes), "--out", str(out), "--sample-step", "1",
                      "--no-undistort"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["written"] == 2 and summary["skipped"] == {} and summary["out"] == str(out)
    assert (out / "splits" / "train.txt").read_text() == "kitchen_0003a__00000\nkitchen_0003a__00001\n"
    with pytest.raises(SystemExit):
        tool.parse_args(["--raw-root", str(raw)])  # --scenes is required
