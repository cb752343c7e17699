"""Issue 22 (part B): quiet tool start-up, synthetic variants that cannot be mixed up, every documented
tool command parses with its overrides (one override syntax, :mod:`pe_panoptic.engine.cli`)."""
import json
import os
import pathlib
import re
import shlex
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


#: a documented command line: ``[.venv/bin/]python tools/<tool>.py ...`` at the start of a line
#: (with its ``\\`` continuation lines) or in an inline `...` span of the text
_CODE_LINE = re.compile(r"^(?:\.venv/bin/)?python tools/\w+\.py")
_INLINE = re.compile(r"`((?:\.venv/bin/)?python tools/\w+\.py[^`]*)`")


def _command_argv(text):
    """``(tool file name, argv)`` of one command line (shell comments dropped)."""
    words = shlex.split(text, comments=True)
    i = next(k for k, w in enumerate(words) if w.startswith("tools/"))
    return words[i][len("tools/"):], words[i + 1:]


def _all_documented_commands():
    """``{tool file name: [argv, ...]}`` of every command of README.md and docs/*.md."""
    cmds = {}
    for md in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        text = md.read_text()
        lines = text.splitlines()
        found = []
        for i, line in enumerate(lines):
            if _CODE_LINE.match(line.strip()):
                cmd = line.strip()
                while cmd.endswith("\\"):
                    i += 1
                    cmd = cmd[:-1] + " " + lines[i].strip()
                found.append(cmd)
        found += [m.group(1).replace("\n", " ") for m in _INLINE.finditer(text)]
        for cmd in found:
            name, argv = _command_argv(cmd)
            cmds.setdefault(name, []).append(argv)
    return cmds


def _documented_commands(tool):
    return _all_documented_commands().get(tool, [])


def test_eval_postprocess_documented_commands_parse_with_their_overrides():
    tool = _load_tool("eval_postprocess.py")
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


#: options whose own values look like KEY=VALUE (not overrides): option -> values (None: up to the next option)
_KV_VALUES = {"--entries": None, "--against": 1, "--model": 1, "--caps": None}
#: the documented commands per tool (README.md, docs/*.md) today: the test checks at least these many.
#: Placeholders (``--config-file ...``, ``tcp://<ip>:<port>``, ``<model_final.pth> ...``) are option
#: values, parsed as written.
_MIN_COMMANDS = {"train_net.py": 15, "compare.py": 3, "benchmark.py": 4, "learning_experiments.py": 5,
                 "eval_postprocess.py": 2, "postprocess_study.py": 1, "run_demo.py": 1, "gpu_check.py": 1,
                 "install_detectron2.py": 1, "install_mask2former.py": 1}


def _load_tool(file_name):
    import importlib.util

    if str(ROOT / "tools") not in sys.path:  # install_*.py import tools/sdist_install.py
        sys.path.insert(0, str(ROOT / "tools"))
    spec = importlib.util.spec_from_file_location(f"doc_{file_name[:-3]}", ROOT / "tools" / file_name)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _expected_overrides(argv):
    """The ``KEY=VALUE`` tokens of a command that are not the values of :data:`_KV_VALUES` options."""
    from pe_panoptic.engine.cli import OVERRIDE_TOKEN

    out, option, n = [], None, 0
    for tok in argv:
        if tok.startswith("-"):
            option, n = tok, 0
            continue
        n += 1
        own = option in _KV_VALUES and (_KV_VALUES[option] is None or n <= _KV_VALUES[option])
        if OVERRIDE_TOKEN.match(tok) and not own:
            out.append(tok)
    return out


def _parse_documented(mod, argv):
    if hasattr(mod, "parse_args"):
        return mod.parse_args(argv)
    return (getattr(mod, "get_parser", None) or mod.build_parser)().parse_args(argv)


def test_every_documented_command_of_every_tool_parses_with_its_overrides():
    from pe_panoptic.engine.cli import OVERRIDE_TOKEN

    commands = _all_documented_commands()
    assert {n: len(c) for n, c in commands.items() if len(c) < _MIN_COMMANDS.get(n, 1)} == {}
    assert set(_MIN_COMMANDS) <= set(commands), "a documented tool's commands are no longer found"
    own = {"entries", "against", "model", "caps", "opts", "train_opts"}
    for name, cmds in sorted(commands.items()):
        mod = _load_tool(name)
        for argv in cmds:
            try:
                args = _parse_documented(mod, argv)
            except SystemExit as e:
                raise AssertionError(f"python tools/{name} {shlex.join(argv)}: exit {e.code}") from None
            overrides = list(getattr(args, "opts", None) or []) + list(getattr(args, "train_opts", None) or [])
            assert overrides == _expected_overrides(argv), (name, argv)
            others = [v for k, v in vars(args).items() if k not in own]
            others = [x for v in others for x in (v if isinstance(v, (list, tuple)) else [v])]
            assert not [x for x in others if isinstance(x, str) and OVERRIDE_TOKEN.match(x)], (name, argv, args)


def test_train_net_refuses_an_evaluator_of_another_split_before_training(tmp_path):
    train_net = _load_tool("train_net.py")
    out = tmp_path / "run"
    args = train_net.parse_args(["--config-file", str(ROOT / "configs/synthetic/pe_probe.py"), "train.max_iter=1",
                                 f"train.output_dir={out}", "--overwrite",
                                 "dataloader.test.dataset.names=synthetic_panoptic_small_train"])
    assert args.overwrite and len(args.opts) == 3
    with pytest.raises(ValueError, match="add the override dataloader.evaluator.dataset_name="
                                         "synthetic_panoptic_small_train"):
        train_net.main(args)
    assert not out.exists()  # refused before the output folder (and the model) was made


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
