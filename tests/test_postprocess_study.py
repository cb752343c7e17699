"""tools/postprocess_study.py: every decoder variant (nn with merge radius 0 and 1, vote, painter)
on several datasets from one checkpoint, a table row each and results.json."""
import json
import os
import subprocess
import sys

from conftest import save_untrained_checkpoint

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_study_tool_on_a_checkpoint(tmp_path):
    from pe_panoptic.data.synthetic import generate_synthetic_panoptic as gen

    d2 = tmp_path / "d2"
    gen(str(d2 / "synthetic_panoptic"), seed=2, num_train=1, num_val=2)
    gen(str(d2 / "synthetic_panoptic_small"), seed=3, num_train=1, num_val=2, image_size=(112, 112))
    env = dict(os.environ, DETECTRON2_DATASETS=str(d2), PYTHONWARNINGS="ignore")
    cfg = os.path.join(ROOT, "configs/synthetic/pe_tiny.py")
    ckpt = save_untrained_checkpoint(cfg, tmp_path, env)
    out = tmp_path / "study"
    proc = subprocess.run(
        [sys.executable, os.path.join(ROOT, "tools/postprocess_study.py"), "--config-file", cfg, "--checkpoint",
         str(ckpt), "--output", str(out), "--datasets", "synthetic_panoptic_val",
         "synthetic_panoptic_small_val", "dataloader.test.num_workers=0"],
        env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    res = json.loads((out / "results.json").read_text())
    names = ["decoder=nn,merge_radius=0", "decoder=nn,merge_radius=1", "decoder=vote", "decoder=painter"]
    assert res["variants"] == names
    assert list(res["results"]) == ["synthetic_panoptic_val", "synthetic_panoptic_small_val"]
    for dataset, per in res["results"].items():
        assert list(per) == names
        for name, r in per.items():
            assert {"PQ", "PQ_th", "PQ_st"} <= set(r["panoptic_seg"])
            assert f"| {dataset} | {name} |" in proc.stdout
    bad = subprocess.run([sys.executable, os.path.join(ROOT, "tools/postprocess_study.py"), "--config-file", cfg,
                          "--checkpoint", str(tmp_path / "nope.pth")], env=env, capture_output=True, text=True,
                         timeout=300)
    assert bad.returncode != 0 and "checkpoint not found" in bad.stderr
