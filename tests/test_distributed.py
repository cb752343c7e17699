"""DDP through ``tools/train_net.py --num-gpus 2`` (gloo, CPU processes): a few iterations and an
evaluation on synthetic data match a 1-process run of the same total batch.

The 1-process run is 1 process x batch 1 x ``accumulate_steps=2`` (total batch 2 per optimizer
step): it computes exactly what DDP computes, the average of the two images' gradients, so losses,
weights and metrics must agree to float precision. (1 process x one batch of 2 is not an exact
reference: the losses are EDS-weighted pixel means over the *batch*, which weighs the two images by
their pixel weights instead of 1/2 each; in a 4-iteration run its losses differed from DDP's by
0.2-1.5%.) Both runs see the same images with the same augmentations thanks to
:class:`pe_panoptic.data.resumable.ResumableTrainLoader`. The decoder uses GroupNorm: BatchNorm
statistics per process would differ from those of a batch of 2 (SyncBN would fix training but not
the per-process running statistics used in evaluation).
"""
import json
import os
import subprocess
import sys

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DRIVER = os.path.join(ROOT, "tests", "train_driver.py")
CONFIG = os.path.join(ROOT, "configs/synthetic/pe_tiny.py")
ITERS = 4

TINY = [
    "model.backbone.model_kwargs.depth=2", "model.backbone.out_indices=[0,1]",
    "model.decoder.width=32", "model.decoder.norm=GN",
    "dataloader.train._target_=pe_panoptic.data.resumable.build_resumable_train_loader",
    "dataloader.train.num_workers=0", "dataloader.test.num_workers=0",
    "train.seed=7", "train.log_period=1", f"train.max_iter={ITERS}", "train.checkpointer.period=100",
    "dataloader.train.task_probs=null",  # summed losses: every loss term is logged, and compared, at every step
]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    from pe_panoptic.data.synthetic import generate_synthetic_panoptic

    tmp = tmp_path_factory.mktemp("ddp")
    generate_synthetic_panoptic(str(tmp / "d2ds" / "synthetic_panoptic"), seed=4, num_train=12, num_val=3)
    env = dict(os.environ, DETECTRON2_DATASETS=str(tmp / "d2ds"), PYTHONWARNINGS="ignore", OMP_NUM_THREADS="1")
    variants = {
        "ddp2": ["--num-gpus", "2", "dataloader.train.total_batch_size=2"],
        "accum2": ["dataloader.train.total_batch_size=1", "train.accumulate_steps=2"],
    }
    out = {}
    for name, extra in variants.items():
        d = tmp / name
        cmd = [sys.executable, DRIVER, "--config-file", CONFIG, "--metrics-json", str(d / "final.json")]
        cmd += extra + TINY + [f"train.output_dir={d}"]
        proc = subprocess.run(cmd, env=dict(env, PE_TEST_LOSS_LOG=str(tmp / f"{name}.jsonl")),
                              capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, name + "\n" + proc.stdout[-3000:] + proc.stderr[-5000:]
        out[name] = {
            "log": proc.stdout + proc.stderr,
            "losses": [json.loads(line) for line in (tmp / f"{name}.jsonl").read_text().splitlines()],
            "metrics": json.loads((d / "final.json").read_text()),
            "weights": torch.load(d / "model_final.pth", map_location="cpu", weights_only=False)["model"],
        }
    return out


def test_two_processes_really_ran(runs):
    log = runs["ddp2"]["log"]
    assert "Rank of current process: 0. World size: 2" in log
    assert "on 2 devices" in log  # detectron2's inference_on_dataset sharded the evaluation
    assert len(runs["ddp2"]["losses"]) == ITERS


def test_ddp_equals_gradient_accumulation(runs):
    a, b = runs["ddp2"], runs["accum2"]
    for ra, rb in zip(a["losses"], b["losses"]):
        assert ra["iter"] == rb["iter"]
        for key in ("lr", "total_loss", "loss_sem", "loss_inst"):
            assert ra[key] == pytest.approx(rb[key], rel=1e-5, abs=1e-7), (ra["iter"], key)
    assert a["weights"].keys() == b["weights"].keys()
    for k, v in a["weights"].items():
        torch.testing.assert_close(v, b["weights"][k], rtol=1e-4, atol=1e-6, msg=k)
    assert a["losses"][-1]["total_loss"] < a["losses"][0]["total_loss"]  # it trained
    assert a["metrics"]["sem_seg"]["mIoU"] > 1.0  # after 4 iterations PQ may still be 0, mIoU is not
    for task, keys in (("panoptic_seg", ("PQ", "PQ_th", "PQ_st")), ("sem_seg", ("mIoU",))):
        for key in keys:
            assert a["metrics"][task][key] == pytest.approx(b["metrics"][task][key], abs=1e-4), key
