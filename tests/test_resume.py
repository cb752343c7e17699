"""A training run killed mid-way (SIGKILL) and continued with ``--resume`` reproduces the losses,
learning rates and final weights of an uninterrupted run; plus unit tests of the resumable data
stream that makes this possible."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DRIVER = os.path.join(ROOT, "tests", "train_driver.py")
CONFIG = os.path.join(ROOT, "configs/synthetic/pe_tiny.py")

# a smaller pe_tiny (2 blocks, decoder width 32, GN) on a 12-image synthetic dataset
TINY = [
    "model.backbone.model_kwargs.depth=2", "model.backbone.out_indices=[0,1]",
    "model.decoder.width=32", "model.decoder.norm=GN",
    "model.backbone.drop_path_rate=0.1",  # stochastic depth: resume must reproduce its random draws
    "dataloader.train._target_=pe_panoptic.data.resumable.build_resumable_train_loader",
    "dataloader.train.total_batch_size=2", "dataloader.train.num_workers=1", "dataloader.test.num_workers=0",
    "train.seed=3", "train.log_period=1", "dataloader.train.task_probs=null",  # summed losses: every loss logged each step
]


@pytest.fixture(scope="module")
def synthetic_env(tmp_path_factory):
    from pe_panoptic.data.synthetic import generate_synthetic_panoptic

    root = tmp_path_factory.mktemp("d2ds")
    generate_synthetic_panoptic(str(root / "synthetic_panoptic"), seed=2, num_train=12, num_val=2)
    return dict(os.environ, DETECTRON2_DATASETS=str(root), PYTHONWARNINGS="ignore", OMP_NUM_THREADS="1")


def train(args, env, *, loss_log, kill_at=None, expect_rc=0):
    env = dict(env, PE_TEST_LOSS_LOG=str(loss_log))
    if kill_at is not None:
        env["PE_TEST_KILL_AT"] = str(kill_at)
    cmd = [sys.executable, DRIVER, "--config-file", CONFIG] + args
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == expect_rc, proc.stdout[-3000:] + proc.stderr[-5000:]
    return proc


def read_log(path):
    return {r["iter"]: r for r in map(json.loads, open(path).read().splitlines())}


def test_killed_run_resumes_exactly(synthetic_env, tmp_path):
    common = TINY + ["train.max_iter=6", "train.checkpointer.period=2"]
    full, crash = tmp_path / "full", tmp_path / "crash"
    train(common + [f"train.output_dir={full}"], synthetic_env, loss_log=tmp_path / "full.jsonl")

    # killed before iteration 3: iteration 2 ran, but the last checkpoint is from iteration 1
    train(common + [f"train.output_dir={crash}"], synthetic_env, loss_log=tmp_path / "crash.jsonl",
          kill_at=3, expect_rc=-9)
    assert (crash / "last_checkpoint").read_text().strip() == "model_0000001.pth"
    assert not (crash / "model_final.pth").exists()
    before = read_log(tmp_path / "crash.jsonl")
    assert sorted(before) == [0, 1, 2]

    proc = train(["--resume"] + common + [f"train.output_dir={crash}"], synthetic_env,
                 loss_log=tmp_path / "resumed.jsonl")
    assert "Starting training from iteration 2" in proc.stdout + proc.stderr
    ref, resumed = read_log(tmp_path / "full.jsonl"), read_log(tmp_path / "resumed.jsonl")
    assert sorted(ref) == list(range(6)) and sorted(resumed) == list(range(2, 6))
    for it in range(2, 6):
        for key in ("lr", "total_loss", "loss_sem", "loss_inst"):
            assert resumed[it][key] == pytest.approx(ref[it][key], rel=1e-5, abs=1e-7), (it, key)
    # the learning rate really changes along the schedule, so the check above is not vacuous
    assert len({round(ref[it]["lr"], 10) for it in range(2, 6)}) == 4
    # iteration 2 of the crashed run (lost work, redone after resume) also matches
    assert before[2]["total_loss"] == pytest.approx(ref[2]["total_loss"], rel=1e-5)

    a = torch.load(full / "model_final.pth", map_location="cpu", weights_only=False)
    b = torch.load(crash / "model_final.pth", map_location="cpu", weights_only=False)
    assert a["iteration"] == b["iteration"] == 5
    for k, v in a["model"].items():
        torch.testing.assert_close(b["model"][k], v, rtol=1e-5, atol=1e-6, msg=k)
    # optimizer state (AdamW moments) continues too
    sa, sb = a["trainer"]["optimizer"]["state"], b["trainer"]["optimizer"]["state"]
    assert sa.keys() == sb.keys() and len(sa) > 0
    for k in sa:
        torch.testing.assert_close(sb[k]["exp_avg_sq"], sa[k]["exp_avg_sq"], rtol=1e-4, atol=1e-10)
        assert float(sb[k]["step"]) == float(sa[k]["step"]) == 6.0


# ------------------------------------------------------------------------------------------
# the data stream (fast unit tests, no training)
# ------------------------------------------------------------------------------------------
def _fake_mapper(d):
    # the "augmentation" draws from all three global RNGs the mapper may use
    import random

    return {"idx": d["idx"], "aug": (random.random(), float(np.random.rand()), float(torch.rand(())))}


def _stream(loader, n):
    it = iter(loader)
    return [[(x["idx"], x["aug"]) for x in next(it)] for _ in range(n)]


@pytest.fixture
def dataset():
    return [{"idx": i} for i in range(7)]


def test_stream_is_an_epoch_permutation_and_seeded():
    from pe_panoptic.data.resumable import SampleStream

    s = SampleStream(7, seed=11)
    first, second = [s.index(p) for p in range(7)], [s.index(p) for p in range(7, 14)]
    assert sorted(first) == sorted(second) == list(range(7))  # each image once per epoch
    assert first != second  # reshuffled every epoch
    assert [SampleStream(7, seed=11).index(p) for p in range(14)] == first + second  # seekable, deterministic
    assert [SampleStream(7, seed=12).index(p) for p in range(7)] != first
    assert [SampleStream(7, 0, shuffle=False).index(p) for p in range(9)] == [0, 1, 2, 3, 4, 5, 6, 0, 1]
    assert s.sample_seed(5) != s.sample_seed(6) and s.sample_seed(5) == SampleStream(7, 11).sample_seed(5)


@pytest.mark.parametrize("workers", [0, 2])
def test_set_start_skips_exactly_and_workers_do_not_matter(dataset, workers):
    from pe_panoptic.data.resumable import ResumableTrainLoader

    ref = _stream(ResumableTrainLoader(dataset, _fake_mapper, total_batch_size=3, seed=5), 6)
    assert len({a for batch in ref for _, a in batch}) == 18  # every sample gets fresh random numbers
    loader = ResumableTrainLoader(dataset, _fake_mapper, total_batch_size=3, seed=5, num_workers=workers)
    it = iter(loader)  # the trainer takes its iterator before the checkpoint is loaded
    loader.set_start(4)
    got = [[(x["idx"], x["aug"]) for x in next(it)] for _ in range(2)]
    assert got == ref[4:6]
    with pytest.raises(RuntimeError, match="already started"):
        loader.set_start(0)
    # the caller's global RNG state is not touched by the seeded augmentations
    np.random.seed(0)
    expected = np.random.rand()
    np.random.seed(0)
    next(iter(ResumableTrainLoader(dataset, _fake_mapper, total_batch_size=2, seed=5)))
    assert np.random.rand() == expected


def test_ranks_split_the_global_batch(dataset, monkeypatch):
    """Process r of R gets its consecutive share of every global micro-batch."""
    from detectron2.utils import comm

    from pe_panoptic.data.resumable import ResumableTrainLoader

    whole = _stream(ResumableTrainLoader(dataset, _fake_mapper, total_batch_size=4, seed=9), 3)
    monkeypatch.setattr(comm, "get_world_size", lambda: 2)
    shares = []
    for r in (0, 1):
        monkeypatch.setattr(comm, "get_rank", lambda r=r: r)
        shares.append(_stream(ResumableTrainLoader(dataset, _fake_mapper, total_batch_size=4, seed=9), 3))
    assert [a + b for a, b in zip(*shares)] == whole
    with pytest.raises(ValueError, match="multiple of the number of processes"):
        ResumableTrainLoader(dataset, _fake_mapper, total_batch_size=3, seed=9)


def test_mapper_rejections_are_retried_deterministically(dataset):
    from pe_panoptic.data.resumable import ResumableTrainLoader, build_resumable_train_loader

    def picky(d):
        return None if d["idx"] % 2 else _fake_mapper(d)

    a = _stream(ResumableTrainLoader(dataset, picky, total_batch_size=2, seed=1), 5)
    b = _stream(ResumableTrainLoader(dataset, picky, total_batch_size=2, seed=1), 5)
    assert a == b and all(i % 2 == 0 for batch in a for i, _ in batch)
    never = ResumableTrainLoader(dataset, lambda d: None, total_batch_size=1, seed=1, max_retries=3)
    with pytest.raises(RuntimeError, match="rejected 4 images"):
        next(iter(never))
    with pytest.raises(ValueError, match="aspect_ratio_grouping"):
        build_resumable_train_loader(dataset, mapper=picky, total_batch_size=2, aspect_ratio_grouping=True)
