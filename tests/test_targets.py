"""Tests of pe_panoptic.data.targets: EDS weights (Eq. 5), centroids, dense panoptic targets."""
import math

import numpy as np
import pytest
import torch

from pe_panoptic.encoding import PositionalEncoding
from pe_panoptic.data.targets import (
    eds_weights,
    instance_centroids,
    output_sample_indices,
    panoptic_targets,
    sample_at_output,
    segment_boundaries,
)


# ----------------------------------------------------------------------------- EDS
def test_eds_1d_step_hand_values():
    # boundary pixels are both sides of the step: d = 2, 1, 0, 0, 1, 2; D = 2 -> exp(-d^2 / 4)
    w = eds_weights(np.array([[0, 0, 0, 1, 1, 1]]), D=2.0)
    expected = [math.exp(-1.0), math.exp(-0.25), 1.0, 1.0, math.exp(-0.25), math.exp(-1.0)]
    assert w.dtype == np.float32 and w.shape == (1, 6)
    np.testing.assert_allclose(w[0], expected, rtol=1e-6)


def test_eds_w_min():
    w = eds_weights(np.array([[0, 0, 0, 1, 1, 1]]), D=2.0, w_min=0.5)
    expected = 0.5 + 0.5 * np.array([math.exp(-1.0), math.exp(-0.25), 1.0, 1.0, math.exp(-0.25), math.exp(-1.0)])
    np.testing.assert_allclose(w[0], expected, rtol=1e-6)


def test_eds_pixel_scale_converts_to_input_pixels():
    # one target pixel = 2 input pixels: d = 4, 2, 0, 0, 2, 4 (input px); D = 2 -> exp(-4), exp(-1)
    w = eds_weights(np.array([[0, 0, 0, 1, 1, 1]]), D=2.0, pixel_scale=2.0)
    np.testing.assert_allclose(w[0], [math.exp(-4), math.exp(-1), 1, 1, math.exp(-1), math.exp(-4)], rtol=1e-6)
    # anisotropic (sy, sx): a horizontal step (label changes along rows) only feels sy
    col = np.array([[0], [0], [0], [1], [1], [1]]) * np.ones((1, 3), int)
    w = eds_weights(col, D=2.0, pixel_scale=(2.0, 7.0))
    np.testing.assert_allclose(w[:, 1], [math.exp(-4), math.exp(-1), 1, 1, math.exp(-1), math.exp(-4)], rtol=1e-6)


def test_eds_2d_distance_is_euclidean():
    m = np.zeros((5, 5), int)
    m[2, 2] = 1  # boundary pixels: the center and its 4 neighbours
    b = segment_boundaries(m)
    assert b.sum() == 5 and b[2, 2] and b[1, 2] and b[2, 3] and not b[1, 1]
    w = eds_weights(m, D=1.0)
    # corner (0, 0): nearest boundary pixel is (1, 2) or (2, 1): d^2 = 1 + 4 = 5
    assert w[0, 0] == pytest.approx(math.exp(-5.0), rel=1e-6)
    # (1, 1): nearest boundary (1, 2): d = 1
    assert w[1, 1] == pytest.approx(math.exp(-1.0), rel=1e-6)


@pytest.mark.parametrize("w_min", [0.0, 0.3])
def test_eds_no_boundary_gives_w_min(w_min):
    w = eds_weights(np.full((4, 6), 7), D=20.0, w_min=w_min)
    assert w.shape == (4, 6) and w.dtype == np.float32
    assert np.all(w == np.float32(w_min))


def test_eds_bad_arguments():
    with pytest.raises(ValueError, match="D must be > 0"):
        eds_weights(np.zeros((3, 3), int), D=0.0)
    with pytest.raises(ValueError, match="w_min"):
        eds_weights(np.zeros((3, 3), int), D=1.0, w_min=1.5)
    with pytest.raises(ValueError, match="2-D"):
        eds_weights(np.zeros((2, 3, 3), int), D=1.0)
    with pytest.raises(ValueError, match="pixel_scale"):
        eds_weights(np.zeros((3, 3), int), D=1.0, pixel_scale=0.0)


# ----------------------------------------------------------------------------- centroids
def test_instance_centroids_match_brute_force():
    rng = np.random.default_rng(0)
    pan = rng.choice([0, 3, 17, 1000, 70000], size=(23, 31), p=[0.4, 0.3, 0.2, 0.05, 0.05])
    ids = [17, 3, 1000, 70000, 5]  # 5 is absent
    c = instance_centroids(pan, ids)
    assert c.shape == (5, 2)
    for k, i in enumerate(ids[:4]):
        ys, xs = np.nonzero(pan == i)
        np.testing.assert_allclose(c[k], [xs.mean(), ys.mean()], rtol=1e-12)
    assert np.isnan(c[4]).all()


def test_output_sample_indices():
    # centers of 4 output pixels over 7 input pixels: (j + 0.5) * 1.75 = .875, 2.625, 4.375, 6.125
    np.testing.assert_array_equal(output_sample_indices(7, 4), [0, 2, 4, 6])
    np.testing.assert_array_equal(output_sample_indices(5, 5), [0, 1, 2, 3, 4])
    x = np.arange(49).reshape(7, 7)
    np.testing.assert_array_equal(sample_at_output(x, (4, 4)), x[[0, 2, 4, 6]][:, [0, 2, 4, 6]])


# ----------------------------------------------------------------------------- dense targets
def _two_instance_map():
    """28 x 28 input: instance 11 (rows 2..9, cols 8..13), instance 22 (rows 16..25, cols 15..26),
    stuff 5 (rows 12..14), crowd 33 (rows 0..5, cols 20..27), rest unlabeled."""
    pan = np.zeros((28, 28), np.int64)
    pan[12:15, :] = 5
    pan[2:10, 8:14] = 11
    pan[16:26, 15:27] = 22
    pan[0:6, 20:28] = 33
    segs = [
        dict(id=22, category_id=3, iscrowd=0, isthing=True),
        dict(id=11, category_id=0, iscrowd=0, isthing=True),
        dict(id=5, category_id=7, iscrowd=0, isthing=False),
        dict(id=33, category_id=0, iscrowd=1, isthing=True),
    ]
    return pan, segs


def test_panoptic_targets_classes_centroids_ids():
    pan, segs = _two_instance_map()
    t = panoptic_targets(pan, segs, input_hw=(28, 28), output_hw=(16, 16))
    assert set(t) == {"sem_seg", "inst_uv", "inst_valid", "inst_ids", "inst_weight", "sem_weight"}
    assert t["sem_seg"].dtype == torch.int64 and t["inst_uv"].dtype == torch.float32
    assert t["inst_valid"].dtype == torch.bool and t["inst_ids"].dtype == torch.int64
    assert t["inst_uv"].shape == (2, 16, 16)

    ys = xs = np.array([0, 2, 4, 6, 7, 9, 11, 13, 14, 16, 18, 20, 21, 23, 25, 27])  # floor((j+.5)*1.75)
    sp = pan[ys][:, xs]
    cls = {0: 255, 5: 7, 11: 0, 22: 3, 33: 0}
    np.testing.assert_array_equal(t["sem_seg"].numpy(), np.vectorize(cls.get)(sp))
    np.testing.assert_array_equal(t["inst_valid"].numpy(), (sp == 11) | (sp == 22))
    np.testing.assert_array_equal(t["inst_ids"].numpy(), np.select([sp == 11, sp == 22], [1, 2], 0))
    # centroid of 11: cx = 10.5, cy = 5.5 -> u = 2 * 11 / 28 - 1, v = 2 * 6 / 28 - 1
    # centroid of 22: cx = cy = 20.5 -> u = v = 2 * 21 / 28 - 1
    uv = t["inst_uv"].numpy()
    np.testing.assert_allclose(uv[:, sp == 11], np.array([[22 / 28 - 1], [12 / 28 - 1]]).repeat((sp == 11).sum(), 1), rtol=1e-6)
    np.testing.assert_allclose(uv[:, sp == 22], np.full((2, (sp == 22).sum()), 42 / 28 - 1), rtol=1e-6)
    assert np.all(uv[:, ~((sp == 11) | (sp == 22))] == 0)
    # crowd: ignored by the instance losses, keeps its class for the semantic loss
    assert np.all(t["inst_weight"].numpy()[sp == 33] == 0)
    assert np.all(t["sem_seg"].numpy()[sp == 33] == 0)
    assert np.all(t["sem_weight"].numpy()[sp == 0] == 0)


def test_pe_targets_decode_to_centroid_cells():
    pan, segs = _two_instance_map()
    t = panoptic_targets(pan, segs, input_hw=(28, 28), output_hw=(16, 16))
    enc = PositionalEncoding(4)
    code = enc.targets(t["inst_uv"][None], t["inst_valid"][None])
    dec = enc.decode(code, (7, 7))  # 4 input px per grid cell
    # cell = floor((c + 0.5) * 7 / 28): instance 11 -> (iu, iv) = (floor(2.75), floor(1.5)) = (2, 1)
    # instance 22 -> floor(5.25) = 5 for both
    ids = t["inst_ids"][None]
    assert torch.all(dec.iu[ids == 1] == 2) and torch.all(dec.iv[ids == 1] == 1)
    assert torch.all(dec.iu[ids == 2] == 5) and torch.all(dec.iv[ids == 2] == 5)
    assert torch.equal(dec.void, ~t["inst_valid"][None])


def test_panoptic_targets_eds_hand_values_1d():
    # ids: 0 0 S S I I 0 0 (S = stuff 3, I = thing 5); input == output resolution
    pan = np.array([[0, 0, 3, 3, 5, 5, 0, 0]])
    segs = [dict(id=3, category_id=1, iscrowd=0, isthing=False), dict(id=5, category_id=2, iscrowd=0, isthing=True)]
    t = panoptic_targets(pan, segs, input_hw=(1, 8), output_hw=(1, 8), eds_D=2.0)
    # instance map 0 0 0 0 1 1 0 0: boundary at 3..6, d = 3 2 1 0 0 0 0 1 (stuff/void is one label)
    d_inst = np.array([3, 2, 1, 0, 0, 0, 0, 1.0])
    np.testing.assert_allclose(t["inst_weight"].numpy()[0], np.exp(-d_inst**2 / 4), rtol=1e-6)
    # segment map: every label change is a boundary; unlabeled pixels have sem weight 0
    np.testing.assert_allclose(t["sem_weight"].numpy()[0], [0, 0, 1, 1, 1, 1, 0, 0])
    # include_void=False: only instance pixels keep a weight
    t2 = panoptic_targets(pan, segs, input_hw=(1, 8), output_hw=(1, 8), eds_D=2.0, include_void=False)
    np.testing.assert_allclose(t2["inst_weight"].numpy()[0], [0, 0, 0, 0, 1, 1, 0, 0])


def test_panoptic_targets_pixel_scale_uses_input_pixels():
    # 1 x 14 input -> 1 x 8 output; output pixel centres sample input cols 0,2,4,6,7,9,11,13
    pan = np.zeros((1, 14), np.int64)
    pan[0, 7:] = 5
    segs = [dict(id=5, category_id=2, iscrowd=0, isthing=True)]
    t = panoptic_targets(pan, segs, input_hw=(1, 14), output_hw=(1, 8), eds_D=3.5)
    # output labels 0 0 0 0 1 1 1 1: d (output px) = 3 2 1 0 0 1 2 3, times 1.75 -> input px; D = 3.5
    d = np.array([3, 2, 1, 0, 0, 1, 2, 3]) * 1.75
    np.testing.assert_allclose(t["inst_weight"].numpy()[0], np.exp(-(d / 3.5) ** 2), rtol=1e-6)


def test_panoptic_targets_without_eds():
    pan, segs = _two_instance_map()
    t = panoptic_targets(pan, segs, input_hw=(28, 28), output_hw=(16, 16), use_eds=False)
    sp = pan[output_sample_indices(28, 16)][:, output_sample_indices(28, 16)]
    np.testing.assert_array_equal(t["inst_weight"].numpy(), (sp != 33).astype(np.float32))
    np.testing.assert_array_equal(t["sem_weight"].numpy(), (sp != 0).astype(np.float32))


def test_inst_ids_compact_when_instance_vanishes_at_output():
    pan = np.zeros((7, 7), np.int64)
    pan[0, 1] = 9  # col 1 / row 0 is not under any output pixel centre (cols 0, 2, 4, 6)
    pan[4:, 4:] = 12
    segs = [dict(id=9, category_id=0, iscrowd=0, isthing=True), dict(id=12, category_id=0, iscrowd=0, isthing=True)]
    t = panoptic_targets(pan, segs, input_hw=(7, 7), output_hw=(4, 4))
    assert t["inst_ids"].max() == 1
    np.testing.assert_array_equal(t["inst_ids"].numpy(), np.array([[0, 0, 0, 0]] * 2 + [[0, 0, 1, 1]] * 2))


def test_panoptic_targets_above_input_resolution_paper_v1_decoder():
    """paper_v1's decoder (4 upsamplings) outputs 16/14 of the input: 28 -> 32. Targets are the
    input labels under each output pixel centre (nearest upsampling), centroids from the input,
    and EDS distances still in input pixels."""
    pan, segs = _two_instance_map()
    t = panoptic_targets(pan, segs, input_hw=(28, 28), output_hw=(32, 32))
    same = panoptic_targets(pan, segs, input_hw=(28, 28), output_hw=(28, 28))
    ys = output_sample_indices(28, 32)
    for k in ("sem_seg", "inst_valid", "inst_ids"):
        np.testing.assert_array_equal(t[k].numpy(), same[k].numpy()[ys][:, ys])
    np.testing.assert_array_equal(t["inst_uv"].numpy(), same["inst_uv"].numpy()[:, ys][:, :, ys])
    # 1-D EDS by hand: 1 x 7 input (labels 0 0 0 1 1 1 1) -> 1 x 8 output, D = 2 input px
    pan1 = np.array([[0, 0, 0, 5, 5, 5, 5]])
    t1 = panoptic_targets(pan1, [dict(id=5, category_id=1, iscrowd=0, isthing=True)], input_hw=(1, 7),
                          output_hw=(1, 8), eds_D=2.0)
    # output centres sample input cols 0 1 2 3 3 4 5 6 -> labels 0 0 0 1 1 1 1 1; the distance
    # transform counts 2 1 0 0 1 2 3 4 output px, each 7/8 input px
    np.testing.assert_array_equal(output_sample_indices(7, 8), [0, 1, 2, 3, 3, 4, 5, 6])
    d = np.array([2, 1, 0, 0, 1, 2, 3, 4]) * 7 / 8
    np.testing.assert_allclose(t1["inst_weight"].numpy()[0], np.exp(-(d / 2.0) ** 2), rtol=1e-6)


def test_panoptic_targets_bad_input():
    pan, segs = _two_instance_map()
    with pytest.raises(ValueError, match="not in segments_info"):
        panoptic_targets(pan, segs[1:], input_hw=(28, 28), output_hw=(16, 16))
    with pytest.raises(ValueError, match="expected input_hw"):
        panoptic_targets(pan, segs, input_hw=(28, 30), output_hw=(16, 16))
    with pytest.raises(ValueError, match="isthing"):
        panoptic_targets(pan, [{k: v for k, v in s.items() if k != "isthing"} for s in segs],
                         input_hw=(28, 28), output_hw=(16, 16))
    with pytest.raises(ValueError, match="contiguous"):
        panoptic_targets(pan, [dict(s, category_id=255) for s in segs], input_hw=(28, 28), output_hw=(16, 16))
    with pytest.raises(ValueError, match="integer"):
        panoptic_targets(pan.astype(float), segs, input_hw=(28, 28), output_hw=(16, 16))
