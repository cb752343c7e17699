"""Issue 22 (runs, checkpoints and settings): a run folder is locked while it trains; checkpoints
and last_checkpoint are written atomically (a SIGKILL mid-write leaves no 0-byte file; a truncated
model_final.pth is not a finished run); an invalid last_checkpoint falls back to the newest complete
checkpoint; a full disk is named; missing FrozenBN statistics are missing keys; bad settings are
refused up front; --resume refuses changed schedule values unless --apply-schedule-changes (then
applies them); --eval-only and refused resumes leave config.yaml alone."""
import argparse
import errno
import logging
import os
import pathlib
import signal
import subprocess
import sys
import time

import pytest
import torch
from torch import nn

from pe_panoptic.engine.checkpoint_files import DiskFullError, checkpoint_file_problem
from pe_panoptic.engine.checkpoint_io import CheckpointError, StrictCheckpointer
from pe_panoptic.engine.config_overrides import load_config
from pe_panoptic.engine.run_dir import OutputDirInUseError, existing_run, lock_run_dir, unlock_run_dir
from pe_panoptic.engine.run_settings import SettingsError

from test_tool_refusals import CONFIG, TINY, tool

ROOT = pathlib.Path(__file__).resolve().parents[1]
COCO = "coco_2017_val_panoptic"
COCO_OPTS = TINY + [f"model.dataset_name={COCO}", f"dataloader.train.dataset.names={COCO}",
                    f"dataloader.train.mapper.panoptic.dataset_name={COCO}", f"dataloader.test.dataset.names={COCO}",
                    f"dataloader.test.mapper.panoptic.dataset_name={COCO}", f"dataloader.evaluator.dataset_name={COCO}",
                    "dataloader.train.total_batch_size=1", "dataloader.train.num_workers=0",
                    "dataloader.test.num_workers=0", "train.device=cpu", "train.checkpointer.period=1"]


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Conv2d(3, 4, 1)


def _env():
    return dict(os.environ, PYTHONPATH=f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
                PYTHONWARNINGS="ignore")


# ------------------------------------------------------------------------------ BAD 2: lock
def test_a_second_training_into_a_locked_folder_fails_at_once(tmp_path):
    out = tmp_path / "run"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from pe_panoptic.engine.run_dir import lock_run_dir; "
         f"lock_run_dir({str(out)!r}); print('locked', flush=True); time.sleep(120)"],
        stdout=subprocess.PIPE, text=True, env=_env())
    try:
        assert holder.stdout.readline().strip() == "locked"
        train_net = tool("train_net")
        args = train_net.parse_args(["--config-file", CONFIG, f"train.output_dir={out}"])
        t0 = time.time()
        with pytest.raises(OutputDirInUseError) as e:
            train_net.main(args)
        assert time.time() - t0 < 30
        msg = str(e.value)
        assert f"train.output_dir={out} is in use by another training (pid {holder.pid}" in msg
        assert not (out / "config.yaml").exists()
    finally:
        holder.send_signal(signal.SIGKILL)  # a crash: the OS releases the lock
        holder.wait()
    lock_run_dir(str(out))  # free again
    unlock_run_dir(str(out))


# ------------------------------------------------------------------------------ BAD 3: atomic writes
def test_sigkill_while_writing_model_final_leaves_no_partial_file(tmp_path):
    torch.manual_seed(0)
    StrictCheckpointer(Net(), str(tmp_path)).save("model_0000004", iteration=4)
    script = (
        "import os, signal, torch\n"
        "from pe_panoptic.engine.checkpoint_io import StrictCheckpointer\n"
        "real = torch.save\n"
        "def dying_save(obj, f):\n"
        "    f.write(b'PK\\x03\\x04' + b'x' * 1000); f.flush(); os.kill(os.getpid(), signal.SIGKILL)\n"
        "torch.save = dying_save\n"
        f"StrictCheckpointer(torch.nn.Conv2d(3, 4, 1), {str(tmp_path)!r}).save('model_final', iteration=5)\n")
    proc = subprocess.run([sys.executable, "-c", script], env=_env(), capture_output=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL
    assert not (tmp_path / "model_final.pth").exists()
    assert (tmp_path / "last_checkpoint").read_text() == "model_0000004.pth"
    assert existing_run(str(tmp_path)).startswith("an unfinished run")
    # a 0-byte / truncated model_final.pth (written by an older, non-atomic version) is not a finished run
    (tmp_path / "model_final.pth").write_bytes(b"")
    assert existing_run(str(tmp_path)) == "an unfinished run (model_final.pth is empty (0 bytes))"
    good = (tmp_path / "model_0000004.pth").read_bytes()
    (tmp_path / "model_final.pth").write_bytes(good[: len(good) // 2])
    assert "model_final.pth is truncated or corrupt" in existing_run(str(tmp_path))
    (tmp_path / "model_final.pth").write_bytes(good)
    assert existing_run(str(tmp_path)) == "a finished run (model_final.pth)"


def test_atomic_save_keeps_the_bytes_of_detectron2s_save(tmp_path):
    from detectron2.checkpoint import DetectionCheckpointer

    torch.manual_seed(0)
    net = Net()
    (tmp_path / "d2").mkdir()
    (tmp_path / "ours").mkdir()
    DetectionCheckpointer(net, str(tmp_path / "d2")).save("model_final", iteration=1)
    StrictCheckpointer(net, str(tmp_path / "ours")).save("model_final", iteration=1)
    a = torch.load(tmp_path / "d2" / "model_final.pth", weights_only=True)
    b = torch.load(tmp_path / "ours" / "model_final.pth", weights_only=True)
    assert a.keys() == b.keys() and all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert (tmp_path / "ours" / "last_checkpoint").read_text() == "model_final.pth"
    assert sorted(os.listdir(tmp_path / "ours")) == ["last_checkpoint", "model_final.pth"]  # no temp files


# ------------------------------------------------------------------------------ POOR: last_checkpoint fallback
def test_invalid_last_checkpoint_falls_back_to_the_newest_complete_one(tmp_path, caplog):
    torch.manual_seed(0)
    net = Net()
    ck = StrictCheckpointer(net, str(tmp_path))
    ck.save("model_0000001", iteration=1)
    ck.save("model_0000003", iteration=3)
    (tmp_path / "last_checkpoint").write_text("")  # a non-atomic write, interrupted
    with caplog.at_level(logging.WARNING):
        assert StrictCheckpointer(Net(), str(tmp_path)).resume_or_load("", resume=True)["iteration"] == 3
    assert "last_checkpoint is empty" in caplog.text and "resuming from" in caplog.text
    data = (tmp_path / "model_0000003.pth").read_bytes()
    (tmp_path / "model_0000003.pth").write_bytes(data[:100])
    (tmp_path / "last_checkpoint").write_text("model_0000003.pth")
    assert StrictCheckpointer(Net(), str(tmp_path)).resume_or_load("", resume=True)["iteration"] == 1
    (tmp_path / "model_0000001.pth").write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"no complete checkpoint .*model_0000001.pth: empty"):
        StrictCheckpointer(Net(), str(tmp_path)).resume_or_load("", resume=True)


# ------------------------------------------------------------------------------ POOR: full disk
@pytest.mark.parametrize("error", [
    RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 64 vs 0"),
    OSError(errno.ENOSPC, "No space left on device"),
])
def test_a_full_disk_is_named(tmp_path, monkeypatch, error):
    torch.manual_seed(0)
    ck = StrictCheckpointer(Net(), str(tmp_path))
    ck.save("model_0000001", iteration=1)
    before = (tmp_path / "model_0000001.pth").read_bytes()

    def full(obj, f):
        f.write(b"PK\x03\x04partial")
        raise error

    monkeypatch.setattr(torch, "save", full)
    with pytest.raises(DiskFullError) as e:
        ck.save("model_0000001", iteration=2)
    assert "ENOSPC" in str(e.value) and str(tmp_path / "model_0000001.pth") in str(e.value)
    assert e.value.errno == errno.ENOSPC
    assert (tmp_path / "model_0000001.pth").read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["last_checkpoint", "model_0000001.pth"]
    assert checkpoint_file_problem(str(tmp_path / "model_0000001.pth")) is None


# ------------------------------------------------------------------------------ BAD 7: FrozenBN buffers
def test_missing_frozen_bn_statistics_are_missing_keys(tmp_path):
    from detectron2.modeling.backbone.resnet import BasicStem

    torch.manual_seed(0)
    torch.save({"model": BasicStem(3, 64, norm="GN").state_dict()}, tmp_path / "gn.pth")
    with pytest.raises(CheckpointError) as e:
        StrictCheckpointer(BasicStem(3, 64, norm="FrozenBN")).load(str(tmp_path / "gn.pth"))
    msg = str(e.value)
    assert "2 model parameters missing from the checkpoint" in msg
    assert "conv1.norm.running_mean" in msg and "conv1.norm.running_var" in msg
    # a FrozenBN checkpoint still loads exactly
    src = BasicStem(3, 64, norm="FrozenBN")
    src.conv1.norm.running_mean.normal_()
    torch.save({"model": src.state_dict()}, tmp_path / "frozen.pth")
    dst = BasicStem(3, 64, norm="FrozenBN")
    StrictCheckpointer(dst).load(str(tmp_path / "frozen.pth"))
    assert torch.equal(dst.conv1.norm.running_mean, src.conv1.norm.running_mean)


# ------------------------------------------------------------------------------ POOR: settings
@pytest.mark.parametrize("override, message", [
    ("train.max_iter=-5", r"train.max_iter=-5: the number of iterations must be an int >= 1"),
    ("train.max_iter=0", r"train.max_iter=0: the number of iterations must be an int >= 1"),
    ("train.amp.dtype=fp8", r"train.amp.dtype='fp8' is not supported: use one of"),
    ("train.output_dir=''", r"train.output_dir='': give the folder"),
    ("train.init_checkpoint_allow_mismatch=['']", r"an empty prefix would allow every key"),
])
def test_bad_settings_are_refused_up_front(tmp_path, override, message):
    train_net = tool("train_net")
    args = train_net.parse_args(["--config-file", CONFIG, f"train.output_dir={tmp_path / 'o'}", override])
    with pytest.raises(SettingsError, match=message):
        train_net.main(args)
    assert not (tmp_path / "o").exists()


def test_empty_mismatch_prefix_refused_by_the_checkpointer():
    with pytest.raises(ValueError, match="an empty prefix would allow every key"):
        StrictCheckpointer(Net(), allow_mismatch=["heads.", ""])


# ------------------------------------------------------------------------------ BAD 8 + POOR: resume / eval-only
def test_resume_with_changed_schedule_and_eval_only_keep_the_run(d2_datasets, tmp_path):
    train_net = tool("train_net")
    out = tmp_path / "run"

    def run(*extra):
        flags = [x for x in extra if x.startswith("--")]
        opts = [x for x in extra if not x.startswith("--")]
        return train_net.main(train_net.parse_args(
            ["--config-file", CONFIG, *flags, *COCO_OPTS, f"train.output_dir={out}", *opts]))

    run("train.max_iter=2")
    config = (out / "config.yaml").read_bytes()
    assert b"lr: 0.001" in config
    with pytest.raises(SettingsError) as e:
        run("--resume", "train.max_iter=2", "optimizer.lr=0.5")
    assert "optimizer.lr: 0.001 -> 0.5" in str(e.value) and "train.init_checkpoint" in str(e.value)
    with pytest.raises(SettingsError, match=r"train.max_iter: 2 -> 3"):
        run("--resume", "train.max_iter=3")
    assert (out / "config.yaml").read_bytes() == config
    # --eval-only: its own sub-folder, the run's config.yaml untouched
    run("--eval-only", f"train.init_checkpoint={out / 'model_final.pth'}", "train.max_iter=2")
    assert (out / "config.yaml").read_bytes() == config
    (ev,) = [p for p in out.iterdir() if p.name.startswith("eval_")]
    assert (ev / "config.yaml").is_file() and (ev / "log.txt").is_file()


def test_prepare_output_dir_with_a_plain_namespace(tmp_path):
    """Callers passing an argparse.Namespace with only resume / overwrite keep working."""
    train_net = tool("train_net")
    cfg = load_config(CONFIG, [f"train.output_dir={tmp_path}"])
    assert train_net.prepare_output_dir(argparse.Namespace(resume=True, overwrite=False), cfg) is None
