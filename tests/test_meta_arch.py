"""PixelCentroidHead end to end on tiny models: losses in training, detectron2 outputs at the
original image size in inference, declared tasks, a pure forward, configuration errors."""
import pathlib
import re

import numpy as np
import pytest
import torch

from pe_panoptic.modeling.backbone import DINOv2Backbone
from pe_panoptic.modeling.decoder import TransposedConvDecoder
from pe_panoptic.modeling.meta_arch import DIAG_PREFIX, PixelCentroidHead, split_diagnostics
from pe_panoptic.data.targets import panoptic_targets

TINY = dict(embed_dim=48, depth=2, num_heads=2)


def tiny_model(**kw):
    torch.manual_seed(0)
    backbone = DINOv2Backbone("vit_small_patch14_dinov2", out_indices=(0, 1), img_size=56, model_kwargs=TINY)
    decoder = TransposedConvDecoder(in_channels=2 * 48, width=16, num_upsample=3)
    args = dict(backbone=backbone, decoder=decoder, decoder_width=16, num_classes=3, thing_ids=[0, 1],
                postprocess=dict(grid=(16, 16)))
    args.update(kw)
    return PixelCentroidHead(**args)


def sample(h=56, w=56, seed=0, out_num=8):
    rng = np.random.RandomState(seed)
    pan = np.zeros((h, w), np.int64)
    pan[:, : w // 2] = 3  # stuff (class 2)
    pan[5:20, 30:50] = 1  # thing class 0
    pan[30:50, 30:45] = 2  # thing class 1
    info = [dict(id=1, category_id=0, iscrowd=0, isthing=True), dict(id=2, category_id=1, iscrowd=0, isthing=True),
            dict(id=3, category_id=2, iscrowd=0, isthing=False)]
    tg = panoptic_targets(pan, info, input_hw=(h, w), output_hw=(h * out_num // 14, w * out_num // 14))
    img = torch.from_numpy(rng.randint(0, 255, (3, h, w)).astype(np.uint8))
    return {"image": img, "height": h, "width": w, "targets": tg, "file_name": f"img{seed}"}


def test_training_returns_finite_losses_and_backpropagates():
    plain = tiny_model().train()
    assert all(k.startswith("loss_") for k in plain([sample(seed=0)])), "diagnostics are off by default"
    model = tiny_model(diagnostics=True).train()
    losses, diag = split_diagnostics(model([sample(seed=0), sample(seed=1)]))
    assert {"loss_sem", "loss_inst", "loss_inst_dice", "loss_inst_tv", "loss_sem_tv"} <= set(losses)
    assert all(k.startswith("loss_") for k in losses)
    # the PE code diagnostics: detached scalars next to the losses, never to be summed into them
    assert {"diag/inst/norm", "diag/inst/cos_u0", "diag/inst/cos_v3"} <= set(diag)
    assert all(v.dim() == 0 and not v.requires_grad and torch.isfinite(v) for v in diag.values())
    total = sum(losses.values())
    assert torch.isfinite(total)
    total.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None for g in grads), "every parameter (all heads too) must receive a gradient"
    assert any(g.abs().sum() > 0 for g in grads)


def test_instances_only_stage_and_declared_tasks():
    model = tiny_model(tasks=("inst",)).train()
    assert not any(k.startswith("loss_sem") for k in model([sample()]))
    model = tiny_model().train()
    sem_only = model([dict(sample(), tasks=("sem",)), dict(sample(seed=1), tasks=("sem",))])
    assert {"loss_sem", "loss_sem_tv"} == set(sem_only)  # no instance loss, no instance diagnostics
    inst_only = model([dict(sample(), tasks=("inst",))])
    assert "loss_inst" in inst_only and not any(k.startswith("loss_sem") for k in inst_only)
    assert set(model([dict(sample(), tasks=())])) == {"loss_zero"}  # the step's task has no labels here
    with pytest.raises(ValueError, match="does not train"):
        model([dict(sample(), tasks=("depth",))])
    with pytest.raises(ValueError, match="declare 'tasks'"):
        model([dict(sample(), tasks=("sem",)), sample(seed=1)])


def test_modeling_does_not_talk_to_the_trainer():
    root = pathlib.Path(__file__).resolve().parents[1] / "pe_panoptic" / "modeling"
    bad = re.compile(r"^\s*(from|import)\s+(detectron2\.utils\.events|pe_panoptic\.engine)\b"
                     r"|get_event_storage|set_train_step", re.M)
    offenders = [f"{p.relative_to(root.parent)}: {m.group(0).strip()}"
                 for p in sorted(root.rglob("*.py")) for m in bad.finditer(p.read_text())]
    assert not offenders, offenders


def test_forward_is_a_pure_function_of_the_batch():
    from detectron2.utils.events import _CURRENT_STORAGE_STACK

    assert not _CURRENT_STORAGE_STACK  # no EventStorage, no trainer
    model = tiny_model(diagnostics=True).train()
    batch = [sample(seed=0), sample(seed=1)]
    params = {k: v.clone() for k, v in model.named_parameters()}
    first = model(batch)
    second = model(batch)
    assert first.keys() == second.keys() and any(k.startswith(DIAG_PREFIX) for k in first)
    for k in first:
        assert torch.equal(first[k], second[k]), k
    assert all(torch.equal(v, dict(model.named_parameters())[k]) for k, v in params.items())


def test_inference_outputs_at_original_size_with_padding():
    model = tiny_model().eval()
    # 50x64 image (not a multiple of 14): padded to 56x70 inside the model, outputs at 100x128
    img = torch.randint(0, 255, (3, 50, 64), dtype=torch.uint8)
    out = model([{"image": img, "height": 100, "width": 128}])[0]
    assert out["sem_seg"].shape == (100, 128) and out["sem_seg"].dtype == torch.long  # the class map
    assert 0 <= int(out["sem_seg"].min()) and int(out["sem_seg"].max()) < 3
    seg, info = out["panoptic_seg"]
    assert seg.shape == (100, 128) and seg.dtype == torch.int32
    ids = set(torch.unique(seg).tolist()) - {0}
    assert ids == {s["id"] for s in info}
    for s in info:
        assert s["area"] == int((seg == s["id"]).sum())


def test_config_errors_are_clear():
    with pytest.raises(ValueError, match="tasks"):
        tiny_model(tasks=("sem", "panoptic"))
    with pytest.raises(ValueError, match="semantic_output"):
        tiny_model(semantic_output="logits")
    with pytest.raises(ValueError, match="depth=True"):
        tiny_model(tasks=("sem", "depth"))
    with pytest.raises(ValueError, match="dataset_name"):
        tiny_model(num_classes=None)
    with pytest.raises(ValueError, match="moved to the train loader: set dataloader.train.task_probs"):
        tiny_model(task_probs={"inst": 1.0})
    model = tiny_model().train()
    with pytest.raises(ValueError, match="targets"):
        model([{"image": torch.zeros(3, 56, 56, dtype=torch.uint8)}])


def test_output_stride_mismatch_is_reported():
    # paper_v1 decoder (4 upsamplings: output 16/14 of the input) with targets made for 8/14
    backbone = DINOv2Backbone("vit_small_patch14_dinov2", out_indices=(0, 1), img_size=56, model_kwargs=TINY)
    decoder = TransposedConvDecoder(in_channels=96, width=16, num_upsample=4)
    model = PixelCentroidHead(backbone=backbone, decoder=decoder, decoder_width=16, num_classes=3,
                              thing_ids=[0, 1]).train()
    with pytest.raises(ValueError, match="output_stride must be 0.875"):
        model([sample()])


def test_paper_v1_decoder_trains_and_infers():
    """paper_v1's decoder: 4 upsamplings, output 16/14 of the input (64 x 64 for 56 x 56), with
    targets built at that size (mapper output_stride = 14/16)."""
    backbone = DINOv2Backbone("vit_small_patch14_dinov2", out_indices=(0, 1), img_size=56, model_kwargs=TINY)
    decoder = TransposedConvDecoder(in_channels=96, width=16, num_upsample=4)
    model = PixelCentroidHead(backbone=backbone, decoder=decoder, decoder_width=16, num_classes=3,
                              thing_ids=[0, 1], postprocess=dict(grid=(16, 16))).train()
    batch = [sample(seed=0, out_num=16), sample(seed=1, out_num=16)]
    assert tuple(batch[0]["targets"]["sem_seg"].shape) == (64, 64)
    losses = model(batch)
    total = sum(losses.values())
    assert torch.isfinite(total)
    total.backward()
    assert all(p.grad is not None for p in model.decoder.parameters())
    out = model.eval()([{"image": batch[0]["image"], "height": 70, "width": 70}])[0]
    seg, info = out["panoptic_seg"]
    assert tuple(seg.shape) == (70, 70) and tuple(out["sem_seg"].shape) == (70, 70)


def test_inference_pastes_only_the_unpadded_region():
    """A mapper that already padded the image (to a multiple of 14) reports image_size_unpadded:
    only that region of the output may be stretched to the original size."""
    import torch.nn.functional as F

    model = tiny_model().eval()
    img = torch.zeros(3, 56, 70, dtype=torch.uint8)
    img[:, :42, :56] = torch.randint(0, 255, (3, 42, 56), dtype=torch.uint8)  # 42x56 image + black pad
    out = model([{"image": img, "height": 84, "width": 112, "image_size_unpadded": (42, 56)}])[0]
    with torch.no_grad():
        raw = model.forward_features(model.preprocess_image([{"image": img}]).tensor)
    crop = raw["sem_logits"][0, :, :24, :32]  # 42 x 56 input -> 24 x 32 output (8 / 14)
    want = F.interpolate(crop[None], size=(84, 112), mode="bilinear", align_corners=False)[0]
    assert torch.equal(out["sem_seg"], want.argmax(0))
    # detectron2's [N, H, W] probabilities on request
    model.semantic_output = "probs"
    out = model([{"image": img, "height": 84, "width": 112, "image_size_unpadded": (42, 56)}])[0]
    assert torch.allclose(out["sem_seg"], want.softmax(0), atol=1e-5)


def test_a_batch_of_mixed_sizes_predicts_what_batch_1_predicts():
    """Padding a smaller image to a larger one's size changes its prediction (the ViT attends to
    the padded tokens): inference runs one forward pass per padded size, so each image of a
    mixed-size batch gets exactly its batch-1 result, and images of one size share a pass."""
    model = tiny_model().eval()
    gen = torch.Generator().manual_seed(3)
    imgs = [torch.randint(0, 255, (3, h, w), dtype=torch.uint8, generator=gen)
            for h, w in ((56, 56), (30, 41), (84, 70), (42, 42), (50, 56))]
    batch = [{"image": im, "height": im.shape[1], "width": im.shape[2]} for im in imgs]
    # (30, 41) and (42, 42) pad to 42 x 42; (50, 56) and (56, 56) to 56 x 56
    assert model.size_groups(batch) == [[0, 4], [1, 3], [2]]
    calls = []
    original = model.forward_features
    model.forward_features = lambda x: calls.append(tuple(x.shape)) or original(x)
    together = model(batch)
    assert calls == [(2, 3, 56, 56), (2, 3, 42, 42), (1, 3, 84, 70)]
    for x, got in zip(batch, together):
        alone = model([x])[0]
        assert torch.equal(got["sem_seg"], alone["sem_seg"])
        assert torch.equal(got["panoptic_seg"][0], alone["panoptic_seg"][0])
        drop = lambda info: [{k: v for k, v in s.items() if k != "score"} for s in info]  # noqa: E731
        assert drop(got["panoptic_seg"][1]) == drop(alone["panoptic_seg"][1])
        # scores are means over the segment: equal up to the summation order of a batch of 2
        assert [s.get("score") for s in got["panoptic_seg"][1]] == pytest.approx(
            [s.get("score") for s in alone["panoptic_seg"][1]], rel=1e-6)
    # what padding to the batch's largest size would have done instead: a different prediction
    with torch.no_grad():
        padded = model.forward_features(model.preprocess_image(batch).tensor)["sem_logits"][1, :, :17, :24]
        own = model.forward_features(model.preprocess_image([batch[1]]).tensor)["sem_logits"][0, :, :17, :24]
    assert not torch.allclose(padded, own, atol=1e-3)
