"""EoMT in the harness (issue 20, item 1): pe_panoptic.baselines.eomt against transformers'
EomtForUniversalSegmentation (logits) and post_process_panoptic_segmentation (panoptic maps), the
checkpoint key maps (hub / transformers and tue-mps/eomt layouts), the mask-annealing hook, both
configs, training + --eval-only through tools/train_net.py, and tools/compare.py --entries."""
import json
import os
import subprocess
import sys

import pytest
import torch

from pe_panoptic.baselines.eomt import EoMT
from pe_panoptic.baselines.eomt_annealing import MaskAnnealingHook, annealed_prob, staggered_windows
from pe_panoptic.baselines.eomt_inference import panoptic_inference
from pe_panoptic.baselines.eomt_weights import detect_eomt_layout, load_eomt_checkpoint
from pe_panoptic.baselines.mask2former import build_mask2former_criterion
from pe_panoptic.modeling.backbone import DINOv2Backbone

transformers = pytest.importorskip("transformers")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SYN_CFG = os.path.join(ROOT, "configs/baselines/eomt_dinov2_vits_synthetic.py")
COCO_CFG = os.path.join(ROOT, "configs/baselines/eomt_vitl_coco.py")
WEIGHTS_DIR = os.environ.get("PE_PANOPTIC_WEIGHTS") or os.path.join(ROOT, "weights")
VITS_WEIGHTS = os.path.join(WEIGHTS_DIR, "dinov2_vits14_pretrain.pth")
TINY = dict(depth=4, embed_dim=48, num_heads=3)


def _ours(model_name, num_blocks=2, num_queries=5, num_classes=3, img=56):
    bb = DINOv2Backbone(model_name, out_indices=[TINY["depth"] - 1], img_size=img, model_kwargs=TINY)
    return EoMT(backbone=bb, num_classes=num_classes, num_queries=num_queries, num_blocks=num_blocks,
                criterion=build_mask2former_criterion(num_classes, decoder_layers=num_blocks, train_num_points=64),
                metadata=None)


def _hf(registers, num_blocks=2, num_queries=5, num_classes=3, img=56):
    cfg = transformers.EomtConfig(hidden_size=48, num_hidden_layers=4, num_attention_heads=3, image_size=img,
                                  patch_size=14, num_blocks=num_blocks, num_queries=num_queries,
                                  num_register_tokens=registers, num_labels=num_classes, num_upscale_blocks=1,
                                  layerscale_value=0.7)
    return transformers.EomtForUniversalSegmentation(cfg)


@pytest.mark.parametrize("model_name,registers", [("vit_small_patch14_reg4_dinov2", 4), ("vit_small_patch14_dinov2", 0)])
def test_logits_equal_transformers_eomt(model_name, registers):
    """Same weights (transformers' random init, copied through the hub key map): class and mask
    logits equal to <= 1e-4 with masked attention on (p = 1) and off (p = 0), in every block."""
    torch.manual_seed(0)
    hf, ours = _hf(registers).eval(), _ours(model_name).eval()
    assert load_eomt_checkpoint(ours, hf.state_dict()) == "hf"
    x = torch.randn(2, 3, 56, 56)
    for p, n_pred in ((1.0, 3), (0.0, 1)):
        hf.attn_mask_probs.fill_(p)
        ours.attn_mask_probs.fill_(p)
        with torch.no_grad():
            ref = hf(pixel_values=x)
            masks, classes = ours.forward_logits(x)
        assert len(masks) == len(classes) == n_pred  # intermediate predictions only while masking
        assert masks[-1].shape == ref.masks_queries_logits.shape == (2, 5, 8, 8)  # one ScaleBlock: stride 7
        assert (masks[-1] - ref.masks_queries_logits).abs().max() <= 1e-4
        assert (classes[-1] - ref.class_queries_logits).abs().max() <= 1e-4
        assert 0.05 < (masks[-1] > 0).float().mean() < 0.95  # the masks are not trivially one-signed


def test_official_layout_loads_through_the_key_map():
    """tue-mps/eomt's Lightning checkpoint names (network. + models/eomt.py's modules, the ViT as
    encoder.backbone, pixel statistics buffers, the criterion's empty_weight) load strictly."""
    torch.manual_seed(1)
    src = _ours("vit_small_patch14_reg4_dinov2")
    ren = {"backbone.vit.": "network.encoder.backbone.", "query.": "network.q.", "class_head.": "network.class_head.",
           "mask_head.": "network.mask_head.", "upscale.": "network.upscale.",
           "attn_mask_probs": "network.attn_mask_probs", "criterion.": "criterion."}
    official = {}
    for k, v in src.state_dict().items():
        prefix = next(p for p in ren if k.startswith(p))
        official[ren[prefix] + k[len(prefix):]] = v.clone()
    official["network.encoder.pixel_mean"] = torch.zeros(1, 3, 1, 1)
    official["network.encoder.pixel_std"] = torch.ones(1, 3, 1, 1)
    assert "network.upscale.0.norm.weight" in official and "network.mask_head.4.bias" in official
    assert detect_eomt_layout(official) == "official"
    dst = _ours("vit_small_patch14_reg4_dinov2")
    assert load_eomt_checkpoint(dst, {"state_dict": official}) == "official"
    assert all(torch.equal(v, src.state_dict()[k]) for k, v in dst.state_dict().items())
    bad = dict(official, **{"network.extra.weight": torch.zeros(1)})
    with pytest.raises(ValueError, match="unknown key 'extra.weight'"):
        load_eomt_checkpoint(dst, bad)
    with pytest.raises(ValueError, match="unknown layout"):
        detect_eomt_layout({"foo": torch.zeros(1)})


def test_panoptic_inference_equals_transformers_post_processing():
    """Fixed logits: our panoptic map and segments equal EomtImageProcessor's (ids shifted by one:
    detectron2's 0 = void), things kept apart, stuff merged."""
    from transformers.models.eomt.image_processing_eomt import EomtImageProcessor
    from transformers.models.eomt.modeling_eomt import EomtForUniversalSegmentationOutput

    torch.manual_seed(3)
    Q, K, S = 12, 4, 32
    classes = torch.randn(1, Q, K + 1) * 4
    classes[0, :8, 0] += 6  # confident queries of classes 0 (thing) and 2 (stuff)
    classes[0, 8:12, 2] += 6
    masks = torch.randn(1, Q, S // 4, S // 4) - 4
    for q in range(Q):  # one blob per query, some overlapping
        y, x = divmod(q * 5 % 36, 6)
        masks[0, q, y:y + 3, x:x + 3] += 8
    stuff = [2, 3]
    out = EomtForUniversalSegmentationOutput(class_queries_logits=classes, masks_queries_logits=masks)
    proc = EomtImageProcessor()
    for thr in (0.8, 0.5):
        ref = proc.post_process_panoptic_segmentation(out, target_sizes=[(S, S)], threshold=thr, stuff_classes=stuff,
                                                      size={"shortest_edge": S, "longest_edge": S})[0]
        up = torch.nn.functional.interpolate(masks, size=(S, S), mode="bilinear")[0]
        pan, segs = panoptic_inference(up, classes[0], thing_ids=[0, 1], object_mask_threshold=thr)
        assert len(segs) >= 2 and torch.equal(pan.long() - 1, ref["segmentation"].long())
        assert [(s["id"] - 1, s["category_id"], s["score"]) for s in segs] == \
            [(s["id"], s["label_id"], s["score"]) for s in ref["segments_info"]]
        assert all(s["isthing"] == (s["category_id"] in (0, 1)) for s in segs)
    pan, segs = panoptic_inference(up, torch.full((Q, K + 1), -9.0).index_fill(1, torch.tensor([K]), 9.0), [0])
    assert segs == [] and not pan.any()  # every query "no object"


def test_mask_annealing_values_and_hook():
    assert staggered_windows(88692, 4) == [(14782, 29564), (29564, 44346), (44346, 59128), (59128, 73910)]
    assert staggered_windows(600, 3) == [(120, 240), (240, 360), (360, 480)]
    assert staggered_windows(2, 3) == [(1, 2), (2, 3), (3, 4)]
    assert annealed_prob(119, 120, 240) == 1.0 and annealed_prob(240, 120, 240) == 0.0
    assert annealed_prob(150, 120, 240) == pytest.approx(0.75 ** 0.9)
    with pytest.raises(ValueError, match="end > start"):
        annealed_prob(0, 5, 5)
    model = _ours("vit_small_patch14_dinov2", num_blocks=3)

    class _Trainer:  # what the hook reads from detectron2's trainer
        max_iter, iter = 600, 0

    trainer = _Trainer()
    trainer.model = model
    hook = MaskAnnealingHook()
    hook.trainer = trainer
    hook.before_train()
    assert hook.windows == [(120, 240), (240, 360), (360, 480)]
    expected = {0: [1, 1, 1], 180: [0.5 ** 0.9, 1, 1], 300: [0, 0.5 ** 0.9, 1], 420: [0, 0, 0.5 ** 0.9], 599: [0, 0, 0]}
    x = torch.randn(1, 3, 56, 56)
    model.eval()
    for it, want in expected.items():
        trainer.iter = it
        hook.before_step()
        assert model.attn_mask_probs.tolist() == pytest.approx(want)
        if it in (0, 599):  # the model reads them: intermediate predictions (masking) only while p > 0
            with torch.no_grad():
                assert len(model.forward_logits(x)[0]) == (4 if it == 0 else 1)
    bad = MaskAnnealingHook(windows=[(0, 10)])
    bad.trainer = trainer
    with pytest.raises(ValueError, match="1 windows for 3 masked blocks"):
        bad.before_train()


def test_training_loss_is_upstream_deep_supervision():
    """Training: the Mask2Former loss on the N intermediate predictions and the final one, weighted."""
    from detectron2.structures import BitMasks, Instances

    torch.manual_seed(0)
    model = _ours("vit_small_patch14_dinov2").train()
    inst = Instances((50, 56), gt_classes=torch.tensor([0, 2]))
    m = torch.zeros(2, 50, 56, dtype=torch.bool)
    m[0, 5:20, 5:30] = True
    m[1, 25:, :] = True
    inst.gt_masks = BitMasks(m)
    losses = model([{"image": torch.randint(0, 255, (3, 50, 56), dtype=torch.uint8), "instances": inst}])
    assert set(losses) == {f"loss_{t}{s}" for t in ("ce", "mask", "dice") for s in ("", "_0", "_1")}
    sum(losses.values()).backward()
    assert model.query.weight.grad.abs().sum() > 0 and model.upscale[0].conv1.weight.grad.abs().sum() > 0


def test_configs_build():
    from detectron2.config import instantiate

    from pe_panoptic.engine.config_overrides import load_config

    syn = load_config(SYN_CFG, [])
    assert syn.model.num_queries == 50 and syn.model.num_blocks == 3 and syn.model.input_size == 168
    assert syn.model.backbone.model_name == "vit_small_patch14_dinov2"
    assert os.path.basename(syn.model.backbone.weights) == "dinov2_vits14_pretrain.pth"
    assert syn.train.hooks[0].windows is None and syn.train.clip_grad_norm == 0.01
    coco = load_config(COCO_CFG, [])
    assert coco.model.num_queries == 200 and coco.model.num_blocks == 4 and coco.model.criterion.train_num_points == 12544
    assert coco.model.backbone.model_name == "vit_large_patch14_reg4_dinov2" and coco.optimizer.lr == 1e-4
    coco.model.metadata.name = "coco_2017_val_panoptic"
    model = instantiate(coco.model)
    vit = model.backbone.vit
    assert len(vit.blocks) == 24 and vit.patch_embed.patch_size == (16, 16) and vit.reg_token.shape[1] == 4
    assert tuple(vit.patch_embed.grid_size) == (40, 40) and len(model.upscale) == 2  # upstream: 640 px, patch 16
    assert model.class_head.out_features == 134


def test_patch16_backbone_loads_patch14_register_weights(tmp_path):
    """load_dinov2_for_eomt: a patch-14 reg4 DINOv2 file into a patch-16 ViT (kernel resampled)."""
    from pe_panoptic.baselines.eomt_weights import load_dinov2_for_eomt

    src = DINOv2Backbone("vit_small_patch14_reg4_dinov2", out_indices=[3], img_size=56, model_kwargs=TINY)
    torch.save(src.vit.state_dict(), tmp_path / "w.pth")
    dst = DINOv2Backbone("vit_small_patch14_reg4_dinov2", out_indices=[3], img_size=64,
                         model_kwargs=dict(TINY, patch_size=16))
    load_dinov2_for_eomt(dst, str(tmp_path / "w.pth"))
    assert torch.equal(dst.vit.blocks[2].attn.qkv.weight, src.vit.blocks[2].attn.qkv.weight)
    assert dst.vit.patch_embed.proj.weight.shape[-1] == 16 and torch.equal(dst.vit.reg_token, src.vit.reg_token)


# ------------------------------------------------------------------------------------------
# tools/train_net.py (train 2 iterations + evaluate, --eval-only) and tools/compare.py --entries
# ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def small_synthetic(tmp_path_factory):
    from pe_panoptic.data.synthetic import generate_synthetic_panoptic

    root = tmp_path_factory.mktemp("d2ds_eomt")
    generate_synthetic_panoptic(str(root / "synthetic_panoptic_small"), seed=5, num_train=2, num_val=1,
                                image_size=(112, 112))
    return root


EVAL = ["dataloader.test.dataset.names=synthetic_panoptic_small_val",
        "dataloader.evaluator.dataset_name=synthetic_panoptic_small_val",
        "model.metadata.name=synthetic_panoptic_small_train", "dataloader.test.num_workers=0", "train.device=cpu",
        "dataloader.test.mapper.augmentations.0.short_edge_length=112",
        "dataloader.test.mapper.augmentations.0.max_size=112", "model.input_size=112", "model.num_queries=10",
        "model.criterion.train_num_points=1024"]
TRAIN = ["dataloader.train.dataset.names=synthetic_panoptic_small_train", "train.max_iter=2",
         "dataloader.train.total_batch_size=1", "dataloader.train.num_workers=0",
         "dataloader.train.mapper.tfm_gens.1.target_height=112", "dataloader.train.mapper.tfm_gens.1.target_width=112",
         "dataloader.train.mapper.tfm_gens.2.crop_size=[112,112]"]


def _run_tool(args, env, timeout=900):
    proc = subprocess.run([sys.executable] + args, env=env, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return proc.stdout


@pytest.fixture(scope="module")
def trained(small_synthetic, tmp_path_factory):
    if not os.path.isfile(VITS_WEIGHTS):
        pytest.fail(f"{VITS_WEIGHTS} missing: run `make weights` (the real-weights checks run in CI, never skip)")
    env = dict(os.environ, DETECTRON2_DATASETS=str(small_synthetic), PE_PANOPTIC_WEIGHTS=WEIGHTS_DIR,
               PYTHONWARNINGS="ignore", OMP_NUM_THREADS="2")
    out = tmp_path_factory.mktemp("eomt_run")
    _run_tool([os.path.join(ROOT, "tools/train_net.py"), "--config-file", SYN_CFG, "--metrics-json",
               str(out / "m.json"), f"train.output_dir={out / 'train'}", *EVAL, *TRAIN], env)
    return env, out


def test_synthetic_config_trains_and_evaluates_with_train_net(trained):
    env, out = trained
    metrics = json.loads((out / "m.json").read_text())
    assert {"PQ", "PQ_th", "PQ_st"} <= set(metrics["panoptic_seg"]) and "mIoU" in metrics["sem_seg"]
    log = (out / "train" / "log.txt").read_text()
    assert "loss_dice_2" in log and "copypaste: PQ,SQ,RQ" in log  # N = 3 intermediate predictions + final
    state = torch.load(out / "train" / "model_final.pth", map_location="cpu", weights_only=True)["model"]
    # 2 iterations: windows (1, 2), (2, 3), (3, 4), so p is still 1 everywhere at iteration 1
    assert state["attn_mask_probs"].tolist() == [1.0, 1.0, 1.0]
    assert "backbone.vit.blocks.5.attn.qkv.weight" in state and "backbone.vit.blocks.6.attn.qkv.weight" not in state

    ev = out / "eval"
    _run_tool([os.path.join(ROOT, "tools/train_net.py"), "--config-file", SYN_CFG, "--eval-only", "--metrics-json",
               str(ev / "m.json"), f"train.init_checkpoint={out / 'train' / 'model_final.pth'}",
               f"train.output_dir={ev}", *EVAL], env)
    again = json.loads((ev / "m.json").read_text())
    assert again["panoptic_seg"]["PQ"] == pytest.approx(metrics["panoptic_seg"]["PQ"])


def test_compare_accepts_an_eomt_entry(trained):
    env, out = trained
    stdout = _run_tool([os.path.join(ROOT, "tools/compare.py"), "--threads", "2", "--entries",
                        f"eomt_vits={SYN_CFG}:{out / 'train' / 'model_final.pth'}", "--opts", *EVAL], env)
    (row,) = json.loads(stdout.strip().splitlines()[-1])
    assert row["name"] == "eomt_vits" and row["gflops"] > 0 and row["params_M"] > 10 and row["PQ"] == row["PQ"]
    assert any(line.startswith("| eomt_vits |") for line in stdout.splitlines())
