"""One task per optimizer step (paper_v1 Sec. 5.1: "Each batch contains only sampling from one of
the tasks, with the instance segmentation being twice more likely"): every process of a
data-parallel run and every gradient-accumulation micro-batch of a step train the same task.

The task is drawn on the data side: :class:`pe_panoptic.data.resumable.ResumableTrainLoader` with
``task_probs`` tags every dict of a step with its task (:mod:`pe_panoptic.data.task_draw`) and the
model trains what its batch declares. The distributed test runs
:class:`pe_panoptic.engine.trainer.PETrainer` on a tiny ``PixelCentroidHead`` in 2 CPU processes
(gloo, one image each per step) and in 1 process with 2 accumulation steps of one image each, on
the same images in the same order. The task tags must be identical across ranks and micro-batches,
and the 1-process run must compute the same losses and weights: with per-rank draws the two ranks
would train different heads in one step and DDP's gradient average would not be the accumulated
gradient.
"""
import os

import numpy as np
import pytest
import torch

from pe_panoptic.data.task_draw import StepTaskDraw, check_task_probs, draw_step_task

TASK_PROBS = {"inst": 2 / 3, "sem": 1 / 3}
SEED = 4
STEPS = 4
WORLD = 2
TINY = dict(embed_dim=48, depth=2, num_heads=2)


def tiny_model():
    from pe_panoptic.modeling.backbone import DINOv2Backbone
    from pe_panoptic.modeling.decoder import TransposedConvDecoder
    from pe_panoptic.modeling.meta_arch import PixelCentroidHead

    torch.manual_seed(0)
    backbone = DINOv2Backbone("vit_small_patch14_dinov2", out_indices=(0, 1), img_size=56, model_kwargs=TINY,
                              drop_path_rate=0.0)
    decoder = TransposedConvDecoder(in_channels=2 * 48, width=32, num_upsample=3, norm="GN")
    return PixelCentroidHead(backbone=backbone, decoder=decoder, decoder_width=32, num_classes=3, thing_ids=[0, 1],
                             postprocess=dict(grid=(16, 16)))


def sample(k, h=56, w=56):
    """A 56 x 56 image with a stuff region and two things whose position depends on ``k``."""
    from pe_panoptic.data.targets import panoptic_targets

    rng = np.random.RandomState(k)
    pan = np.zeros((h, w), np.int64)
    pan[:, : w // 3] = 3
    y, x = 4 + k % 5, 25 + k % 7
    pan[y:y + 15, x:x + 18] = 1
    pan[30:50, 20 + k % 9:38 + k % 9] = 2
    info = [dict(id=1, category_id=0, iscrowd=0, isthing=True), dict(id=2, category_id=1, iscrowd=0, isthing=True),
            dict(id=3, category_id=2, iscrowd=0, isthing=False)]
    tg = panoptic_targets(pan, info, input_hw=(h, w), output_hw=(h * 8 // 14, w * 8 // 14))
    img = torch.from_numpy(rng.randint(0, 255, (3, h, w)).astype(np.uint8))
    return {"image": img, "height": h, "width": w, "targets": tg, "file_name": f"img{k}"}


def _copy(x):
    return dict(x)


def train(rank, world, accumulate, out_file):
    """Train STEPS optimizer steps from an unshuffled resumable loader with ``task_probs``: image
    ``s * world * accumulate + j`` is the j-th image of step ``s`` (j = rank on 2 processes, j =
    micro-batch with accumulation). Saves the tasks each micro-batch declared, the logged losses
    of every step and the final weights."""
    from detectron2.engine import HookBase
    from detectron2.utils import comm

    from pe_panoptic.data.resumable import ResumableTrainLoader
    from pe_panoptic.engine.trainer import PETrainer

    torch.set_num_threads(1)
    model = tiny_model().train()
    per_step = world * accumulate
    images = [sample(k) for k in range(STEPS * per_step)]
    loader = ResumableTrainLoader(images, _copy, total_batch_size=world, seed=SEED, shuffle=False,
                                  task_probs=TASK_PROBS, effective_batch_size=per_step)
    draws = []
    model.register_forward_pre_hook(lambda mod, inp: draws.append(sorted({t for x in inp[0] for t in x["tasks"]})))
    net = model
    if world > 1:
        net = torch.nn.parallel.DistributedDataParallel(model, device_ids=None, broadcast_buffers=False)
    optim = torch.optim.SGD(model.parameters(), lr=0.05)
    losses = []

    class Record(HookBase):
        def after_step(self):  # the losses logged at this step (detectron2 averages them over ranks)
            if comm.is_main_process():
                latest = self.trainer.storage.latest()
                losses.append({k: float(v) for k, (v, it) in latest.items()
                               if it == self.trainer.iter and (k.startswith("loss_") or k == "total_loss")})

    trainer = PETrainer(net, loader, optim, accumulate_steps=accumulate)
    trainer.register_hooks([Record()])
    trainer.train(0, STEPS)
    torch.save({"draws": draws, "losses": losses, "weights": model.state_dict()}, out_file)


def _ddp_worker(out_dir):
    from detectron2.utils import comm

    train(comm.get_rank(), WORLD, 1, os.path.join(out_dir, f"ddp_rank{comm.get_rank()}.pt"))


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    from pe_panoptic.engine.launch import launch

    out = tmp_path_factory.mktemp("task_per_step")
    launch(_ddp_worker, num_processes=WORLD, backend="gloo", args=(str(out),), timeout_s=300)
    train(0, 1, WORLD, str(out / "accum.pt"))
    return {name: torch.load(out / f"{name}.pt", weights_only=False)
            for name in ("ddp_rank0", "ddp_rank1", "accum")}


def test_draw_step_task_depends_on_seed_and_step_only():
    draws = [draw_step_task(TASK_PROBS, SEED, i) for i in range(3000)]
    assert draws == [draw_step_task(dict(TASK_PROBS), SEED, i) for i in range(3000)]  # reproducible
    assert 0.63 < draws.count("inst") / len(draws) < 0.70  # paper_v1: instances twice as likely
    assert draws != [draw_step_task(TASK_PROBS, SEED + 1, i) for i in range(3000)]
    torch.manual_seed(123)  # the global RNG plays no part
    assert draw_step_task(TASK_PROBS, SEED, 7) == draws[7]
    assert {draw_step_task({"inst": 1.0, "sem": 0.0}, s, i) for s in range(3) for i in range(50)} == {"inst"}


def test_step_task_draw_fixes_the_task_of_every_micro_batch_of_the_step():
    draw = StepTaskDraw(TASK_PROBS, SEED, batches_per_step=3)
    for g in range(60):
        assert draw.tasks(g) == (draw_step_task(TASK_PROBS, SEED, g // 3),)
    with pytest.raises(ValueError, match="batches_per_step"):
        StepTaskDraw(TASK_PROBS, SEED, 0)
    assert check_task_probs(None) is None
    for bad in ({}, {"sem": -1.0}, {"sem": 0.0}, {"sem": float("nan")}, [0.5, 0.5]):
        with pytest.raises(ValueError, match="task_probs"):
            check_task_probs(bad)


def test_loader_tags_the_step_task_and_the_model_trains_it():
    from pe_panoptic.data.resumable import ResumableTrainLoader

    images = [sample(k) for k in range(8)]
    loader = ResumableTrainLoader(images, _copy, total_batch_size=1, seed=SEED, shuffle=False,
                                  task_probs=TASK_PROBS, effective_batch_size=2)
    assert loader.batches_per_step == 2
    it = iter(loader)
    batches = [next(it) for _ in range(8)]
    assert [b[0]["tasks"] for b in batches] == [(draw_step_task(TASK_PROBS, SEED, g // 2),) for g in range(8)]
    resumed = ResumableTrainLoader(images, _copy, total_batch_size=1, seed=SEED, shuffle=False,
                                   task_probs=TASK_PROBS, effective_batch_size=2)
    resumed.set_start(4)  # a resumed run tags what the uninterrupted run tagged
    assert [next(iter(resumed))[0]["tasks"]] == [batches[4][0]["tasks"]]
    model = tiny_model().train()
    for b in batches[:4]:
        (task,) = b[0]["tasks"]
        other = "sem" if task == "inst" else "inst"
        losses = {k for k in model(b) if k.startswith("loss_")}
        assert any(k.startswith(f"loss_{task}") for k in losses) and not any(k.startswith(f"loss_{other}") for k in losses)
    untagged = [{k: v for k, v in b[0].items() if k != "tasks"}]
    assert {"loss_sem", "loss_inst"} <= set(model(untagged))  # no declared task: every task of the model
    with pytest.raises(ValueError, match="effective_batch_size"):
        ResumableTrainLoader(images, _copy, total_batch_size=2, task_probs=TASK_PROBS, effective_batch_size=3)


def test_trainer_refuses_a_loader_whose_steps_differ_from_its_accumulation():
    from pe_panoptic.data.resumable import ResumableTrainLoader
    from pe_panoptic.engine.trainer import PETrainer

    model = tiny_model().train()
    loader = ResumableTrainLoader([sample(0)], _copy, total_batch_size=1, seed=SEED, task_probs=TASK_PROBS)
    with pytest.raises(ValueError, match="effective_batch_size"):
        PETrainer(model, loader, torch.optim.SGD(model.parameters(), lr=0.1), accumulate_steps=2)


def test_model_task_probs_is_an_error_saying_where_it_moved():
    with pytest.raises(ValueError, match="dataloader.train.task_probs"):
        _model_with(task_probs=TASK_PROBS)
    with pytest.raises(ValueError, match="moved"):
        _model_with(task_probs=None)


def _model_with(**kwargs):
    from pe_panoptic.modeling.meta_arch import PixelCentroidHead

    m = tiny_model()
    return PixelCentroidHead(backbone=m.backbone, decoder=m.decoder, decoder_width=32, num_classes=3,
                             thing_ids=[0, 1], **kwargs)


def test_ranks_and_micro_batches_train_the_same_task(runs):
    expected = [[draw_step_task(TASK_PROBS, SEED, s)] for s in range(STEPS)]
    assert {t[0] for t in expected} == {"inst", "sem"}  # the run covers both tasks
    assert runs["ddp_rank0"]["draws"] == runs["ddp_rank1"]["draws"] == expected
    # 1 process, 2 accumulation micro-batches per step: both micro-batches draw the step's task
    assert runs["accum"]["draws"] == [t for t in expected for _ in range(WORLD)]


def test_ddp_equals_one_process_with_accumulation(runs):
    ddp, acc = runs["ddp_rank0"], runs["accum"]
    assert len(ddp["losses"]) == len(acc["losses"]) == STEPS
    for step, (a, b) in enumerate(zip(ddp["losses"], acc["losses"])):
        assert a.keys() == b.keys(), step
        task = draw_step_task(TASK_PROBS, SEED, step)
        assert any(k.startswith(f"loss_{task}") for k in a) and not any(
            k.startswith("loss_" + ("sem" if task == "inst" else "inst")) for k in a), (step, sorted(a))
        for k in a:
            assert a[k] == pytest.approx(b[k], rel=1e-5, abs=1e-7), (step, k)
    for k, v in ddp["weights"].items():
        torch.testing.assert_close(v, acc["weights"][k], rtol=1e-4, atol=1e-6, msg=k)
        torch.testing.assert_close(v, runs["ddp_rank1"]["weights"][k], rtol=0, atol=0, msg=k)
