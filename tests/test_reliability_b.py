"""Issue 22 (part B): quiet tool start-up, synthetic variants that cannot be mixed up."""
import json
import os
import pathlib
import subprocess
import sys

import pytest

from pe_panoptic.data.synthetic import SceneConfig, VARIANTS, generate_synthetic_panoptic
from pe_panoptic.data.synthetic.catalog import load_synthetic_panoptic, prepare_command
from pe_panoptic.data.synthetic.files import _manifest_params, variant_of
from pe_panoptic.data.validation import DatasetError

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_tool_help_prints_no_torch_jit_future_warning():
    env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONWARNINGS="default")
    r = subprocess.run([sys.executable, str(ROOT / "tools" / "demo.py"), "--help"], capture_output=True, text=True,
                       env=env, timeout=600)
    assert r.returncode == 0, r.stderr
    assert "FutureWarning" not in r.stderr and "torch.jit.script" not in r.stderr, r.stderr
    # a real FutureWarning raised after the import stays visible
    code = "import warnings, pe_panoptic; warnings.warn('kept', FutureWarning)"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=600)
    assert "FutureWarning: kept" in r.stderr


def _variant_params(name):
    v = {**dict(seed=0, num_train=600, num_val=60, image_size=(168, 168)), **VARIANTS[name][1]}
    scene = SceneConfig(**v["scene"]) if isinstance(v.get("scene"), dict) else SceneConfig()
    return v, scene


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_missing_dataset_message_names_the_variant(tmp_path, variant):
    root = str(tmp_path / VARIANTS[variant][0])
    with pytest.raises(FileNotFoundError) as e:
        load_synthetic_panoptic(root, "val", variant)
    cmd = prepare_command(root, variant)
    assert cmd in str(e.value)
    assert ("--variant" in cmd) == (variant != "default") and (variant == "default" or f"--variant {variant}" in cmd)


def test_a_folder_holding_one_variant_is_neither_overwritten_nor_loaded_as_another(tmp_path):
    root = tmp_path / "synthetic_panoptic_small"
    root.mkdir()
    v, scene = _variant_params("default")
    params = _manifest_params(v["seed"], v["num_train"], v["num_val"], v["image_size"], scene)
    assert variant_of(params) == "default"
    (root / "manifest.json").write_text(json.dumps({"params": params, "stats": {}}))
    small, small_scene = _variant_params("small")
    with pytest.raises(ValueError, match=r"manifest.json holds the 'default' variant; refusing to write the 'small'"):
        generate_synthetic_panoptic(str(root), seed=small["seed"], num_train=small["num_train"],
                                    num_val=small["num_val"], image_size=small["image_size"], scene=small_scene)
    assert sorted(os.listdir(root)) == ["manifest.json"]  # nothing written
    with pytest.raises(DatasetError, match=r"holds the 'default' synthetic variant \(600 / 60 images\), not 'small'.*"
                                           r"--variant small --force"):
        load_synthetic_panoptic(str(root), "val", "small")


def _documented_commands(tool):
    """Every ``python tools/<tool>`` command of README.md and docs/*.md (continuation lines joined)."""
    import shlex

    cmds = []
    for md in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        lines = md.read_text().splitlines()
        for i, line in enumerate(lines):
            if line.strip().startswith(f"python tools/{tool}"):
                text = line.strip()
                while text.endswith("\\"):
                    i += 1
                    text = text[:-1] + " " + lines[i].strip()
                cmds.append(shlex.split(text, comments=True)[2:])
    return cmds


def test_eval_postprocess_documented_commands_parse_with_their_overrides():
    import importlib.util

    spec = importlib.util.spec_from_file_location("eval_postprocess_tool", ROOT / "tools" / "eval_postprocess.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    cmds = _documented_commands("eval_postprocess.py")
    assert len(cmds) >= 2
    for argv in cmds:
        args = tool.parse_args(argv)
        assert args.config_file.endswith(".py") and all("=" in o for o in args.opts), argv
    args = tool.parse_args(["--config-file", "c.py", "--decoders", "vote", "nn", "--void-sources", "instance",
                            "semantic", "model.postprocess.grid=[16,16]"])
    assert args.decoders == ["vote", "nn"] and args.void_sources == ["instance", "semantic"]
    assert args.opts == ["model.postprocess.grid=[16,16]"]
    args = tool.parse_args(["--config-file", "c.py", "a.b=1", "--decoders", "nn", "--", "--opts", "c.d=2", "e=3",
                            "--output-dir", "x=y"])
    assert args.opts == ["a.b=1", "c.d=2", "e=3"] and args.decoders == ["nn"] and args.output_dir == "x=y"


def test_evaluator_must_follow_the_test_dataset():
    from pe_panoptic.engine.config_overrides import load_config
    from pe_panoptic.evaluation.build import check_evaluator_dataset

    cfg = load_config(str(ROOT / "configs/synthetic/pe_probe.py"),
                      ["dataloader.test.dataset.names=synthetic_panoptic_small_train"])
    with pytest.raises(ValueError, match="add the override dataloader.evaluator.dataset_name="
                                         "synthetic_panoptic_small_train"):
        check_evaluator_dataset(cfg)
    cfg.dataloader.evaluator.dataset_name = "synthetic_panoptic_small_train"
    check_evaluator_dataset(cfg)


def test_exported_graph_input_check_names_the_size():
    import torch

    from pe_panoptic.export.exporter import check_network_input, preprocess

    check_network_input(torch.zeros(1, 3, 28, 42))
    with pytest.raises(ValueError, match=r"multiples of 14, got \(1, 3, 30, 42\)"):
        check_network_input(torch.zeros(1, 3, 30, 42))
    x, _ = preprocess([torch.zeros(3, 30, 41)], [0, 0, 0], [1, 1, 1])
    check_network_input(x)  # what the predictor feeds the graph
