"""tools/compare.py (parameters, fvcore GFLOPs, timing, table) and the Panoptic FPN baseline in the
same harness (separated synthetic dataset, semantic evaluation of its panoptic output, training
through tools/train_net.py)."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tools"))

import compare  # noqa: E402


# ------------------------------------------------------------------------------------------
# tools/compare.py helpers
# ------------------------------------------------------------------------------------------
def test_parse_entry(tmp_path):
    cfg = tmp_path / "c.py"
    cfg.write_text("")
    ckpt = tmp_path / "m.pth"
    ckpt.write_bytes(b"")
    assert compare.parse_entry(f"ours={cfg}") == ("ours", str(cfg), None)
    assert compare.parse_entry(f"ours={cfg}:{ckpt}") == ("ours", str(cfg), str(ckpt))
    with pytest.raises(ValueError, match="name=config"):
        compare.parse_entry(str(cfg))
    with pytest.raises(ValueError, match="LazyConfig .py"):
        compare.parse_entry("x=config.yaml")
    with pytest.raises(FileNotFoundError, match="checkpoint"):
        compare.parse_entry(f"x={cfg}:{tmp_path / 'missing.pth'}")


class _Attention(torch.nn.Module):
    def forward(self, q, k, v):
        return F.scaled_dot_product_attention(q, k, v)


def test_sdpa_flops_are_counted():
    q, k, v = torch.randn(2, 3, 5, 4), torch.randn(2, 3, 7, 4), torch.randn(2, 3, 7, 6)
    # Q K^T: 2*3*5*7*4 multiply-adds, A V: 2*3*5*7*6
    assert compare._fvcore_gflops(_Attention(), (q, k, v)) * 1e9 == pytest.approx(2 * 3 * 5 * 7 * (4 + 6))


class _ConvModel(torch.nn.Module):
    """detectron2-style model (list of dicts in, list of dicts out) with one 3x3 conv."""

    def __init__(self, traceable=True):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.traceable = traceable

    def forward(self, batched):
        x = torch.stack([b["image"].float() for b in batched])
        if not self.traceable and torch.jit.is_tracing():  # like data-dependent Python that cannot trace
            raise RuntimeError("this model cannot be traced")
        y = self.conv(x)
        return [{"sem_seg": y[0], "extra": {"n": int(y.shape[1])}}]


def test_count_gflops_fvcore_and_fallback_agree():
    sample = {"image": torch.zeros(3, 10, 10, dtype=torch.uint8), "height": 10, "width": 10}
    macs = 8 * 3 * 9 * 10 * 10  # one 3x3 conv, 3 -> 8 channels, 10x10 output
    g, counter = compare.count_gflops(_ConvModel(), sample)
    assert counter == "fvcore" and g * 1e9 == pytest.approx(macs)
    g, counter = compare.count_gflops(_ConvModel(traceable=False), sample)
    assert counter == "torch" and g * 1e9 == pytest.approx(macs)  # same convention after halving


def test_timed_model_and_table():
    timed = compare.TimedModel(torch.nn.Identity())
    timed.times = [5.0, 0.001, 0.003, 0.002]  # first call = warm-up, excluded
    assert timed.ms_per_image() == pytest.approx(2.0)
    rows = [
        dict(name="ours", PQ=41.234, PQ_th=30.0, PQ_st=55.55, mIoU=60.0, params_M=3.0912, gflops=0.9512,
             flop_counter="torch", ms_per_image=12.34),
        dict(name="fpn", PQ=float("nan"), PQ_th=1.0, PQ_st=2.0, mIoU=3.0, params_M=45.6, gflops=10.684,
             flop_counter="fvcore", ms_per_image=100.0),
    ]
    table = compare.format_table(rows).splitlines()
    assert table[0] == "| model | PQ | PQ_th | PQ_st | mIoU | params (M) | GFLOPs | ms / image |"
    assert table[2] == "| ours | 41.2 | 30.0 | 55.5 | 60.0 | 3.09 | 0.95* | 12.3 |"
    assert table[3] == "| fpn | n/a | 1.0 | 2.0 | 3.0 | 45.60 | 10.68 | 100.0 |"
    assert "torch.utils.flop_counter" in table[-1]


# ------------------------------------------------------------------------------------------
# pe_panoptic.baselines.panoptic_fpn
# ------------------------------------------------------------------------------------------
def test_separated_metadata_of_the_synthetic_dataset():
    from pe_panoptic.baselines.panoptic_fpn import separated_metadata

    meta = separated_metadata("synthetic_panoptic_val")
    assert meta["thing_dataset_id_to_contiguous_id"] == {1: 0, 2: 1, 3: 2, 4: 3}
    assert meta["stuff_dataset_id_to_contiguous_id"] == {11: 1, 12: 2, 13: 3, 0: 0}
    assert meta["stuff_classes"] == ["things", "sky", "grass", "wall"]
    assert meta["thing_classes"] == ["disk", "square", "triangle", "ring"]


def test_stuff_only_map():
    from pe_panoptic.baselines.panoptic_fpn import stuff_only_map

    pan = np.array([[0, 7, 7], [9, 9, 300], [300, 5, 0]])
    infos = [{"id": 7, "category_id": 2}, {"id": 9, "category_id": 12}, {"id": 300, "category_id": 11},
             {"id": 5, "category_id": 4}]
    sem = stuff_only_map(pan, infos, {11: 1, 12: 2, 13: 3, 0: 0})
    np.testing.assert_array_equal(sem, [[255, 0, 0], [2, 2, 1], [1, 0, 255]])
    with pytest.raises(ValueError, match="segment id 5 of the panoptic PNG"):
        stuff_only_map(pan, infos[:1], {11: 1})


def test_semantic_from_panoptic_fpn_outputs():
    """Segment classes where the panoptic output has segments; elsewhere the best stuff class
    (never the "things" channel 0) of the semantic head; all in standard contiguous ids
    (synthetic: things 0-3, stuff sky/grass/wall = 4/5/6)."""
    from pe_panoptic.baselines.panoptic_fpn import SemanticFromPanopticOutputs

    class Sink:
        def process(self, inputs, outputs):
            self.outputs = outputs

    sink = Sink()
    adapter = SemanticFromPanopticOutputs(sink, "synthetic_panoptic_val_separated")
    seg = torch.tensor([[1, 1, 0], [2, 0, 0]], dtype=torch.int32)
    infos = [{"id": 1, "isthing": True, "category_id": 2}, {"id": 2, "isthing": False, "category_id": 3}]
    logits = torch.zeros(4, 2, 3)
    logits[0] = 10.0  # "things" wins the argmax but must be ignored
    logits[1, 0, 2] = 1.0  # sky at (0, 2)
    logits[2, 1, 1] = 1.0  # grass at (1, 1)
    logits[3, 1, 2] = 1.0  # wall at (1, 2)
    adapter.process([{}], [{"panoptic_seg": (seg, infos), "sem_seg": logits}])
    out = sink.outputs[0]["sem_seg"]
    assert out.shape == (7, 2, 3)
    torch.testing.assert_close(out.argmax(0), torch.tensor([[2, 2, 4], [6, 5, 6]]))
    assert infos[0] == {"id": 1, "isthing": True, "category_id": 2}  # not modified


# ------------------------------------------------------------------------------------------
# end to end: Panoptic FPN through tools/train_net.py, then tools/compare.py
# ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def synthetic_env(tmp_path_factory):
    from pe_panoptic.data.synthetic import generate_synthetic_panoptic

    root = tmp_path_factory.mktemp("d2ds")
    generate_synthetic_panoptic(str(root / "synthetic_panoptic"), seed=5, num_train=2, num_val=1)
    return root, dict(os.environ, DETECTRON2_DATASETS=str(root), PYTHONWARNINGS="ignore", OMP_NUM_THREADS="2")



def run_tool(args, env):
    proc = subprocess.run([sys.executable] + args, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return proc.stdout


def test_panoptic_fpn_trains_and_compares_in_the_same_harness(synthetic_env, tmp_path):
    root, env = synthetic_env
    fpn_cfg = os.path.join(ROOT, "configs/baselines/panoptic_fpn_r50_synthetic.py")
    out = tmp_path / "fpn"
    run_tool([os.path.join(ROOT, "tools/train_net.py"), "--config-file", fpn_cfg, "--metrics-json", str(out / "m.json"),
              "train.max_iter=1", "dataloader.train.total_batch_size=1", "dataloader.train.num_workers=0",
              "dataloader.test.num_workers=0", f"train.output_dir={out}"], env)
    trained = json.loads((out / "m.json").read_text())
    assert {"PQ", "PQ_th", "PQ_st"} <= set(trained["panoptic_seg"]) and "mIoU" in trained["sem_seg"]
    # the separated dataset's stuff-only maps were written next to the panoptic PNGs
    stuff = sorted((root / "synthetic_panoptic" / "panoptic_train_stuffonly").glob("*.png"))
    assert len(stuff) == 2 and set(np.unique(np.asarray(Image.open(stuff[0]))).tolist()) <= {0, 1, 2, 3, 255}

    stdout = run_tool([os.path.join(ROOT, "tools/compare.py"), "--threads", "2", "--entries",
                       f"fpn={fpn_cfg}:{out / 'model_final.pth'}",
                       f"ours={os.path.join(ROOT, 'configs/synthetic/pe_tiny.py')}",
                       "--opts", "dataloader.test.num_workers=0", "--json", str(tmp_path / "cmp.json")], env)
    lines = stdout.strip().splitlines()
    assert json.loads(lines[-1]) == json.loads((tmp_path / "cmp.json").read_text())
    start = lines.index("| model | PQ | PQ_th | PQ_st | mIoU | params (M) | GFLOPs | ms / image |")
    assert [ln.split("|")[1].strip() for ln in lines[start + 2:start + 4]] == ["fpn", "ours"]
    rows = {r["name"]: r for r in json.loads(lines[-1])}
    # the same checkpoint evaluated by compare.py gives train_net's numbers
    assert rows["fpn"]["PQ"] == pytest.approx(trained["panoptic_seg"]["PQ"], abs=1e-6)
    assert rows["fpn"]["mIoU"] == pytest.approx(trained["sem_seg"]["mIoU"], abs=1e-6)
    assert rows["fpn"]["params_M"] == pytest.approx(45.6, abs=0.5)  # R50-FPN, 4 thing classes
    assert rows["ours"]["params_M"] == pytest.approx(3.1, abs=0.2)  # configs/synthetic/pe_tiny.py
    assert rows["fpn"]["flop_counter"] == "fvcore" and rows["fpn"]["gflops"] > 5 * rows["ours"]["gflops"] > 0
    assert rows["fpn"]["images"] == rows["ours"]["images"] == 1 and rows["ours"]["ms_per_image"] > 0
