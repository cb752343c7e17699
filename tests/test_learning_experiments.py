"""tools/learning_experiments.py: the spec file loads, unknown variants are refused, the table
lists every variant (the training itself is tools/train_net.py, tested in test_train_net.py)."""
import importlib.util
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("pe_learning_experiments", ROOT / "tools" / "learning_experiments.py")
tool = importlib.util.module_from_spec(spec)
spec.loader.exec_module(tool)


def test_repo_spec_loads_and_overrides_are_valid_keys():
    s = tool.load_spec(tool.DEFAULT_SPEC)
    assert s["BASE"] == "configs/synthetic/pe_vits_base.py" and s["EXPERIMENTS"]["offset"] == []
    from detectron2.config import LazyConfig

    cfg = LazyConfig.load(str(ROOT / s["BASE"]))
    for name, ov in s["EXPERIMENTS"].items():
        LazyConfig.apply_overrides(cfg, ov)  # every override parses and applies


def test_unknown_variant_and_bad_spec(tmp_path):
    with pytest.raises(SystemExit, match="unknown variants"):
        tool.main(["--only", "nope"])
    bad = tmp_path / "s.py"
    bad.write_text("BASE = 'x'\n")
    with pytest.raises(SystemExit, match="missing"):
        tool.load_spec(str(bad))


def test_table():
    res = {"offset": {"overrides": [], "PQ": 44.05, "PQ_th": 5.49, "PQ_st": 95.5, "mIoU": 93.4,
                      "diag/inst/norm": 1.68, "wall_s": 1020},
           "paper_head": {"overrides": ["model.inst_position=none"], "PQ": 41.3, "PQ_th": 0.0, "PQ_st": 96.3,
                          "mIoU": None, "wall_s": 600}}
    t = tool.table(res).splitlines()
    assert len(t) == 4
    assert t[2].startswith("| offset | (base recipe) | 44.0 | 5.5 | 95.5 | 93.4 | 1.68 |")
    assert "`model.inst_position=none`" in t[3] and "| - |" in t[3]


def test_postprocess_scores_and_columns(tmp_path, monkeypatch):
    """score_postprocess runs tools/eval_postprocess.py once per POSTPROCESS label and reads PQ_th per
    decoder from its JSON; the table gets one column per (decoder, label)."""
    import json
    import subprocess

    calls = []

    def fake_run(cmd, stdout=None, stderr=None, cwd=None):
        calls.append(cmd)
        path = cmd[cmd.index("--metrics-json") + 1]
        i = cmd.index("--decoders")
        assert cmd[i + 1:i + 3] == ["nn", "vote"] and cmd[-2:] == ["x=1", "model.postprocess.grid=[24,24]"]
        assert cmd[-4] == "--metrics-json"
        with open(path, "w") as f:
            json.dump({"decoder=nn,void_source=instance": {"panoptic_seg": {"PQ_th": 15.25}},
                       "decoder=vote,void_source=instance": {"panoptic_seg": {"PQ_th": 20.5}}}, f)
        return subprocess.CompletedProcess(cmd, 0)

    monkeypatch.setattr(tool.subprocess, "run", fake_run)
    s = tool.load_spec(tool.DEFAULT_SPEC)
    args = type("A", (), {"opts": []})()
    scores = tool.score_postprocess(str(tmp_path), ["x=1"], s, args)
    assert scores == {"nn g24": 15.25, "vote g24": 20.5} and len(calls) == 1
    res = {"v": {"overrides": [], "PQ": 40.0, "PQ_th": 5.0, "PQ_st": 90.0, "mIoU": 90.0, "wall_s": 60,
                 "postprocess": scores}}
    t = tool.table(res).splitlines()
    assert "| PQ_th nn g24 | PQ_th vote g24 |" in t[0]
    assert t[2].startswith("| v | (base recipe) | 40.0 | 5.0 | 90.0 | 90.0 | 15.2 | 20.5 |")
