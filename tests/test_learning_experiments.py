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
    assert s["BASE"] == "configs/synthetic/pe_vits.py" and s["EXPERIMENTS"]["offset"] == []
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
                      "inst_diag/norm": 1.68, "wall_s": 1020},
           "paper_head": {"overrides": ["model.inst_position=none"], "PQ": 41.3, "PQ_th": 0.0, "PQ_st": 96.3,
                          "mIoU": None, "wall_s": 600}}
    t = tool.table(res).splitlines()
    assert len(t) == 4
    assert t[2].startswith("| offset | (base recipe) | 44.0 | 5.5 | 95.5 | 93.4 | 1.68 |")
    assert "`model.inst_position=none`" in t[3] and "| - |" in t[3]
