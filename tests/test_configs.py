"""The paper's training recipes as LazyConfigs: every config loads and instantiates its model, the
epochs -> iterations arithmetic, the stage chain, one config per ablation row, and
``tools/train_net.py --config-file configs/coco/vitl_stage3.py`` runs (with a tiny backbone)."""
import glob
import os
import pathlib
import subprocess
import sys

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG_DIRS = ("coco", "coco/ablations", "cityscapes", "nyu", "baselines")
CONFIGS = sorted(os.path.relpath(p, ROOT) for d in CONFIG_DIRS
                 for p in glob.glob(os.path.join(ROOT, "configs", d, "*.py")))
COCO_TRAIN = 118287


def load(rel):
    from detectron2.config import LazyConfig

    import pe_panoptic  # noqa: F401

    return LazyConfig.load(os.path.join(ROOT, rel))


def n_params(model):
    return sum(p.numel() for p in model.parameters())


# ------------------------------------------------------------------------------------------
# pe_panoptic.engine.recipes
# ------------------------------------------------------------------------------------------
def test_epochs_to_iters_matches_the_paper():
    from pe_panoptic.engine.recipes import epochs_to_iters, iters_to_epochs

    # paper_v1: "200 epochs or 92K steps" at effective batch 256: 200 * 118287 / 256 = 92411.7
    assert epochs_to_iters(200, COCO_TRAIN, 32, 8) == 92412
    assert epochs_to_iters(200, COCO_TRAIN, 16, 8, accumulate=2) == 92412  # same effective batch
    assert epochs_to_iters(400, COCO_TRAIN, 64, 8, 2) == 46206  # stage 1: 47314800 / 1024
    assert epochs_to_iters(50, COCO_TRAIN, 2, 8) == 369647  # stage 3: 5914350 / 16 = 369646.9
    assert epochs_to_iters(1, 10, 5) == 2 and epochs_to_iters(1, 11, 5) == 3  # partial last step counts
    assert iters_to_epochs(92412, COCO_TRAIN, 256) == pytest.approx(200.0, abs=0.01)
    with pytest.raises(ValueError, match="batch_per_gpu"):
        epochs_to_iters(1, 10, 0)
    with pytest.raises(ValueError, match="epochs"):
        epochs_to_iters(0, 10, 1)


def test_split_effective_batch():
    from pe_panoptic.engine.recipes import make_recipe, split_effective_batch

    assert split_effective_batch(1024, 8, 64) == (64, 2)
    assert split_effective_batch(512, 8, 64) == (64, 1)
    assert split_effective_batch(16, 1, 1) == (1, 16)
    assert split_effective_batch(256, 4, 24) == (16, 4)  # 64 per GPU: largest divisor <= 24 is 16
    with pytest.raises(ValueError, match="not divisible by num_gpus=3"):
        split_effective_batch(16, 3, 8)
    r = make_recipe(epochs=400, effective_batch=1024, num_gpus=8, max_batch_per_gpu=64,
                    dataset="coco_2017_train_panoptic", warmup_epochs=3)
    assert (r.batch_per_gpu, r.accumulate_steps, r.total_batch_size, r.max_iter) == (64, 2, 512, 46206)
    assert r.warmup_length == pytest.approx(3 / 400)
    assert r.iters(10) == round(10 * COCO_TRAIN / 1024) == 1155
    with pytest.raises(ValueError, match="dataset_size or a dataset"):
        make_recipe(epochs=1, effective_batch=8, num_gpus=1, max_batch_per_gpu=8, dataset="unknown")


def test_resolve_accumulate_steps():
    from pe_panoptic.engine.recipes import resolve_accumulate_steps

    assert resolve_accumulate_steps({"accumulate_steps": "auto", "effective_batch_size": 1024}, 512) == 2
    assert resolve_accumulate_steps({"accumulate_steps": "auto", "effective_batch_size": 16}, 1) == 16
    assert resolve_accumulate_steps({"accumulate_steps": 3}, 8) == 3
    assert resolve_accumulate_steps({}, 8) == 1
    assert resolve_accumulate_steps({"accumulate_steps": 2, "effective_batch_size": 16}, 8) == 2
    with pytest.raises(ValueError, match="not a multiple"):
        resolve_accumulate_steps({"accumulate_steps": "auto", "effective_batch_size": 1024}, 24)
    with pytest.raises(ValueError, match="differs from train.effective_batch_size=16"):
        resolve_accumulate_steps({"accumulate_steps": 1, "effective_batch_size": 16}, 8)
    with pytest.raises(ValueError, match="needs train.effective_batch_size"):
        resolve_accumulate_steps({"accumulate_steps": "auto"}, 8)


def test_set_input_size_rejects_non_multiples_of_14():
    from pe_panoptic.engine.recipes import set_input_size

    dl = {"train": {"mapper": {"input_size": 0, "augmentations": {"size": 0}}},
          "test": {"mapper": {"augmentations": {"size": 0}}}}
    set_input_size(dl, (784, 1568))
    assert dl["train"]["mapper"]["input_size"] == [784, 1568] and dl["test"]["mapper"]["augmentations"]["size"] == 1568
    with pytest.raises(ValueError, match="multiples of 14"):
        set_input_size(dl, 500)


def test_set_decoder_upsampling_keeps_mapper_and_decoder_together():
    from pe_panoptic.engine.recipes import set_decoder_upsampling

    model, dataloader = {"decoder": {}}, {"train": {"mapper": {}}}
    set_decoder_upsampling(model, dataloader, 4)
    assert model["decoder"]["num_upsample"] == 4 and dataloader["train"]["mapper"]["output_stride"] == 14 / 16
    set_decoder_upsampling(model, dataloader, 3)
    assert model["decoder"]["num_upsample"] == 3 and dataloader["train"]["mapper"]["output_stride"] == 14 / 8
    with pytest.raises(ValueError, match="num_upsample"):
        set_decoder_upsampling(model, dataloader, 2.5)


# ------------------------------------------------------------------------------------------
# every config loads and instantiates its model (on the meta device: no memory, no weights)
# ------------------------------------------------------------------------------------------
def test_the_config_tree_is_complete():
    names = {os.path.relpath(c, "configs") for c in CONFIGS}
    for required in ("coco/vitb_ablation_420.py", "coco/vitl_stage1.py", "coco/vitl_stage2.py",
                     "coco/vitl_stage2_depth.py", "coco/vitl_stage3.py", "coco/vitl_518.py", "coco/vitl_420.py",
                     "cityscapes/vitl_finetune.py", "nyu/vitl_depth_finetune.py",
                     "baselines/panoptic_fpn_r50_synthetic.py"):
        assert required in names
    # paper_v1 Table 2 (4 rows) + Table 3 (6 rows) + ICML Table 4 (7 rows)
    assert len([n for n in names if n.startswith("coco/ablations/")]) == 17


@pytest.mark.parametrize("rel", CONFIGS)
def test_config_loads_and_instantiates(rel, d2_datasets):
    from detectron2.config import instantiate

    cfg = load(rel)
    for key in ("model", "dataloader", "optimizer", "lr_multiplier", "train"):
        assert key in cfg, f"{rel} lacks {key}"
    with torch.device("meta"):
        model = instantiate(cfg.model)
    assert n_params(model) > 1e6
    if "recipe" in cfg.train:  # pe_panoptic configs: the batch arithmetic is consistent
        r = cfg.train.recipe
        assert cfg.dataloader.train.total_batch_size == r.batch_per_gpu * r.num_gpus
        assert r.total_batch_size * r.accumulate_steps == cfg.train.effective_batch_size == r.effective_batch
        assert cfg.train.accumulate_steps == "auto"
        assert cfg.lr_multiplier.warmup_length == pytest.approx(r.warmup_epochs / r.epochs)
        assert cfg.dataloader.train._target_.__name__ in ("build_resumable_train_loader", "build_mixed_train_loader")


def test_parameter_counts_match_the_paper(d2_datasets):
    """paper_v1 Table 1: ViT-B 91.9M (4-upsampling decoder; 91.4M with the ICML one), ViT-L 310M."""
    from detectron2.config import instantiate

    with torch.device("meta"):
        vitb = n_params(instantiate(load("configs/coco/vitb_ablation_420.py").model))
        vitb_v1 = n_params(instantiate(load("configs/coco/vitb_ablation_420_v1_decoder.py").model))
        vitl = n_params(instantiate(load("configs/coco/vitl_stage3.py").model))
    assert vitb_v1 == pytest.approx(91.9e6, rel=0.005)
    assert vitb == pytest.approx(91.4e6, rel=0.005)
    assert vitl == pytest.approx(310e6, rel=0.01)


def test_paper_schedules(d2_datasets):
    expect = {  # config: (input, effective batch, epochs, max_iter, tasks, decoder upsamplings)
        "configs/coco/vitb_ablation_420.py": (420, 256, 200, 92412, ("sem", "inst"), 3),
        "configs/coco/vitb_ablation_420_v1_decoder.py": (420, 256, 200, 92412, ("sem", "inst"), 4),
        "configs/coco/vitl_518.py": (518, 256, 200, 92412, ("sem", "inst"), 4),  # paper_v1's decoder
        "configs/coco/vitl_420.py": (420, 256, 200, 92412, ("sem", "inst"), 4),
        "configs/coco/vitl_stage1.py": (280, 1024, 400, 46206, ("inst",), 3),
        "configs/coco/vitl_stage2.py": (336, 512, 200, 46206, ("sem", "inst"), 3),
        "configs/coco/vitl_stage2_depth.py": (336, 512, 200, 46517, ("sem", "inst", "depth"), 3),  # COCO + NYUv2
        "configs/coco/vitl_stage3.py": (1008, 16, 50, 369647, ("sem", "inst"), 3),
        "configs/cityscapes/vitl_finetune.py": ([784, 1568], 16, 400, 74375, ("sem", "inst"), 3),
    }
    for rel, (size, batch, epochs, iters, tasks, ups) in expect.items():
        cfg = load(rel)
        assert cfg.dataloader.train.mapper.input_size == size, rel
        got = (cfg.train.effective_batch_size, cfg.train.recipe.epochs, cfg.train.max_iter)
        assert got == (batch, epochs, iters), rel
        assert tuple(cfg.model.tasks) == tasks, rel
        assert cfg.model.decoder.num_upsample == ups, rel
        assert cfg.dataloader.train.mapper.output_stride == pytest.approx(14 / 2**ups), rel
        assert cfg.optimizer.lr == 5e-4 and cfg.optimizer.params.layer_decay == 0.6, rel
        assert cfg.lr_multiplier.min_lr == 1e-6 and cfg.train.amp.enabled, rel
    v1 = load("configs/coco/vitb_ablation_420.py")
    # paper_v1: one task per optimizer step, drawn by the loader over the whole effective batch
    assert dict(v1.dataloader.train.task_probs) == pytest.approx({"inst": 2 / 3, "sem": 1 / 3})
    assert v1.dataloader.train.effective_batch_size == v1.train.effective_batch_size == 256
    assert "task_probs" not in v1.model
    stage2 = load("configs/coco/vitl_stage2.py")  # ICML: summed multi-task losses
    assert "task_probs" not in stage2.model and stage2.dataloader.train.get("task_probs") is None
    for path in sorted(pathlib.Path(ROOT).glob("configs/**/*.py")):  # no config sets the key that moved
        assert "model.task_probs" not in path.read_text(), path
    assert tuple(load("configs/coco/vitl_stage1.py").model.backbone.out_indices) == (4, 11, 17, 23)
    assert tuple(load("configs/cityscapes/vitl_finetune.py").model.postprocess.grid) == (160, 320)
    assert tuple(load("configs/coco/vitl_stage3.py").model.postprocess.grid) == (80, 80)
    assert load("configs/coco/vitl_stage3.py").model.backbone.grad_checkpointing is True
    depth = load("configs/coco/vitl_stage2_depth.py")
    assert tuple(depth.dataloader.train.dataset.names) == ("coco_2017_train_panoptic", "nyuv2_depth_train")
    assert depth.dataloader.train.mapper.panoptic.optional is True
    assert depth.dataloader.train.mapper.depth.kind == "disparity"
    assert depth.model.depth is True and depth.model.loss.depth_loss == "affine_invariant"
    nyu = load("configs/nyu/vitl_depth_finetune.py")
    assert tuple(nyu.model.tasks) == ("depth",) and nyu.model.loss.depth_loss == "silog"
    assert nyu.train.max_iter == 2485  # 50 epochs x 795 images / 16


def test_stages_chain_through_init_checkpoint(d2_datasets):
    chain = [("configs/coco/vitl_stage2.py", "configs/coco/vitl_stage1.py"),
             ("configs/coco/vitl_stage2_depth.py", "configs/coco/vitl_stage1.py"),
             ("configs/coco/vitl_stage3.py", "configs/coco/vitl_stage2.py"),
             ("configs/cityscapes/vitl_finetune.py", "configs/coco/vitl_stage2.py"),
             ("configs/nyu/vitl_depth_finetune.py", "configs/coco/vitl_stage2_depth.py")]
    outputs = {load(c).train.output_dir for c in CONFIGS}
    assert len(outputs) == len(CONFIGS)  # no two configs write to the same folder
    for cfg_file, previous in chain:
        assert load(cfg_file).train.init_checkpoint == os.path.join(load(previous).train.output_dir, "model_final.pth")
    assert load("configs/coco/vitl_stage1.py").train.init_checkpoint == ""


def test_one_config_per_ablation_row(d2_datasets):
    rows = {}
    for rel in CONFIGS:
        if "/ablations/" not in rel:
            continue
        cfg = load(rel)
        m, enc = cfg.dataloader.train.mapper.panoptic, dict(cfg.model.encoding)
        setting = (m.use_eds, m.include_void, enc["name"], enc.get("num_harmonics", 4) if enc["name"] == "pe" else None)
        rows[(cfg.train.reference.table, cfg.train.reference.row)] = (setting, cfg.train.reference.pq)
        assert cfg.model.backbone.model_name == "vit_base_patch14_dinov2"
        assert cfg.dataloader.train.mapper.input_size == 420
        # each paper version's decoder: paper_v1 4 upsamplings (16/14), ICML 3 (8/14)
        ups = 4 if cfg.train.reference.table.startswith("paper_v1") else 3
        assert cfg.model.decoder.num_upsample == ups, rel
        assert cfg.dataloader.train.mapper.output_stride == pytest.approx(14 / 2**ups), rel
    assert rows[("paper_v1 Table 2", "EDS no, include void no")] == ((False, False, "pe", 4), 44.91)
    assert rows[("paper_v1 Table 2", "EDS yes, include void yes")] == ((True, True, "pe", 4), 48.61)
    assert rows[("paper_v1 Table 3", "Direct centroid regression")] == ((True, True, "rgb", None), 41.61)
    assert rows[("paper_v1 Table 3", "Cross Entropy")] == ((True, True, "bins", None), 39.87)
    assert rows[("ICML Table 4", "no EDS, Direct regression")] == ((False, False, "rgb", None), 38.01)
    assert rows[("ICML Table 4", "EDS, PE L=5")] == ((True, True, "pe", 5), 48.12)
    v1_t3 = sorted(s[0][3] for k, s in rows.items() if k[0] == "paper_v1 Table 3" and s[0][2] == "pe")
    assert v1_t3 == [2, 3, 4, 5]
    # within a table, every row is a different setting
    for table in ("paper_v1 Table 2", "paper_v1 Table 3", "ICML Table 4"):
        settings = [s for k, (s, _) in rows.items() if k[0] == table]
        assert len(settings) == len(set(settings)), table


@pytest.mark.parametrize("row,out", [("icml_t4_no_eds_direct_regression", 240), ("v1_t3_cross_entropy", 480)])
def test_ablation_configs_train_on_a_real_image(row, out, d2_datasets):
    """Mapper and model of a row agree (decoder upsamplings <-> mapper output_stride, encoding <->
    head channels, EDS / void flags): one training step on a COCO image with a tiny backbone in
    place of ViT-B."""
    from detectron2.config import instantiate
    from detectron2.data import DatasetCatalog

    cfg = load(f"configs/coco/ablations/{row}.py")
    cfg.model.backbone.model_name = "vit_small_patch14_dinov2"
    cfg.model.backbone.model_kwargs = dict(embed_dim=48, depth=4, num_heads=3)
    cfg.model.backbone.out_indices = (0, 1, 2, 3)
    cfg.model.decoder.width = 32
    torch.manual_seed(0)
    model = instantiate(cfg.model).train()
    mapper = instantiate(cfg.dataloader.train.mapper)
    sample = mapper(DatasetCatalog.get("coco_2017_val_panoptic")[0])
    assert tuple(sample["image"].shape[-2:]) == (420, 420)
    # ICML decoder: 420 * 8 / 14 = 240; paper_v1's (4 upsamplings): 420 * 16 / 14 = 480
    assert tuple(sample["targets"]["sem_seg"].shape) == (out, out)
    losses = model([sample])
    assert {"loss_sem", "loss_inst"} <= set(losses) and all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()


def test_stage2_depth_trains_on_a_mixed_batch(d2_datasets, tmp_path):
    """vitl_stage2_depth.py: a COCO image (panoptic + pseudo-depth targets) and a depth-only image
    (as NYUv2's dicts: no panoptic annotation) in one batch, with a tiny backbone."""
    import numpy as np
    from detectron2.config import instantiate
    from detectron2.data import DatasetCatalog
    from PIL import Image

    cfg = load("configs/coco/vitl_stage2_depth.py")
    cfg.model.backbone.model_name = "vit_small_patch14_dinov2"
    cfg.model.backbone.model_kwargs = dict(embed_dim=48, depth=2, num_heads=3)
    cfg.model.backbone.out_indices = (0, 1)
    cfg.model.decoder.width = 32
    cfg.dataloader.train.mapper.depth.root = [str(tmp_path)]
    coco = DatasetCatalog.get("coco_2017_val_panoptic")[:2]
    for d in coco:  # relative-depth pseudo-labels (disparity) for the two images
        w, h = Image.open(d["file_name"]).size
        np.save(tmp_path / (os.path.splitext(os.path.basename(d["file_name"]))[0] + ".npy"),
                np.tile(np.linspace(1.0, 2.0, w, dtype=np.float32), (h, 1)))
    depth_only = {k: coco[1][k] for k in ("file_name", "image_id")}
    mapper = instantiate(cfg.dataloader.train.mapper)
    batch = [mapper(coco[0]), mapper(depth_only)]
    assert {"sem_seg", "inst_uv", "depth", "depth_valid"} <= set(batch[0]["targets"])
    assert set(batch[1]["targets"]) == {"depth", "depth_valid"}
    torch.manual_seed(0)
    losses = instantiate(cfg.model).train()(batch)
    assert {"loss_sem", "loss_inst", "loss_depth"} <= set(losses)
    assert all(torch.isfinite(v) for v in losses.values()) and losses["loss_depth"] > 0


# ------------------------------------------------------------------------------------------
# tools/train_net.py --config-file configs/coco/vitl_stage3.py
# ------------------------------------------------------------------------------------------
def test_train_net_runs_vitl_stage3(d2_datasets, tmp_path):
    """The stage-3 config as tools/train_net.py runs it (resumable loader, "auto" accumulation,
    bf16 autocast, gradient checkpointing, PQ + mIoU evaluation), with a tiny ViT, 280 px
    instead of 1008 px (CPU time) and 1 optimizer step of 2 accumulated batches on the COCO
    fixture images."""
    import json

    out = tmp_path / "stage3"
    args = [
        "train.init_checkpoint=", "model.backbone.model_name=vit_small_patch14_dinov2",
        "model.backbone.model_kwargs={embed_dim:48,depth:2,num_heads:3}", "model.backbone.out_indices=[0,1]",
        "model.decoder.width=32",
        "dataloader.train.dataset.names=coco_2017_val_panoptic", "dataloader.train.num_workers=0",
        "dataloader.test.num_workers=0", "dataloader.train.total_batch_size=1", "train.effective_batch_size=2",
        "dataloader.train.mapper.input_size=280", "dataloader.train.mapper.augmentations.size=280",
        "dataloader.test.mapper.augmentations.size=280",
        "train.max_iter=1", "train.log_period=1", f"train.output_dir={out}",
    ]
    cmd = [sys.executable, os.path.join(ROOT, "tools/train_net.py"), "--config-file",
           os.path.join(ROOT, "configs/coco/vitl_stage3.py"), "--metrics-json", str(out / "m.json")] + args
    env = dict(os.environ, DETECTRON2_DATASETS=str(d2_datasets), PYTHONWARNINGS="ignore", OMP_NUM_THREADS="2")
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-6000:]
    assert "Starting training from iteration 0" in log
    metrics = [json.loads(x) for x in (out / "metrics.json").read_text().splitlines()]
    assert [m["iteration"] for m in metrics if "total_loss" in m] == [0]
    final = json.loads((out / "m.json").read_text())
    assert {"PQ", "PQ_th", "PQ_st"} <= set(final["panoptic_seg"]) and "mIoU" in final["sem_seg"]
    assert (out / "model_final.pth").is_file()


# ------------------------------------------------------------------------------------------
# speed options: the torch.compile switch (train.compile)
# ------------------------------------------------------------------------------------------
def test_maybe_compile_compiles_the_network_parts_in_place():
    from pe_panoptic.engine.trainer import maybe_compile

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.backbone, self.decoder, self.other = (torch.nn.Linear(2, 2) for _ in range(3))

    net = Net()
    keys = list(net.state_dict())
    assert maybe_compile(net, False) is net and net.backbone._compiled_call_impl is None
    assert maybe_compile(net, {"enabled": False}) is net and net.backbone._compiled_call_impl is None
    maybe_compile(net, {"backend": "eager"})
    assert net.backbone._compiled_call_impl is not None and net.decoder._compiled_call_impl is not None
    assert net.other._compiled_call_impl is None
    assert list(net.state_dict()) == keys  # checkpoints keep their parameter names
    torch.testing.assert_close(net.backbone(torch.ones(1, 2)), torch.nn.functional.linear(
        torch.ones(1, 2), net.backbone.weight, net.backbone.bias))


@pytest.mark.parametrize("out_indices", [(1,), (0, 1, 2)])
def test_changing_out_indices_alone_builds_a_working_model(out_indices):
    """The decoder's input channels follow from the backbone (no hand-typed in_channels): changing
    ``model.backbone.out_indices`` alone gives a model that trains one step, with the same
    state-dict keys as a decoder configured by hand."""
    from detectron2.config import instantiate

    from pe_panoptic.modeling.decoder import TransposedConvDecoder

    cfg = load("configs/synthetic/pe_tiny.py")
    assert "in_channels" not in cfg.model.decoder
    cfg.model.backbone.model_kwargs = dict(embed_dim=48, depth=3, num_heads=3)
    cfg.model.backbone.out_indices = out_indices
    cfg.model.decoder.width = 32
    torch.manual_seed(0)
    model = instantiate(cfg.model).train()
    assert isinstance(model.decoder, TransposedConvDecoder)
    assert model.decoder.in_channels == 48 * len(out_indices)
    by_hand = TransposedConvDecoder(in_channels=48 * len(out_indices), width=32, num_upsample=3)
    assert list(model.decoder.state_dict()) == list(by_hand.state_dict())
    assert {k: v.shape for k, v in model.decoder.state_dict().items()} == \
        {k: v.shape for k, v in by_hand.state_dict().items()}
    x = torch.randn(1, 3, 56, 56)
    out = model.forward_features(x)
    assert all(torch.isfinite(v).all() for v in out.values() if torch.is_tensor(v))
    sum(v.float().mean() for v in out.values() if torch.is_tensor(v) and v.is_floating_point()).backward()
    assert all(p.grad is not None for p in model.decoder.layers.parameters() if p.requires_grad)
    model.eval()
    with torch.no_grad():
        (res,) = model([{"image": torch.zeros(3, 56, 56, dtype=torch.uint8), "height": 56, "width": 56}])
    assert res["panoptic_seg"][0].shape == (56, 56)
