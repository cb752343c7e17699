"""Mask2Former in the same harness (issue 12): the installer's result (tools/install_mask2former.py),
the CPU fallback of MSDeformAttn, the LazyConfigs in configs/baselines/mask2former_*.py (equal to
upstream's own build path, model-zoo key layout, training and evaluation through
tools/train_net.py), and the pieces of pe_panoptic/baselines/mask2former.py."""
import hashlib
import inspect
import json
import os
import pickle
import subprocess
import sys

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tools"))

import install_mask2former  # noqa: E402

COCO_CFG = os.path.join(ROOT, "configs/baselines/mask2former_r50_coco.py")
R50_SYN_CFG = os.path.join(ROOT, "configs/baselines/mask2former_r50_synthetic.py")
VIT_SYN_CFG = os.path.join(ROOT, "configs/baselines/mask2former_dinov2_vits_synthetic.py")
WEIGHTS_DIR = os.environ.get("PE_PANOPTIC_WEIGHTS") or os.path.join(ROOT, "weights")
VITS_WEIGHTS = os.path.join(WEIGHTS_DIR, "dinov2_vits14_pretrain.pth")


# ------------------------------------------------------------------------------------------
# the installer's result
# ------------------------------------------------------------------------------------------
def test_mask2former_installed_with_the_current_patch_set():
    import mask2former
    from mask2former.modeling.criterion import SetCriterion

    assert "weight_dict" in inspect.signature(SetCriterion.__init__).parameters
    if hasattr(mask2former, "__version__"):  # the sdist install (an upstream checkout has no version)
        from mask2former import _pe_panoptic_patches

        assert mask2former.__version__ == "0.1"
        assert _pe_panoptic_patches.PATCH_ID == install_mask2former.patch_id()
        with open(inspect.getsourcefile(SetCriterion), "rb") as f:
            assert hashlib.sha256(f.read()).hexdigest() == install_mask2former.UPSTREAM_CRITERION_SHA256


def test_msdeformattn_runs_the_pytorch_fallback_on_cpu(monkeypatch):
    from mask2former.modeling.pixel_decoder.ops.functions import ms_deform_attn_func
    from mask2former.modeling.pixel_decoder.ops.modules import ms_deform_attn

    calls = []
    core = ms_deform_attn_func.ms_deform_attn_core_pytorch

    def counting(*args):
        calls.append(1)
        return core(*args)

    monkeypatch.setattr(ms_deform_attn, "ms_deform_attn_core_pytorch", counting)
    torch.manual_seed(0)
    attn = ms_deform_attn.MSDeformAttn(d_model=32, n_levels=2, n_heads=4, n_points=2)
    shapes = torch.as_tensor([(6, 4), (3, 2)], dtype=torch.long)
    start = torch.cat([shapes.new_zeros(1), (shapes[:, 0] * shapes[:, 1]).cumsum(0)[:-1]])
    src = torch.randn(2, 30, 32, requires_grad=True)
    query, ref = torch.randn(2, 5, 32), torch.rand(2, 5, 2, 2)
    out = attn(query, ref, src, shapes, start)
    assert calls == [1] and out.shape == (2, 5, 32) and torch.isfinite(out).all()
    out.sum().backward()  # training on the CPU goes through the same path
    assert src.grad is not None and torch.isfinite(src.grad).all()
    if not torch.cuda.is_available():
        assert ms_deform_attn_func.MSDA is None  # no compiled op was built on this machine


def test_installer_refuses_an_unknown_sdist_and_unexpected_sources(tmp_path):
    fake = tmp_path / "maskformer2-0.1.tar.gz"
    fake.write_bytes(b"not the sdist")
    with pytest.raises(SystemExit, match="does not match the pinned"):
        install_mask2former.fetch_sdist(str(tmp_path), str(fake))
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "setup.py").write_text("setup(ext_modules=[])\n")
    with pytest.raises(SystemExit, match=r"setup.py: expected 1 occurrence"):
        install_mask2former.apply_patches(str(tmp_path / "src"))


# ------------------------------------------------------------------------------------------
# pe_panoptic/baselines/mask2former.py
# ------------------------------------------------------------------------------------------
def _tiny_vit(out_indices=(1,)):
    from pe_panoptic.modeling.backbone import DINOv2Backbone

    return DINOv2Backbone("vit_small_patch14_dinov2", out_indices, img_size=56,
                          model_kwargs=dict(depth=2, embed_dim=48, num_heads=3))


def test_simple_pyramid_strides_and_shapes():
    from pe_panoptic.baselines.mask2former import DINOv2SimplePyramid, pyramid_shapes

    pyr = DINOv2SimplePyramid(_tiny_vit(), out_channels=32, norm="LN")
    out = pyr(torch.randn(1, 3, 112, 168))
    assert {k: tuple(v.shape) for k, v in out.items()} == {
        "sfp7": (1, 32, 16, 24), "sfp14": (1, 32, 8, 12), "sfp28": (1, 32, 4, 6), "sfp56": (1, 32, 2, 3)}
    assert pyr.output_shape() == pyramid_shapes(channels=32) and pyr.size_divisibility == 56
    with pytest.raises(ValueError, match="one out_indices entry"):
        DINOv2SimplePyramid(_tiny_vit((0, 1)))


def test_param_groups_follow_upstream_build_optimizer():
    from pe_panoptic.baselines.mask2former import DINOv2SimplePyramid, mask2former_param_groups

    model = torch.nn.Module()
    model.backbone = DINOv2SimplePyramid(_tiny_vit(), out_channels=32, norm="GN")
    model.head = torch.nn.Linear(4, 4)
    model.query = torch.nn.Embedding(3, 4)
    groups = mask2former_param_groups(model, base_lr=1.0, weight_decay=0.05, backbone_prefix="backbone.net")
    by_param = {id(g["params"][0]): g for g in groups}
    named = dict(model.named_parameters())
    assert len(groups) == len(named)
    assert by_param[id(named["backbone.net.vit.blocks.0.attn.qkv.weight"])]["lr"] == pytest.approx(0.1)
    assert by_param[id(named["backbone.stages.0.1.weight"])]["lr"] == 1.0  # the new pyramid: full lr
    assert by_param[id(named["backbone.stages.0.1.norm.weight"])]["weight_decay"] == 0.0  # GroupNorm
    assert by_param[id(named["query.weight"])]["weight_decay"] == 0.0 and by_param[id(named["head.weight"])] == {
        "params": [named["head.weight"]], "lr": 1.0, "weight_decay": 0.05}


# ------------------------------------------------------------------------------------------
# the COCO recipe: our LazyConfig == upstream's build path
# ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def coco_models():
    from detectron2.config import instantiate
    from detectron2.modeling import build_model

    from pe_panoptic.engine.config_overrides import load_config
    from pe_panoptic.baselines.mask2former import upstream_r50_coco_cfg

    torch.manual_seed(0)
    upstream = build_model(upstream_r50_coco_cfg()).eval()
    ours = instantiate(load_config(COCO_CFG, []).model).eval()
    return ours, upstream


def test_coco_config_builds_upstream_model(coco_models):
    ours, up = coco_models
    assert type(ours) is type(up)
    assert str(ours) == str(up)  # every module, layer size, norm, dropout; criterion, weights, matcher costs
    for attr in ("num_queries", "object_mask_threshold", "overlap_threshold", "size_divisibility",
                 "sem_seg_postprocess_before_inference", "semantic_on", "instance_on", "panoptic_on",
                 "test_topk_per_image"):
        assert getattr(ours, attr) == getattr(up, attr), attr
    assert (ours.num_queries, ours.sem_seg_head.predictor.num_layers, ours.object_mask_threshold) == (100, 9, 0.8)
    assert ours.metadata.name == up.metadata.name == "coco_2017_train_panoptic"
    assert torch.equal(ours.pixel_mean, up.pixel_mean) and torch.equal(ours.pixel_std, up.pixel_std)
    assert ours.criterion.num_points == up.criterion.num_points == ours.criterion.matcher.num_points == 12544
    assert ours.criterion.weight_dict == up.criterion.weight_dict and len(ours.criterion.weight_dict) == 30
    assert ours.backbone.size_divisibility == up.backbone.size_divisibility


def test_coco_config_gives_upstream_outputs(coco_models):
    ours, up = coco_models
    ours.load_state_dict(up.state_dict(), strict=True)
    g = torch.Generator().manual_seed(1)
    inputs = [{"image": torch.randint(0, 256, (3, 64, 96), generator=g).float(), "height": 64, "width": 96}]
    thresholds = (up.object_mask_threshold, up.overlap_threshold)
    try:
        for obj, ovl in (thresholds, (0.0, 0.0)):  # the recipe's thresholds; then all queries kept
            for m in (ours, up):
                m.object_mask_threshold, m.overlap_threshold = obj, ovl
            with torch.no_grad():
                a, b = ours(inputs)[0], up(inputs)[0]
            assert torch.equal(a["panoptic_seg"][0], b["panoptic_seg"][0])
            assert a["panoptic_seg"][1] == b["panoptic_seg"][1]
            assert torch.equal(a["sem_seg"], b["sem_seg"])
        assert len(a["panoptic_seg"][1]) > 0  # not trivially equal: segments were found
    finally:
        for m in (ours, up):
            m.object_mask_threshold, m.overlap_threshold = thresholds


def _write_model_zoo_pkl(model, path):
    """A detectron2 model-zoo file: a pickle of {"model": numpy arrays (no version metadata), ...}."""
    with open(path, "wb") as f:
        pickle.dump({"model": {k: v.numpy() for k, v in model.state_dict().items()},
                     "__author__": "pe_panoptic test"}, f)


def test_model_zoo_key_layout_loads_exactly(coco_models, tmp_path):
    from detectron2.config import instantiate

    from pe_panoptic.engine.checkpoint_io import StrictCheckpointer, UntrustedCheckpointError
    from pe_panoptic.engine.config_overrides import load_config

    ours, up = coco_models
    pkl = tmp_path / "model_final.pkl"
    _write_model_zoo_pkl(up, pkl)
    fresh = instantiate(load_config(COCO_CFG, []).model)
    with pytest.raises(UntrustedCheckpointError, match="--trust-pickle"):
        StrictCheckpointer(fresh).load(str(pkl))
    # strict: any missing, unexpected or reshaped key raises (pe_panoptic.engine.checkpoint_io)
    StrictCheckpointer(fresh, trust_pickle=True).load(str(pkl))
    want = up.state_dict()
    assert set(fresh.state_dict()) == set(want)
    assert all(torch.equal(v, want[k]) for k, v in fresh.state_dict().items())


def _run_tool(args, env, timeout=600):
    proc = subprocess.run([sys.executable] + args, env=env, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return proc.stdout


def test_coco_config_evaluates_a_model_zoo_pickle_with_train_net(coco_models, d2_datasets, tmp_path):
    """`tools/train_net.py --eval-only --trust-pickle train.init_checkpoint=<model zoo .pkl>` on the
    COCO val fixtures through our evaluators (inputs shrunk to keep the test fast)."""
    _, up = coco_models
    pkl = tmp_path / "model_final.pkl"
    _write_model_zoo_pkl(up, pkl)
    env = dict(os.environ, DETECTRON2_DATASETS=str(d2_datasets), PYTHONWARNINGS="ignore", OMP_NUM_THREADS="2")
    out = tmp_path / "eval"
    _run_tool([os.path.join(ROOT, "tools/train_net.py"), "--config-file", COCO_CFG, "--eval-only", "--trust-pickle",
               "--metrics-json", str(out / "m.json"), f"train.init_checkpoint={pkl}", f"train.output_dir={out}",
               "train.device=cpu", "dataloader.test.num_workers=0",
               "dataloader.test.mapper.augmentations.0.short_edge_length=128",
               "dataloader.test.mapper.augmentations.0.max_size=192"], env)
    metrics = json.loads((out / "m.json").read_text())
    assert {"PQ", "PQ_th", "PQ_st"} <= set(metrics["panoptic_seg"]) and "mIoU" in metrics["sem_seg"]


# ------------------------------------------------------------------------------------------
# the synthetic configs: build, train a few steps, evaluate (tools/train_net.py)
# ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def small_synthetic(tmp_path_factory):
    from pe_panoptic.data.synthetic import generate_synthetic_panoptic

    root = tmp_path_factory.mktemp("d2ds_m2f")
    generate_synthetic_panoptic(str(root / "synthetic_panoptic_small"), seed=5, num_train=2, num_val=1,
                                image_size=(112, 112))
    return root


SMALL = ["dataloader.train.dataset.names=synthetic_panoptic_small_train",
         "dataloader.test.dataset.names=synthetic_panoptic_small_val",
         "dataloader.evaluator.dataset_name=synthetic_panoptic_small_val",
         "model.metadata.name=synthetic_panoptic_small_train",
         "train.max_iter=2", "dataloader.train.total_batch_size=1", "dataloader.train.num_workers=0",
         "dataloader.test.num_workers=0", "train.device=cpu",
         # the small variant's native 112 px (the configs crop / resize to 168)
         "dataloader.train.mapper.tfm_gens.1.target_height=112", "dataloader.train.mapper.tfm_gens.1.target_width=112",
         "dataloader.train.mapper.tfm_gens.2.crop_size=[112,112]",
         "dataloader.test.mapper.augmentations.0.short_edge_length=112",
         "dataloader.test.mapper.augmentations.0.max_size=112",
         # tiny head (the recipes' values are checked in test_synthetic_recipes)
         "model.sem_seg_head.pixel_decoder.transformer_enc_layers=1",
         "model.sem_seg_head.transformer_predictor.dec_layers=2",
         "model.sem_seg_head.transformer_predictor.num_queries=10", "model.criterion.train_num_points=1024"]


def test_synthetic_recipes():
    from pe_panoptic.engine.config_overrides import load_config

    coco = load_config(COCO_CFG, [])
    for path in (R50_SYN_CFG, VIT_SYN_CFG):
        cfg = load_config(path, [])
        head, up_head = cfg.model.sem_seg_head, coco.model.sem_seg_head
        assert head.num_classes == 7 and head.transformer_predictor.num_queries == 50  # documented changes
        for key in ("dec_layers", "hidden_dim", "nheads", "dim_feedforward"):
            assert head.transformer_predictor[key] == up_head.transformer_predictor[key], key
        assert head.pixel_decoder.transformer_enc_layers == up_head.pixel_decoder.transformer_enc_layers == 6
        assert cfg.model.criterion.train_num_points == 12544 and cfg.optimizer.lr == coco.optimizer.lr == 1e-4
        assert cfg.dataloader.evaluator.dataset_name == "synthetic_panoptic_val"
    vit = load_config(VIT_SYN_CFG, [])
    assert vit.model.backbone.net.model_name == "vit_small_patch14_dinov2"
    assert os.path.basename(vit.model.backbone.net.weights) == "dinov2_vits14_pretrain.pth"


def test_equal_budget_comparison_end_to_end(small_synthetic, tmp_path):
    """tools/compare.py --train-budget-s on a budget of seconds: both synthetic Mask2Former configs
    (R50 from scratch, DINOv2 ViT-S/14 with our method's weights) are calibrated, trained by
    tools/train_net.py for the iterations that fit the budget, then evaluated side by side."""
    if not os.path.isfile(VITS_WEIGHTS):
        pytest.fail(f"{VITS_WEIGHTS} missing: run `make weights` (the real-weights checks run in CI, never skip)")
    env = dict(os.environ, DETECTRON2_DATASETS=str(small_synthetic), PE_PANOPTIC_WEIGHTS=WEIGHTS_DIR,
               PYTHONWARNINGS="ignore", OMP_NUM_THREADS="2")
    out = tmp_path / "cmp"
    evaluation = [o for o in SMALL if not o.startswith(("train.", "dataloader.train."))]
    training = [o for o in SMALL if o.startswith(("train.", "dataloader.train.")) and not o.startswith("train.max_iter")]
    argv = [os.path.join(ROOT, "tools/compare.py"), "--threads", "2", "--train-budget-s", "2",
            "--calibration-iters", "4", "--curve-points", "2", "--output-dir", str(out), "--entries",
            f"m2f_r50={R50_SYN_CFG}", f"m2f_vits={VIT_SYN_CFG}", "--opts", *evaluation,
            "--train-opts", *training, "--json", str(tmp_path / "cmp.json")]
    stdout = _run_tool(argv, env, timeout=1200)
    rows = {r["name"]: r for r in json.loads(stdout.strip().splitlines()[-1])}
    lines = stdout.splitlines()
    assert ("| model | PQ | PQ_th | PQ_st | mIoU | params (M) | GFLOPs | ms / image | train it | train s / it "
            "| train min | peak train RSS (MiB) |") in lines
    for name in ("m2f_r50", "m2f_vits"):
        r = rows[name]
        assert r["train_iters"] >= 1 and r["train_s_per_iter"] > 0 and r["peak_rss_mib"] > 100
        assert r["train_iters"] == max(1, int(2.0 // r["calibration_s_per_iter"]))  # what fits the budget
        assert r["PQ"] == r["PQ"] and r["mIoU"] == r["mIoU"] and r["gflops"] > 0 and r["images"] == 1
        assert r["checkpoint"] == str(out / name / "train" / "model_final.pth")
        # the training run's own final evaluation (tools/train_net.py) ran on the same val split
        assert "copypaste: PQ,SQ,RQ" in (out / name / "train" / "log.txt").read_text()
        assert (out / name / "eval" / "predictions.json").is_file()  # compare's evaluation, not in the repo
    assert rows["m2f_vits"]["params_M"] < rows["m2f_r50"]["params_M"]  # 6 ViT-S blocks vs ResNet-50
    state = torch.load(rows["m2f_vits"]["checkpoint"], map_location="cpu", weights_only=True)["model"]
    ref = torch.load(VITS_WEIGHTS, map_location="cpu", weights_only=True)
    for k in ("blocks.0.attn.qkv.weight", "blocks.5.mlp.fc2.weight", "patch_embed.proj.weight"):
        # the DINOv2 weights of our method, barely moved by a few warm-up steps at lr x 0.1
        assert torch.allclose(state[f"backbone.net.vit.{k}"], ref[k], atol=1e-3), k
    assert "backbone.net.vit.blocks.6.attn.qkv.weight" not in state  # 6 blocks kept, as pe_vits
    assert "sem_seg_head.predictor.query_feat.weight" in state and "criterion.empty_weight" in state
    # --curve-points: each run evaluated during training; the curves of both on one time axis
    curves = json.loads((out / "curves.json").read_text())
    for name in ("m2f_r50", "m2f_vits"):
        pts = curves[name]
        assert pts[-1]["iteration"] == rows[name]["train_iters"] and pts[-1]["PQ"] == pytest.approx(rows[name]["PQ"])
        assert all(p["calibrated_s"] == pytest.approx(p["iteration"] * rows[name]["calibration_s_per_iter"])
                   and p["measured_s"] > 0 for p in pts)
    assert (out / "curves.png").stat().st_size > 1000 and (out / "curves_measured.png").is_file()
    assert "| model | iteration | calibrated s | measured s | PQ | PQ_th | PQ_st |" in lines
    # the finished runs are neither retrained nor overwritten: refused without --resume, reused with it
    before = (out / "m2f_r50" / "train" / "model_final.pth").stat().st_mtime_ns
    refused = subprocess.run([sys.executable, *argv], env=env, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert refused.returncode != 0 and "continue the comparison with --resume" in refused.stderr
    again = _run_tool(argv + ["--resume"], env, timeout=1200)
    assert json.loads(again.strip().splitlines()[-1])[0]["train_iters"] == rows["m2f_r50"]["train_iters"]
    assert (out / "m2f_r50" / "train" / "model_final.pth").stat().st_mtime_ns == before


def test_budget_arguments_are_checked(tmp_path):
    import compare

    from pe_panoptic.studies.equal_budget import train_within_budget, training_speed

    assert compare.parse_entry_opts(["a:x.y=1", "b:z=2", "a:w=3"], ["a", "b"]) == {"a": ["x.y=1", "w=3"], "b": ["z=2"]}
    with pytest.raises(ValueError, match="not one of the entries"):
        compare.parse_entry_opts(["c:x=1"], ["a"])
    with pytest.raises(ValueError, match="name:key=value"):
        compare.parse_entry_opts(["a=x"], ["a"])
    with pytest.raises(ValueError, match="budget must be positive"):
        train_within_budget("a", R50_SYN_CFG, 0, str(tmp_path))
    with pytest.raises(ValueError, match="calibration_iters must be >= 4"):
        train_within_budget("a", R50_SYN_CFG, 10, str(tmp_path), calibration_iters=3)
    (tmp_path / "log.txt").write_text("[d2.engine.hooks]: Overall training speed: 5 iterations in 0:00:07 (1.4821 s / it)\n")
    assert training_speed(str(tmp_path)) == pytest.approx(1.4821)
    (tmp_path / "log.txt").write_text("no timing\n")
    assert training_speed(str(tmp_path), required=False) is None
    with pytest.raises(ValueError, match="Overall training speed"):
        training_speed(str(tmp_path))
