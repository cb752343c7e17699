"""tools/gpu_check.py: the --dry-run runs every section on CPU and writes every key; the time-cap
and OOM-recording logic of pe_panoptic.studies.gpu_check.runner."""
import json
import os
import subprocess
import sys

import pytest
import torch

from pe_panoptic.studies.gpu_check import SECTIONS, attempt, is_oom, make_settings, run_section
from pe_panoptic.studies.gpu_check.memory_eval import largest_batch
from pe_panoptic.studies.gpu_check.report import summary_table

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class FakeClock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def test_section_past_its_cap_records_how_far_it_got():
    clock = FakeClock()

    def fn(budget):
        for step in ("a", "b", "c"):
            budget.check(step)
            budget.result[step] = 1
            clock.t += 10.0  # each step takes 10 s
            budget.done(step)

    rec = run_section("train", fn, cap_s=15.0, clock=clock)
    assert rec["status"] == "cap_reached"
    assert rec["completed"] == ["a", "b"] and rec["stopped_before"] == "c"
    assert rec["a"] == rec["b"] == 1 and "c" not in rec
    assert rec["seconds"] == 20.0 and rec["cap_s"] == 15.0


def test_section_failure_is_recorded_by_name():
    def fn(budget):
        budget.result["partial"] = 3
        raise ValueError("configs/x.py: broken")

    rec = run_section("eval", fn, cap_s=5.0)
    assert rec["status"] == "failed" and rec["error"] == "ValueError: configs/x.py: broken"
    assert rec["partial"] == 3 and "ValueError" in rec["traceback"]
    assert run_section("device", lambda b: {"x": 1}, cap_s=5.0)["status"] == "ok"


def test_oom_at_a_batch_size_is_a_result():
    def fake_step(b):
        if b > 5:
            raise torch.cuda.OutOfMemoryError(f"CUDA out of memory. Tried to allocate {b} GiB")
        return {"peak_gib": float(b)}

    assert is_oom(torch.cuda.OutOfMemoryError("x")) and is_oom(RuntimeError("CUDA error: out of memory"))
    assert not is_oom(ValueError("bad config"))
    rec = attempt(lambda: fake_step(7))
    assert rec == {"ok": False, "oom": True, "error": "OutOfMemoryError: CUDA out of memory. Tried to allocate 7 GiB"}
    assert attempt(lambda: fake_step(2)) == {"ok": True, "peak_gib": 2.0}
    with pytest.raises(ValueError):  # anything else is not a result
        attempt(lambda: (_ for _ in ()).throw(ValueError("no")))
    # the bounded search: doubling 2, 4, 8 (OOM), then bisection 6 (OOM), 5
    res = largest_batch(lambda b: attempt(lambda: fake_step(b)), 2, 32)
    assert res["largest"] == 5 and not res["bound_reached"]
    assert list(res["probes"]) == ["2", "4", "5", "6", "8"] and res["probes"]["8"]["oom"]
    res = largest_batch(lambda b: attempt(lambda: fake_step(b)), 1, 4)
    assert res["largest"] == 4 and res["bound_reached"]
    # an OOM inside a section is recorded and the section goes on
    rec = run_section("memory", lambda bud: bud.result.update(b8=attempt(lambda: fake_step(8)), b1=attempt(lambda: fake_step(1))), 5.0)
    assert rec["status"] == "ok" and rec["b8"]["oom"] and rec["b1"]["ok"]


def test_settings_caps_fit_the_lent_gpu():
    s = make_settings(False)
    assert sum(s.caps.values()) <= 8 * 60 - 20  # the whole script in <= 8 minutes, start-up included
    assert make_settings(True, {"train": 3.0}).caps["train"] == 3.0
    with pytest.raises(ValueError, match="unknown sections"):
        make_settings(True, {"trian": 3.0})


def test_dry_run_writes_every_key(tmp_path):
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": ROOT, "DETECTRON2_DATASETS": str(tmp_path / "datasets")}
    r = subprocess.run([sys.executable, os.path.join(ROOT, "tools/gpu_check.py"), "--dry-run", "--output", str(out)],
                       capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    rep = json.loads((out / "gpu_check.json").read_text())
    assert set(SECTIONS) | {"dry_run"} <= set(rep) and rep["dry_run"] is True
    for name in SECTIONS:
        assert rep[name]["status"] == "ok", (name, rep[name].get("error"), rep[name].get("traceback"))
    d = rep["device"]
    assert d["torch"] == torch.__version__ and d["matmul_bf16_tflops"] > 0
    for name in ("vitb_420", "vitl_1008"):
        t = rep["train"][name]
        assert t["ok"] and t["images_per_s"] > 0 and t["batch"] == 1
        assert t["forward_ms"] > 0 and t["backward_ms"] > 0 and t["optimizer_ms"] > 0 and t["data_ms"] >= 0
        assert t["forward_ms"] + t["backward_ms"] + t["optimizer_ms"] <= t["step_ms"] * 1.05
    m = rep["memory"]
    for key in ("batch1_ckpt_on", "batch2_ckpt_on", "batch1_ckpt_off", "batch2_ckpt_off"):
        assert m[key]["ok"] and m[key]["peak_gib"] > 0
    assert m["largest_batch_ckpt_on"]["largest"] == 4 and m["largest_batch_ckpt_on"]["bound_reached"]
    p = rep["eval"]["pipeline"]
    assert set(p["entries"]) == {"ours_vitl_1008", "mask2former_r50", "eomt_vitl_640"} and p["images"] == 2
    assert all(e["images_per_s"] > 0 for e in p["entries"].values()) and p["ratios_ours_over"]["ours_vitl_1008"] == 1.0
    f = rep["eval"]["forward_vitl_1008"]
    assert f["achieved_tflops"] > 0 and 0 < f["flops_utilization"] and f["utilization_of_device_peak"] > 0
    for name in ("paper_head_icml_void", "paper_head_v1_no_void", "offset_head"):
        run = rep["learning"][name]
        assert run["status"] == "ok", run.get("log_tail")
        assert [int(i) for i, _ in run["val_PQ_th"]] == [2] and run["final"]["PQ_th"] is not None
    table = summary_table(rep)
    assert "bf16 matmul TFLOP/s" in table and "largest batch" in table and "offset_head val PQ_th" in table
