"""tools/train_net.py: a short training run on a small synthetic dataset, then --eval-only on the
saved checkpoint reproduces the same metrics; --resume continues from the last checkpoint."""
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(ROOT, "configs/synthetic/pe_tiny.py")


@pytest.fixture(scope="module")
def synthetic_env(tmp_path_factory):
    from pe_panoptic.data.synthetic import ensure_synthetic_panoptic, generate_synthetic_panoptic

    root = tmp_path_factory.mktemp("d2ds")
    generate_synthetic_panoptic(str(root / "synthetic_panoptic"), seed=1, num_train=16, num_val=4)
    ensure_synthetic_panoptic(str(root), variant="small", num_train=3, num_val=2)
    env = dict(os.environ, DETECTRON2_DATASETS=str(root), PYTHONWARNINGS="ignore")
    return env


def run(args, env, config=CONFIG, tool="tools/train_net.py"):
    cmd = [sys.executable, os.path.join(ROOT, tool), "--config-file", config] + args
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return proc.stdout + proc.stderr


SMALL = ["train.max_iter=6", "dataloader.train.total_batch_size=2", "dataloader.train.num_workers=0",
         "dataloader.test.num_workers=0", "train.log_period=2", "train.checkpointer.period=3"]


def test_train_then_eval_only_on_checkpoint(synthetic_env, tmp_path):
    out = tmp_path / "run"
    log = run(["--metrics-json", str(out / "train_metrics.json")] + SMALL + [f"train.output_dir={out}"], synthetic_env)
    assert "eta:" in log  # detectron2's metric printer with ETA
    assert (out / "model_final.pth").is_file() and (out / "model_0000002.pth").is_file()
    assert (out / "metrics.json").is_file()  # detectron2 JSON writer
    trained = json.loads((out / "train_metrics.json").read_text())
    assert {"PQ", "PQ_th", "PQ_st", "SQ", "RQ"} <= set(trained["panoptic_seg"])
    assert "mIoU" in trained["sem_seg"]

    ev = tmp_path / "eval"
    run(["--eval-only", "--metrics-json", str(ev / "m.json"), f"train.init_checkpoint={out / 'model_final.pth'}",
         f"train.output_dir={ev}", "dataloader.test.num_workers=0"], synthetic_env)
    evaluated = json.loads((ev / "m.json").read_text())
    for key in ("PQ", "PQ_th", "PQ_st"):
        assert evaluated["panoptic_seg"][key] == pytest.approx(trained["panoptic_seg"][key], abs=1e-6)
    assert evaluated["sem_seg"]["mIoU"] == pytest.approx(trained["sem_seg"]["mIoU"], abs=1e-6)


def test_probe_config_trains_and_scores_train_and_val_splits(synthetic_env, tmp_path):
    """configs/synthetic/pe_probe.py on the small variant, then the command its header gives for
    scoring the training images with tools/eval_postprocess.py."""
    probe = os.path.join(ROOT, "configs/synthetic/pe_probe.py")
    out = tmp_path / "probe"
    run(["--metrics-json", str(out / "val.json"), "train.max_iter=3", "dataloader.train.total_batch_size=2",
         "dataloader.train.num_workers=0", "dataloader.test.num_workers=0", f"train.output_dir={out}"],
        synthetic_env, config=probe)
    val = json.loads((out / "val.json").read_text())
    assert {"PQ", "PQ_th", "PQ_st"} <= set(val["panoptic_seg"])
    assert len(json.loads((out / "predictions.json").read_text())["annotations"]) == 2  # the small val split
    run(["--checkpoint", str(out / "model_final.pth"), "--decoders", "nn", "--void-sources", "instance",
         "--metrics-json", str(tmp_path / "train.json"), "--output-dir", str(tmp_path / "ev"),
         "dataloader.test.num_workers=0", "dataloader.test.dataset.names=synthetic_panoptic_small_train",
         "dataloader.evaluator.dataset_name=synthetic_panoptic_small_train"],
        synthetic_env, config=probe, tool="tools/eval_postprocess.py")
    preds = json.loads((tmp_path / "ev" / "decoder-nn_void_source-instance" / "predictions.json").read_text())
    assert len(preds["annotations"]) == 3  # the small train split
    train = json.loads((tmp_path / "train.json").read_text())
    assert list(train) == ["decoder=nn,void_source=instance"]
    assert {"PQ", "PQ_th", "PQ_st"} <= set(train["decoder=nn,void_source=instance"]["panoptic_seg"])

