"""configs/coco/vitl_stage3_depth.py (ICML Table 1 "Ours w/ depth", 54.5 PQ): the values that
define the row, and a tiny version of it (small ViT, fabricated panoptic + NYUv2 datasets) that
trains 2 optimizer steps, one on each kind of batch."""
import logging
import math
import os
import uuid

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

from detectron2.config import LazyConfig, instantiate
from detectron2.data import DatasetCatalog, MetadataCatalog

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(ROOT, "configs", "coco", "vitl_stage3_depth.py")


def load(rel=CONFIG):
    import pe_panoptic  # noqa: F401

    return LazyConfig.load(rel if os.path.isabs(rel) else os.path.join(ROOT, rel))


def test_row_defining_values():
    cfg = load()
    t = cfg.dataloader.train
    assert t._target_.__name__ == "build_mixed_train_loader"
    assert list(t.datasets.names) == ["coco_2017_train_panoptic", "nyuv2_depth_train"]
    assert list(t.names) == ["coco_2017_train_panoptic", "nyuv2_depth_train"]
    assert [tuple(x) for x in t.tasks] == [("sem", "inst"), ("depth",)]
    assert t.weights is None  # proportional to the dataset sizes
    # one dataset per optimizer step, seeded by the run's seed (interpolations, resolved here)
    assert OmegaConf.is_interpolation(t, "effective_batch_size") and OmegaConf.is_interpolation(t, "seed")
    assert (t.effective_batch_size, t.seed) == (cfg.train.effective_batch_size, cfg.train.seed)
    coco, nyu = t.mappers
    # stage 3: 1008 px for both datasets, 3 decoder upsamplings (output 8/14)
    assert coco.input_size == nyu.input_size == 1008 and coco.augmentations.size == nyu.augmentations.size == 1008
    assert cfg.model.decoder.num_upsample == 3 and coco.output_stride == nyu.output_stride == pytest.approx(14 / 8)
    assert (coco.augmentations.min_scale, coco.augmentations.max_scale) == (0.8, 1.25)
    assert (nyu.augmentations.min_scale, nyu.augmentations.max_scale) == (1.0, 1.0)
    assert coco.panoptic.dataset_name == "coco_2017_train_panoptic" and coco.depth is None
    assert nyu.panoptic is None and nyu.depth.dataset_name == "nyuv2_depth_train"
    assert (nyu.depth.kind, nyu.depth.min_depth, nyu.depth.max_depth) == ("metric", 1e-3, 10.0)
    # 50 epochs of COCO + 47K NYUv2 frames at effective batch 16 (8 GPUs x 2), 1 warmup epoch
    assert cfg.train.effective_batch_size == 16 and t.total_batch_size == 16
    assert cfg.train.max_iter == math.ceil(50 * (118287 + 47000) / 16) == 516522
    assert cfg.train.recipe.epochs == 50 and cfg.lr_multiplier.warmup_length == pytest.approx(1 / 50)
    m = cfg.model
    assert tuple(m.tasks) == ("sem", "inst", "depth") and "task_probs" not in m and t.get("task_probs") is None
    assert m.depth is True and m.max_depth == 10.0 and m.loss.depth_loss == "silog"
    assert m.backbone.model_name == "vit_large_patch14_dinov2" and tuple(m.backbone.out_indices) == (4, 11, 17, 23)
    assert m.backbone.grad_checkpointing is True and tuple(m.postprocess.grid) == (80, 80)
    assert cfg.optimizer.lr == 5e-4 and cfg.optimizer.params.layer_decay == 0.6 and cfg.train.amp.enabled
    assert dict(cfg.train.reference) == dict(table="ICML Table 1", row="Ours w/ depth, ViT-L", pq=54.5)
    # starts from stage 2 with depth (it has the depth head: every key must match)
    stage2 = load("configs/coco/vitl_stage2_depth.py")
    assert cfg.train.init_checkpoint == os.path.join(stage2.train.output_dir, "model_final.pth")
    assert list(cfg.train.init_checkpoint_allow_mismatch) == []
    assert cfg.train.output_dir == "output/coco/vitl_stage3_depth"
    # same evaluation as the stage-3 row without depth
    assert cfg.dataloader.test.dataset.names == load("configs/coco/vitl_stage3.py").dataloader.test.dataset.names


def _nyu_layout(root, n=3, h=42, w=56):
    rng = np.random.default_rng(0)
    for sub in ("rgb", "depth"):
        (root / "train" / sub).mkdir(parents=True)
    stems = [f"scene_{i:04d}__00000" for i in range(n)]
    for i, stem in enumerate(stems):
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(root / "train" / "rgb" / f"{stem}.jpg")
        depth_mm = np.full((h, w), 1500 + 500 * i, np.uint16)
        depth_mm[:3] = 0  # no measurement
        Image.fromarray(depth_mm).save(root / "train" / "depth" / f"{stem}.png")
    (root / "splits").mkdir()
    (root / "splits" / "train.txt").write_text("".join(s + "\n" for s in stems))


def test_tiny_version_trains_both_kinds_of_batch(tmp_path, caplog):
    from pe_panoptic.data.mixed import DatasetSchedule
    from pe_panoptic.data.nyu import register_nyuv2_depth
    from pe_panoptic.data.synthetic import generate_synthetic_panoptic, register_synthetic_panoptic
    from pe_panoptic.engine.trainer import PETrainer
    from pe_panoptic.engine.recipes import resolve_accumulate_steps

    tag = uuid.uuid4().hex[:8]
    pan, nyu = f"stage3d_pan_{tag}", f"stage3d_nyu_{tag}"
    generate_synthetic_panoptic(str(tmp_path / "syn"), seed=2, num_train=3, num_val=1, image_size=(56, 56))
    register_synthetic_panoptic(pan, str(tmp_path / "syn"), "train")
    _nyu_layout(tmp_path / "nyuv2")
    register_nyuv2_depth(nyu, str(tmp_path / "nyuv2"), "train")
    try:
        cfg = load()
        cfg.model.backbone.model_name = "vit_small_patch14_dinov2"
        cfg.model.backbone.model_kwargs = dict(embed_dim=48, depth=2, num_heads=3)
        cfg.model.backbone.out_indices = (0, 1)
        cfg.model.decoder.width = 32
        cfg.model.dataset_name = pan
        t = cfg.dataloader.train
        t.datasets.names = [pan, nyu]
        t.names = [pan, nyu]
        t.mappers[0].panoptic.dataset_name = pan
        t.mappers[1].depth.dataset_name = nyu
        for mapper in t.mappers:
            mapper.input_size = mapper.augmentations.size = 56
        t.total_batch_size, t.num_workers = 2, 0
        cfg.train.effective_batch_size = 2
        t.weights = [1, 1]
        # a seed whose first two steps draw one batch of each dataset
        cfg.train.seed = next(s for s in range(100) if sorted(DatasetSchedule([1, 1], s).draws(0, 2)) == [0, 1])

        torch.manual_seed(0)
        model = instantiate(cfg.model).train()
        cfg.optimizer.params.model = model
        optim = instantiate(cfg.optimizer)
        loader = instantiate(cfg.dataloader.train)
        seen = []
        model.register_forward_hook(lambda mod, inp, out: seen.append(({x["dataset"] for x in inp[0]}, dict(out))))
        before = {k: v.detach().clone() for k, v in model.heads.state_dict().items()}
        trainer = PETrainer(model, loader, optim, amp=True, amp_dtype="bf16",
                            accumulate_steps=resolve_accumulate_steps(cfg.train, t.total_batch_size))
        trainer.train(0, 2)

        assert sorted(next(iter(names)) for names, _ in seen) == sorted([pan, nyu])
        for names, losses in seen:
            assert len(names) == 1 and all(torch.isfinite(v) for v in losses.values())
            if names == {pan}:  # a panoptic batch: semantic + instance losses only
                assert {"loss_sem", "loss_inst"} <= set(losses) and "loss_depth" not in losses
            else:  # a NYUv2 batch: the SILog depth loss only
                assert set(losses) == {"loss_depth"} and losses["loss_depth"].item() > 0
        after = model.heads.state_dict()
        changed = {k.split(".")[0] for k in before if not torch.equal(before[k], after[k])}
        assert {"sem", "inst", "depth"} <= changed
        # a step task the batch has no labels for trains nothing, with a warning
        cfg.dataloader.train.task_probs = {"sem": 1.0}
        nyu_batch = next(b for b in iter(instantiate(cfg.dataloader.train)) if b[0]["dataset"] == nyu)
        assert all(x["tasks"] == () for x in nyu_batch)
        with caplog.at_level(logging.WARNING, logger="pe_panoptic.modeling.meta_arch"):
            assert set(model(nyu_batch)) == {"loss_zero"}
        assert any("this batch trains nothing" in r.getMessage() for r in caplog.records)
    finally:
        for name in (pan, nyu):
            DatasetCatalog.remove(name)
            MetadataCatalog.remove(name)
