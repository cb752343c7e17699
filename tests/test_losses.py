"""Losses (paper Eq. 1, 4, 6-14; pe_panoptic/modeling/losses/) against hand computations and brute-force loops."""
import math

import pytest
import torch

from pe_panoptic.encoding import BinEncoding, PositionalEncoding, RGBEncoding
from pe_panoptic.modeling.losses import (
    PixelCentroidCriterion,
    affine_invariant_disparity_loss,
    generalized_dice_loss,
    instance_codes_from_targets,
    instance_pe_loss_map,
    semantic_ce_map,
    silog_loss,
    tv_loss_regression,
    tv_loss_semantic,
    weighted_mean,
)

LN = math.log


# ----------------------------------------------------------------------------------- Eq. (1)
def test_weighted_mean_hand_computed():
    loss = torch.tensor([[[1.0, 2.0], [3.0, 4.0]]])
    w = torch.tensor([[[1.0, 0.0], [0.5, 0.5]]])
    # (1*1 + 3*0.5 + 4*0.5) / (1 + 0.5 + 0.5) = 4.5 / 2
    assert weighted_mean(loss, w).item() == pytest.approx(2.25)


def test_weighted_mean_zero_weights_is_zero_with_grad():
    loss = torch.tensor([[[1.0, 2.0], [3.0, 4.0]]], requires_grad=True)
    out = weighted_mean(loss, torch.zeros(1, 2, 2))
    assert out.item() == 0.0 and out.requires_grad
    out.backward()
    assert torch.equal(loss.grad, torch.zeros_like(loss))


def test_weighted_mean_ignores_nan_at_zero_weight():
    loss = torch.tensor([[float("nan"), 2.0, 6.0]], requires_grad=True)
    w = torch.tensor([[0.0, 1.0, 3.0]])
    out = weighted_mean(loss, w)
    assert out.item() == pytest.approx((2.0 + 18.0) / 4.0)
    out.backward()
    assert torch.allclose(loss.grad, torch.tensor([[0.0, 0.25, 0.75]]))


def test_weighted_mean_batch_and_per_image_hand_computed():
    """Eq. (1) over a batch of two images: one ratio over the batch (default) vs the mean of the
    per-image ratios (``normalize="per_image"``)."""
    loss = torch.tensor([[[1.0, 2.0], [3.0, 4.0]],     # image 0
                         [[10.0, 0.0], [0.0, 20.0]]])  # image 1
    w = torch.tensor([[[1.0, 0.0], [0.5, 0.5]],
                      [[0.25, 0.0], [0.0, 0.0]]])
    # batch: (1 + 1.5 + 2 + 2.5) / (1 + 0.5 + 0.5 + 0.25) = 7 / 2.25
    assert weighted_mean(loss, w).item() == pytest.approx(7 / 2.25)
    assert weighted_mean(loss, w, "batch").item() == pytest.approx(7 / 2.25)
    # per image: image 0 = 4.5 / 2 = 2.25, image 1 = 2.5 / 0.25 = 10 -> (2.25 + 10) / 2
    assert weighted_mean(loss, w, normalize="per_image").item() == pytest.approx(6.125)
    # an image without weight (a depth-only image in a mixed batch) is left out of the mean
    w0 = w.clone()
    w0[1] = 0
    loss_nan = loss.clone()
    loss_nan[1, 0, 1] = float("nan")  # and its NaN at zero weight does not leak
    assert weighted_mean(loss_nan, w0, normalize="per_image").item() == pytest.approx(2.25)
    # per image == the mean of one-image batches (data-parallel / accumulation over images)
    g = torch.Generator().manual_seed(0)
    big, bw = torch.rand(3, 4, 5, generator=g), torch.rand(3, 4, 5, generator=g)
    one_by_one = sum(weighted_mean(big[i:i + 1], bw[i:i + 1]) for i in range(3)) / 3
    assert weighted_mean(big, bw, normalize="per_image").item() == pytest.approx(one_by_one.item(), rel=1e-6)
    assert abs(weighted_mean(big, bw).item() - one_by_one.item()) > 1e-4  # the two forms differ


def test_weighted_mean_per_image_gradient_and_empty_batch():
    loss = torch.tensor([[2.0, 6.0], [1.0, 3.0]], requires_grad=True)
    w = torch.tensor([[1.0, 3.0], [0.0, 2.0]])
    out = weighted_mean(loss, w, normalize="per_image")
    assert out.item() == pytest.approx(((2 + 18) / 4 + 6 / 2) / 2)
    out.backward()
    # d/dL_bij = w_bij / sum(w_b) / (number of images with weight)
    assert torch.allclose(loss.grad, torch.tensor([[0.125, 0.375], [0.0, 0.5]]))
    zero = weighted_mean(loss, torch.zeros(2, 2), normalize="per_image")
    assert zero.item() == 0.0 and zero.requires_grad
    with pytest.raises(ValueError, match="normalize must be one of"):
        weighted_mean(loss, w, normalize="image")


def test_weighted_mean_shape_mismatch():
    with pytest.raises(ValueError, match="weighted_mean.*same shape"):
        weighted_mean(torch.zeros(1, 2, 2), torch.zeros(1, 2, 3))


# ----------------------------------------------------------------------------- semantic CE
def test_semantic_ce_map_hand_computed():
    # pixel logits (0, ln 3) -> p = (1/4, 3/4)
    logits = torch.zeros(1, 2, 1, 3)
    logits[0, 1] = LN(3.0)
    labels = torch.tensor([[[0, 1, 255]]])
    ce = semantic_ce_map(logits, labels)
    assert ce.shape == (1, 1, 3)
    assert torch.allclose(ce[0, 0], torch.tensor([LN(4.0), LN(4.0 / 3.0), 0.0]), atol=1e-6)


def test_semantic_ce_map_bad_labels():
    with pytest.raises(ValueError, match=r"labels must be in \[0, 2\)"):
        semantic_ce_map(torch.zeros(1, 2, 1, 2), torch.tensor([[[0, 7]]]))
    with pytest.raises(ValueError, match="spatial"):
        semantic_ce_map(torch.zeros(1, 2, 2, 2), torch.zeros(1, 2, 3, dtype=torch.long))


# ----------------------------------------------------------------------------------- Eq. (4)
def test_pe_code_loss_hand_computed():
    L = 1  # channels: u block 0..1, v block 2..3
    pred = torch.tensor([[3.0, 4.0, 0.0, 0.0], [1.0, 0.0, 0.0, 2.0]]).T.reshape(1, 4, 1, 2)
    target = torch.tensor([[0.0, 0.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0]]).T.reshape(1, 4, 1, 2)
    out = PositionalEncoding(L).code_loss(pred, target)
    # pixel 0: (||(3,4)|| + 0) / 2 = 2.5; pixel 1: (0 + ||(0,2)||) / 2 = 1
    assert torch.allclose(out, torch.tensor([[[2.5, 1.0]]]))


def test_pe_code_loss_is_the_encoding_pixel_loss():
    g = torch.Generator().manual_seed(0)
    enc = PositionalEncoding(4)
    uv = torch.rand(2, 2, 5, 6, generator=g) * 2 - 1
    valid = torch.rand(2, 5, 6, generator=g) > 0.4
    pred = torch.randn(2, 16, 5, 6, generator=g)
    ref = enc.pixel_loss(pred, uv, valid)
    assert torch.equal(enc.code_loss(pred, enc.targets(uv, valid)), ref)
    with pytest.raises(ValueError, match=r"\[B, 12, H, W\]"):
        PositionalEncoding(3).code_loss(pred, pred)
    with pytest.raises(ValueError, match="code_loss"):
        enc.code_loss(pred, pred[:, :, :4])


# ---------------------------------------------------------------------------------- Eq. (10)
def test_tv_regression_hand_computed_2x2():
    pred = torch.zeros(1, 2, 2, 2)
    pred[0, :, 1, 1] = torch.tensor([3.0, 4.0])
    # only pixel (1,1) has both neighbours; both differences are (3, 4)
    assert tv_loss_regression(pred, "l2").item() == pytest.approx(10.0)
    assert tv_loss_regression(pred, "l1").item() == pytest.approx(14.0)
    assert tv_loss_regression(torch.ones(2, 3, 4, 5)).item() == 0.0


def test_tv_regression_brute_force_3x4():
    g = torch.Generator().manual_seed(1)
    y = torch.randn(2, 3, 3, 4, generator=g)
    for norm, ordv in (("l2", 2), ("l1", 1)):
        total, count = 0.0, 0
        for b in range(2):
            for i in range(1, 3):
                for j in range(1, 4):
                    total += torch.linalg.vector_norm(y[b, :, i, j] - y[b, :, i - 1, j], ord=ordv).item()
                    total += torch.linalg.vector_norm(y[b, :, i, j] - y[b, :, i, j - 1], ord=ordv).item()
                    count += 1
        assert tv_loss_regression(y, norm).item() == pytest.approx(total / count, rel=1e-5)


def test_tv_regression_grad_finite_on_flat_regions_and_bad_args():
    y = torch.zeros(1, 4, 3, 3, requires_grad=True)
    tv_loss_regression(y).backward()
    assert torch.isfinite(y.grad).all()
    with pytest.raises(ValueError, match="norm"):
        tv_loss_regression(torch.zeros(1, 1, 2, 2), "l3")
    with pytest.raises(ValueError, match="H, W >= 2"):
        tv_loss_regression(torch.zeros(1, 1, 1, 5))


# ---------------------------------------------------------------------------------- Eq. (11)
def test_tv_semantic_hand_computed_2x2():
    logits = torch.zeros(1, 2, 2, 2)  # P = (1/2, 1/2) everywhere ...
    logits[0, 1, 1, 0] = LN(3.0)  # ... except P_(1,0) = (1/4, 3/4)
    # only pixel (0,0): H(P00, P10) = -(0.5 ln 1/4 + 0.5 ln 3/4), H(P00, P01) = ln 2
    h_down = 0.5 * LN(4.0) + 0.5 * LN(4.0 / 3.0)
    expected = 0.5 * (h_down + LN(2.0))
    assert tv_loss_semantic(logits).item() == pytest.approx(expected, rel=1e-6)


def test_tv_semantic_brute_force_3x4():
    g = torch.Generator().manual_seed(2)
    logits = torch.randn(2, 5, 3, 4, generator=g)
    P = logits.softmax(1)
    total, count = 0.0, 0
    for b in range(2):
        for i in range(2):
            for j in range(3):
                h1 = -(P[b, :, i, j] * P[b, :, i + 1, j].log()).sum().item()
                h2 = -(P[b, :, i, j] * P[b, :, i, j + 1].log()).sum().item()
                total += 0.5 * (h1 + h2)
                count += 1
    assert tv_loss_semantic(logits).item() == pytest.approx(total / count, rel=1e-5)


# ------------------------------------------------------------------------- DICE Eq. (12)-(14)
def _dice_brute_force(pred, ids, codes, L):
    """Literal Eq. (12)-(14): loops over images, instances and pixels."""
    losses = []
    for b in range(pred.shape[0]):
        num = den = 0.0
        n_inst = 0
        for l in range(1, codes[b].shape[0] + 1):
            area = int((ids[b] == l).sum())
            if area == 0:
                continue
            n_inst += 1
            w = 1.0 / area
            c = codes[b][l - 1]
            for i in range(pred.shape[2]):
                for j in range(pred.shape[3]):
                    e = pred[b, :, i, j]
                    dx = torch.linalg.vector_norm(e[: 2 * L] - c[: 2 * L]).item()
                    dy = torch.linalg.vector_norm(e[2 * L :] - c[2 * L :]).item()
                    p = math.exp(-dx * dx) * math.exp(-dy * dy)
                    r = 1.0 if ids[b, i, j] == l else 0.0
                    num += w * r * p
                    den += w * (r + p)
        if n_inst:
            losses.append(1.0 - 2.0 * num / den)
    return sum(losses) / len(losses) if losses else 0.0


def test_dice_hand_computed_one_instance():
    L = 1
    c = torch.tensor([0.0, 1.0, 0.0, 1.0])  # gamma(0) for u and v with L = 1: (sin 0, cos 0)
    ids = torch.tensor([[[1, 0]]])
    # pixel 0 (instance) predicts c, pixel 1 (void) predicts c too: p = (1, 1)
    pred = torch.stack([c, c], 1).reshape(1, 4, 1, 2)
    # num = w * 1 = 1, den = w * (1 + 2) = 3 -> 1 - 2/3
    assert generalized_dice_loss(pred, ids, [c[None]], L).item() == pytest.approx(1.0 / 3.0, rel=1e-6)
    # void pixel predicts the void code 0: d^2 = 1 + 1 -> p = e^-2
    pred[0, :, 0, 1] = 0.0
    expected = 1.0 - 2.0 / (2.0 + math.exp(-2.0))
    assert generalized_dice_loss(pred, ids, [c[None]], L).item() == pytest.approx(expected, rel=1e-6)


def _two_instance_scene(L=4):
    """6x8 image: instance 1 (left, 2x3), instance 2 (right, 3x2), the rest void; a second image
    with no instances."""
    enc = PositionalEncoding(L)
    ids = torch.zeros(2, 6, 8, dtype=torch.long)
    ids[0, 1:3, 0:3] = 1
    ids[0, 2:5, 5:7] = 2
    uv = torch.zeros(2, 2, 6, 8)
    uv[0, :, ids[0] == 1] = torch.tensor([-0.6, -0.3])[:, None]
    uv[0, :, ids[0] == 2] = torch.tensor([0.5, 0.4])[:, None]
    valid = ids > 0
    return enc, ids, uv, valid, enc.targets(uv, valid)


def test_dice_matches_brute_force_random_predictions():
    enc, ids, uv, valid, target = _two_instance_scene()
    g = torch.Generator().manual_seed(3)
    pred = target + 0.4 * torch.randn(target.shape, generator=g)
    codes = instance_codes_from_targets(uv, ids, enc)
    expected = _dice_brute_force(pred, ids, codes, enc.L)  # image 1 has no instance: not averaged
    assert generalized_dice_loss(pred, ids, codes, enc.L).item() == pytest.approx(expected, rel=1e-5)
    # a padded [B, K, C] tensor gives the same value
    padded = torch.stack([codes[0], torch.zeros_like(codes[0])])
    assert generalized_dice_loss(pred, ids, padded, enc.L).item() == pytest.approx(expected, rel=1e-5)


def test_dice_perfect_prediction_near_zero_and_void_instance_code_penalized():
    enc, ids, uv, valid, target = _two_instance_scene()
    codes = instance_codes_from_targets(uv, ids, enc)
    perfect = generalized_dice_loss(target, ids, codes, enc.L).item()
    # void pixels predict 0: p = exp(-2L) = 3.4e-4 there; the two codes are far apart
    assert 0.0 <= perfect < 5e-3
    assert perfect == pytest.approx(_dice_brute_force(target, ids, codes, enc.L), rel=1e-4, abs=1e-7)
    # a void region that predicts instance 1's code counts like 4 extra pixels of instance 1:
    # num = 2, den ~ 2 + (6 + 4) / 6 + 6 / 6 -> loss ~ 1 - 4 / (4 + 4/6) = 1/7
    bad = target.clone()
    bad[0, :, 4:6, 0:2] = codes[0][0][:, None, None]
    loss_bad = generalized_dice_loss(bad, ids, codes, enc.L).item()
    assert loss_bad == pytest.approx(1.0 / 7.0, abs=2e-3)
    assert loss_bad > perfect + 0.1


def test_dice_gradient_flows_and_descends():
    enc, ids, uv, valid, target = _two_instance_scene()
    codes = instance_codes_from_targets(uv, ids, enc)
    pred = target.clone()
    # void pixels predict (nearly) instance 1's code; not exactly: exp(-d^2) is flat at d = 0
    noise = 0.2 * torch.randn(16, 2, 2, generator=torch.Generator().manual_seed(6))
    pred[0, :, 4:6, 0:2] = codes[0][0][:, None, None] + noise
    pred.requires_grad_(True)
    loss = generalized_dice_loss(pred, ids, codes, enc.L)
    loss.backward()
    g = pred.grad
    assert torch.isfinite(g).all()
    assert g[0, :, 4:6, 0:2].abs().sum() > 1e-3  # the offending void pixels get pushed away
    assert g[1].abs().sum() == 0  # image without instances contributes nothing
    with torch.no_grad():
        stepped = generalized_dice_loss(pred - 0.5 * g / g.norm(), ids, codes, enc.L)
    assert stepped < loss


def test_dice_no_instances_is_zero_with_grad_and_pixel_mask():
    enc, ids, uv, valid, target = _two_instance_scene()
    pred = target.clone().requires_grad_(True)
    out = generalized_dice_loss(pred, torch.zeros_like(ids), [torch.zeros(0, 16)] * 2, 4)
    assert out.item() == 0.0
    out.backward()
    assert torch.equal(pred.grad, torch.zeros_like(pred))
    # a pixel_mask that hides the offending void region gives back the perfect-prediction value
    codes = instance_codes_from_targets(uv, ids, enc)
    bad = target.clone()
    bad[0, :, 4:6, 0:2] = codes[0][0][:, None, None]
    mask = torch.ones_like(ids, dtype=torch.bool)
    mask[:, 4:6, 0:2] = False
    masked = generalized_dice_loss(bad, ids, codes, 4, pixel_mask=mask).item()
    assert masked < 5e-3


def test_dice_bad_inputs():
    enc, ids, uv, valid, target = _two_instance_scene()
    codes = instance_codes_from_targets(uv, ids, enc)
    with pytest.raises(ValueError, match=r"inst_ids must lie in \[0, K_b\]"):
        generalized_dice_loss(target, ids, [codes[0][:1], codes[1]], 4)
    with pytest.raises(ValueError, match="2 entries|1 entries"):
        generalized_dice_loss(target, ids, codes[:1], 4)
    with pytest.raises(ValueError, match="4L = 12"):
        generalized_dice_loss(target, ids, codes, 3)


def test_instance_codes_from_targets():
    enc, ids, uv, valid, target = _two_instance_scene()
    codes = instance_codes_from_targets(uv, ids, enc)
    assert [tuple(c.shape) for c in codes] == [(2, 16), (0, 16)]
    expected = enc.encode(torch.tensor([[-0.6, -0.3], [0.5, 0.4]]))
    assert torch.allclose(codes[0], expected)
    # ids with a gap: id 2 absent -> a placeholder row, K_b = max id
    ids2 = ids.clone()
    ids2[ids2 == 2] = 3
    codes2 = instance_codes_from_targets(uv, ids2, enc)
    assert codes2[0].shape == (3, 16)
    assert torch.allclose(codes2[0][2], expected[1])


# ------------------------------------------------------------------------ depth Eq. (6)-(9)
def test_affine_invariant_hand_computed():
    gt = torch.tensor([[[0.0, 1.0, 2.0]]])  # t = 1, s = 2/3 -> (-1.5, 0, 1.5)
    pred = torch.tensor([[[0.0, 0.0, 3.0]]])  # t = 0, s = 1 -> (0, 0, 3)
    valid = torch.ones(1, 1, 3, dtype=torch.bool)
    assert affine_invariant_disparity_loss(pred, gt, valid).item() == pytest.approx(1.0)
    # an invalid NaN label and an invalid pixel do not change it; [B,1,H,W] layout accepted
    gt4 = torch.tensor([[[[0.0, 1.0, 2.0, float("nan")]]]])
    pred4 = torch.tensor([[[[0.0, 0.0, 3.0, 100.0]]]], requires_grad=True)
    valid4 = torch.tensor([[[[True, True, True, False]]]])
    out = affine_invariant_disparity_loss(pred4, gt4, valid4)
    assert out.item() == pytest.approx(1.0)
    out.backward()
    assert torch.isfinite(pred4.grad).all() and pred4.grad[0, 0, 0, 3] == 0


def test_affine_invariant_invariance_and_batch_mean():
    g = torch.Generator().manual_seed(4)
    pred = torch.rand(3, 6, 7, generator=g)
    gt = torch.rand(3, 6, 7, generator=g)
    valid = torch.rand(3, 6, 7, generator=g) > 0.3
    base = affine_invariant_disparity_loss(pred, gt, valid)
    assert base.item() > 0.1
    assert affine_invariant_disparity_loss(2.5 * pred + 0.7, gt, valid).item() == pytest.approx(base.item(), rel=1e-5)
    assert affine_invariant_disparity_loss(pred, 0.3 * gt - 4.0, valid).item() == pytest.approx(base.item(), rel=1e-5)
    assert affine_invariant_disparity_loss(gt * 3 + 1, gt, valid).item() == pytest.approx(0.0, abs=1e-5)
    # an image without valid pixels is left out of the mean
    per_image = [affine_invariant_disparity_loss(pred[i : i + 1], gt[i : i + 1], valid[i : i + 1]).item() for i in range(3)]
    v2 = valid.clone()
    v2[1] = False
    out = affine_invariant_disparity_loss(pred, gt, v2)
    assert out.item() == pytest.approx((per_image[0] + per_image[2]) / 2, rel=1e-5)
    assert base.item() == pytest.approx(sum(per_image) / 3, rel=1e-5)


def test_silog_hand_computed_and_invariance():
    pred = torch.tensor([[[math.e, 1.0]]])
    gt = torch.ones(1, 1, 2)
    valid = torch.ones(1, 1, 2, dtype=torch.bool)
    # d = (1, 0): mean d^2 = 0.5, mean d = 0.5 -> 0.5 - 0.5 * 0.25
    assert silog_loss(pred, gt, valid).item() == pytest.approx(0.375, rel=1e-6)
    assert silog_loss(pred, gt, valid, lam=1.0).item() == pytest.approx(0.25, rel=1e-6)
    g = torch.Generator().manual_seed(5)
    p = torch.rand(2, 5, 5, generator=g) + 0.1
    t = torch.rand(2, 5, 5, generator=g) + 0.1
    v = torch.rand(2, 5, 5, generator=g) > 0.2
    base = silog_loss(p, t, v, lam=1.0).item()
    assert base > 0.01
    assert silog_loss(3.7 * p, t, v, lam=1.0).item() == pytest.approx(base, rel=1e-4)
    assert silog_loss(3.7 * p, t, v, lam=0.5).item() != pytest.approx(silog_loss(p, t, v, lam=0.5).item(), rel=1e-3)
    with pytest.raises(ValueError, match="gt_depth must be > 0"):
        silog_loss(p, torch.zeros_like(t), v)


def test_depth_no_valid_pixels_zero_with_grad():
    pred = torch.rand(2, 3, 3, requires_grad=True)
    none = torch.zeros(2, 3, 3, dtype=torch.bool)
    for fn in (affine_invariant_disparity_loss, silog_loss):
        out = fn(pred, torch.ones(2, 3, 3), none)
        assert out.item() == 0.0
        out.backward()
        assert torch.equal(pred.grad, torch.zeros_like(pred))
        pred.grad = None


# ------------------------------------------------------------------------------- criterion
def _batch(enc, num_classes=3, depth=False, seed=0):
    g = torch.Generator().manual_seed(seed)
    _, ids, uv, valid, _ = _two_instance_scene()
    B, H, W = ids.shape
    sem = torch.randint(0, num_classes, (B, H, W), generator=g)
    sem[:, 0, 0] = 255
    targets = {
        "sem_seg": sem,
        "sem_weight": (sem != 255).float() * torch.rand(B, H, W, generator=g),
        "inst_uv": uv,
        "inst_valid": valid,
        "inst_ids": ids,
        "inst_weight": torch.rand(B, H, W, generator=g),
    }
    outputs = {
        "sem_logits": torch.randn(B, num_classes, H, W, generator=g, requires_grad=True),
        "inst": torch.randn(B, enc.num_channels, H, W, generator=g, requires_grad=True),
    }
    if depth:
        targets["depth"] = torch.rand(B, H, W, generator=g) + 0.5
        targets["depth_valid"] = torch.rand(B, H, W, generator=g) > 0.2
        outputs["depth"] = (torch.rand(B, 1, H, W, generator=g) + 0.5).requires_grad_(True)
    return outputs, targets


def test_criterion_keys_per_task():
    enc = PositionalEncoding(4)
    outputs, targets = _batch(enc, depth=True)
    crit = PixelCentroidCriterion(enc, num_classes=3)
    assert set(crit(outputs, targets, {"inst"})) == {"loss_inst", "loss_inst_tv", "loss_inst_dice"}
    assert set(crit(outputs, targets, {"sem"})) == {"loss_sem", "loss_sem_tv"}
    assert set(crit(outputs, targets, {"depth"})) == {"loss_depth"}
    assert len(crit(outputs, targets, {"sem", "inst", "depth"})) == 6
    assert crit(outputs, targets, set()) == {}
    no_aux = PixelCentroidCriterion(enc, num_classes=3, use_tv=False, dice_weight=0.0)
    assert set(no_aux(outputs, targets, {"sem", "inst"})) == {"loss_sem", "loss_inst"}
    # encodings without TV / DICE support
    for other, keys in ((RGBEncoding(), {"loss_inst", "loss_inst_tv"}), (BinEncoding(8), {"loss_inst"})):
        o, t = _batch(other)
        assert set(PixelCentroidCriterion(other, num_classes=3)(o, t, {"inst"})) == keys


def test_criterion_normalize_option():
    """``loss.normalize`` reaches every Eq. (1) term of the criterion; "batch" is the default."""
    enc = PositionalEncoding(4)
    outputs, t = _batch(enc)
    default = PixelCentroidCriterion(enc, num_classes=3, use_tv=False, dice_weight=0.0)
    per_image = PixelCentroidCriterion(enc, num_classes=3, use_tv=False, dice_weight=0.0, normalize="per_image")
    assert default.normalize == "batch" and "normalize=per_image" in repr(per_image)
    a, b = default(outputs, t, {"sem", "inst"}), per_image(outputs, t, {"sem", "inst"})
    ce = semantic_ce_map(outputs["sem_logits"], t["sem_seg"])
    pe = enc.pixel_loss(outputs["inst"], t["inst_uv"], t["inst_valid"])
    for key, loss_map, w in (("loss_sem", ce, t["sem_weight"]), ("loss_inst", pe, t["inst_weight"])):
        loss_map, B = loss_map.detach(), loss_map.shape[0]
        by_hand = sum(float((loss_map[i] * w[i]).sum() / w[i].sum()) for i in range(B)) / B
        assert b[key].item() == pytest.approx(by_hand, rel=1e-5), key
        assert a[key].item() == pytest.approx(float((loss_map * w).sum() / w.sum()), rel=1e-5), key
    with pytest.raises(ValueError, match="normalize must be one of"):
        PixelCentroidCriterion(enc, num_classes=3, normalize="pixels")


def test_criterion_values_are_the_weighted_pure_losses():
    enc = PositionalEncoding(4)
    outputs, t = _batch(enc, depth=True)
    crit = PixelCentroidCriterion(enc, num_classes=3, sem_weight=2.0, inst_weight=3.0, tv_weight=0.1,
                                  dice_weight=0.5, depth_weight=4.0, depth_loss="silog")
    out = crit(outputs, t, {"sem", "inst", "depth"})
    sem, inst = outputs["sem_logits"], outputs["inst"]
    exp_sem = 2.0 * weighted_mean(semantic_ce_map(sem, t["sem_seg"]), t["sem_weight"])
    exp_inst = 3.0 * weighted_mean(enc.pixel_loss(inst, t["inst_uv"], t["inst_valid"]), t["inst_weight"])
    codes = instance_codes_from_targets(t["inst_uv"], t["inst_ids"], enc)
    assert out["loss_sem"].item() == pytest.approx(exp_sem.item(), rel=1e-6)
    assert out["loss_sem_tv"].item() == pytest.approx(0.1 * tv_loss_semantic(sem).item(), rel=1e-6)
    assert out["loss_inst"].item() == pytest.approx(exp_inst.item(), rel=1e-6)
    assert out["loss_inst_tv"].item() == pytest.approx(0.1 * tv_loss_regression(inst, "l2").item(), rel=1e-6)
    exp_dice = 0.5 * generalized_dice_loss(inst, t["inst_ids"], codes, 4).item()
    assert out["loss_inst_dice"].item() == pytest.approx(exp_dice, rel=1e-6)
    exp_depth = 4.0 * silog_loss(outputs["depth"], t["depth"], t["depth_valid"], 0.5).item()
    assert out["loss_depth"].item() == pytest.approx(exp_depth, rel=1e-6)
    # the RGB encoding's TV uses the L1 norm of its main loss
    rgb = RGBEncoding()
    o, t2 = _batch(rgb)
    tv = PixelCentroidCriterion(rgb, num_classes=3)(o, t2, {"inst"})["loss_inst_tv"]
    assert tv.item() == pytest.approx(0.1 * tv_loss_regression(o["inst"], "l1").item(), rel=1e-6)


def test_criterion_total_backpropagates_under_bf16_autocast():
    enc = PositionalEncoding(4)
    _, targets = _batch(enc, depth=True)
    B, H, W = targets["inst_ids"].shape
    torch.manual_seed(0)
    head = torch.nn.Conv2d(4, 3 + 16 + 1, 1)
    x = torch.randn(B, 4, H, W)
    crit = PixelCentroidCriterion(enc, num_classes=3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = head(x)
        assert y.dtype == torch.bfloat16
        outputs = {"sem_logits": y[:, :3], "inst": y[:, 3:19], "depth": y[:, 19:].sigmoid()}
        losses = crit(outputs, targets, {"sem", "inst", "depth"})
    assert all(v.dtype == torch.float32 and v.dim() == 0 and torch.isfinite(v) for v in losses.values())
    total = sum(losses.values())
    total.backward()
    assert head.weight.grad is not None and torch.isfinite(head.weight.grad).all()
    assert head.weight.grad.abs().sum() > 0
    # same numbers as computing from the bf16 outputs upcast outside autocast
    ref = crit({k: v.detach().float() for k, v in outputs.items()}, targets, {"sem", "inst", "depth"})
    for k in losses:
        assert losses[k].item() == pytest.approx(ref[k].item(), rel=1e-5)


def test_criterion_bad_inputs():
    enc = PositionalEncoding(4)
    outputs, targets = _batch(enc)
    crit = PixelCentroidCriterion(enc, num_classes=3)
    with pytest.raises(ValueError, match="unknown tasks"):
        crit(outputs, targets, {"panoptic"})
    with pytest.raises(KeyError, match="depth"):
        crit(outputs, targets, {"depth"})
    with pytest.raises(ValueError, match=r"sem_logits'\] must be \[B, 5"):
        PixelCentroidCriterion(enc, num_classes=5)(outputs, targets, {"sem"})
    with pytest.raises(ValueError, match="depth_loss"):
        PixelCentroidCriterion(enc, num_classes=3, depth_loss="l1")
    with pytest.raises(ValueError, match=r"outputs\['inst'\] must be \[B, 3"):
        PixelCentroidCriterion(RGBEncoding(), num_classes=3)(outputs, targets, {"inst"})


# ------------------------------------------------ direct offset loss (not in the paper; a switch)
def test_offset_l1_map_hand_computed():
    from pe_panoptic.modeling.losses import offset_l1_map

    # 1 x 2 map: pixel centres u = -0.5, 0.5 (grid_centers(2)), v = 0 (grid_centers(1))
    offset = torch.tensor([[[[0.25, -0.5]], [[0.1, 0.0]]]])  # du, dv
    uv = torch.tensor([[[[0.0, 0.0]], [[0.3, 0.3]]]])  # target centroid (0, 0.3) at both pixels
    valid = torch.tensor([[[True, False]]])
    got = offset_l1_map(offset, uv, valid)
    # pixel 0: |-0.5 + 0.25 - 0| + |0 + 0.1 - 0.3| = 0.25 + 0.2; pixel 1: void -> 0
    torch.testing.assert_close(got, torch.tensor([[[0.45, 0.0]]]))
    with pytest.raises(ValueError, match=r"offset_l1_map: offset must be \[B, 2, H, W\]"):
        offset_l1_map(torch.zeros(1, 3, 1, 2), torch.zeros(1, 3, 1, 2), valid)


def test_criterion_offset_weight_adds_the_direct_offset_loss():
    from pe_panoptic.modeling.losses import offset_l1_map

    torch.manual_seed(0)
    enc = PositionalEncoding(2)
    B, H, W = 2, 4, 5
    uv = torch.rand(B, 2, H, W) * 2 - 1
    valid = torch.rand(B, H, W) > 0.3
    weight = torch.rand(B, H, W)
    offset = torch.randn(B, 2, H, W) * 0.1
    outputs = {"inst": torch.randn(B, 8, H, W), "inst_offset": offset}
    targets = {"inst_uv": uv, "inst_valid": valid, "inst_weight": weight, "inst_ids": valid.long()}
    crit = PixelCentroidCriterion(enc, num_classes=3, tv_weight=0.0, dice_weight=0.0, offset_weight=2.0)
    losses = crit(outputs, targets, {"inst"})
    want = 2.0 * (weight * offset_l1_map(offset, uv, valid)).sum() / weight.sum()
    assert losses["loss_inst_offset"].item() == pytest.approx(want.item(), rel=1e-6)
    # off by default; and a model without the offset head fails with the key named
    assert "loss_inst_offset" not in PixelCentroidCriterion(enc, num_classes=3)(outputs, targets, {"inst"})
    with pytest.raises(KeyError, match="inst_offset"):
        crit({"inst": outputs["inst"]}, targets, {"inst"})


def test_instance_pe_loss_map_is_the_encoding_code_loss_with_checks():
    g = torch.Generator().manual_seed(2)
    pred = torch.randn(2, 16, 5, 6, generator=g)
    target = torch.randn(2, 16, 5, 6, generator=g)
    assert torch.equal(instance_pe_loss_map(pred, target, 4), PositionalEncoding(4).code_loss(pred, target))
    with pytest.raises(ValueError, match="4L = 12"):
        instance_pe_loss_map(pred, pred, 3)
