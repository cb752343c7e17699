"""Issue 22: one override syntax for every tool (:mod:`pe_panoptic.engine.cli`): ``--opts KEY=VALUE``
or ``KEY=VALUE`` anywhere on the line, never swallowed by another option, never swallowing one."""
import argparse
import importlib.util
import pathlib
import sys

import pytest

from pe_panoptic.engine.cli import parse_tool_args, split_overrides, value_options, with_opts

ROOT = pathlib.Path(__file__).resolve().parents[1]


def tool(name):
    if str(ROOT / "tools") not in sys.path:  # install_*.py import tools/sdist_install.py
        sys.path.insert(0, str(ROOT / "tools"))
    spec = importlib.util.spec_from_file_location(f"{name}_cli_tool", ROOT / "tools" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def parser():
    ap = argparse.ArgumentParser(prog="t")
    ap.add_argument("--config-file")
    ap.add_argument("--output-dir")
    ap.add_argument("--decoders", nargs="+", choices=("nn", "vote"))
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--against", action="append", metavar="KEY=VALUE")
    ap.add_argument("--entries", nargs="+")
    ap.add_argument("opts", nargs=argparse.REMAINDER)  # detectron2's style: replaced by --opts
    return ap


def parse(*argv, **kw):
    return parse_tool_args(parser(), list(argv), **kw)


def test_overrides_before_and_after_list_options():
    a = parse("a=1", "--decoders", "vote", "nn", "model.grid=[16,16]", "--config-file", "c.py", "+x.y=2")
    assert a.decoders == ["vote", "nn"] and a.config_file == "c.py"
    assert a.opts == ["a=1", "model.grid=[16,16]", "+x.y=2"]


def test_options_after_an_override_stay_options():  # argparse.REMAINDER made --resume an override
    a = parse("--config-file", "c.py", "a.b=1", "--resume", "--decoders", "nn")
    assert a.resume and a.decoders == ["nn"] and a.opts == ["a.b=1"]


def test_double_dash_is_dropped_and_opts_ends_at_the_next_option():
    a = parse("--decoders", "nn", "--", "a=1", "--opts", "b=2", "c=3", "--resume", "d=4", "--opts=e=5")
    assert a.decoders == ["nn"] and a.resume and a.opts == ["a=1", "b=2", "c=3", "d=4", "e=5"]


def test_single_value_options_keep_their_values():
    a = parse("--output-dir", "x=y", "--against", "model.k=1", "--config-file=c.py", "k=2", "--output", "o=p")
    assert a.output_dir == "o=p" and a.against == ["model.k=1"] and a.config_file == "c.py"  # --output: abbreviation
    assert a.opts == ["k=2"]
    assert {"--output-dir", "--output", "--config-file", "--against"} <= value_options(with_opts(parser()))
    assert "--decoders" not in value_options(parser()) and "--resume" not in value_options(parser())


def test_verbatim_list_options_keep_values_that_look_like_overrides():
    a = parse("--entries", "a=c.py", "b=d.py:m.pth", "--opts", "k=1", "--resume", "j=2", verbatim=("--entries",))
    assert a.entries == ["a=c.py", "b=d.py:m.pth"] and a.opts == ["k=1", "j=2"]
    assert parse("--entr", "a=c.py", verbatim=("--entries",)).entries == ["a=c.py"]  # abbreviated


@pytest.mark.parametrize("argv, message", [
    (["--opts", "foo"], "--opts takes KEY=VALUE config overrides, got 'foo'"),
    (["--opt", "foo"], "--opts takes KEY=VALUE config overrides, got foo"),
])
def test_opts_refuses_what_is_not_an_override(argv, message, capsys):
    with pytest.raises(SystemExit):
        parse(*argv)
    assert message in capsys.readouterr().err


def test_split_overrides_alone():
    rest, over = split_overrides(["--x", "a=1", "b=2", "--", "c=3"], ["--x"])
    assert rest == ["--x", "a=1"] and over == ["b=2", "c=3"]


def test_subcommands_take_overrides_only_where_they_have_opts(capsys):
    p = argparse.ArgumentParser(prog="b")
    sub = p.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("model")
    m.add_argument("--size", type=int)
    m.add_argument("--sizes", nargs="+")
    m.add_argument("opts", nargs=argparse.REMAINDER)
    d = sub.add_parser("data")
    d.add_argument("--name")
    a = parse_tool_args(p, ["model", "--sizes", "1", "2", "a=1", "--size", "3", "--opts", "b=2"])
    assert a.cmd == "model" and a.sizes == ["1", "2"] and a.size == 3 and a.opts == ["a=1", "b=2"]
    assert "--opts" in m.format_help() and "--opts" not in d.format_help()
    assert parse_tool_args(p, ["data", "--name", "n=1"]).name == "n=1"  # a subcommand's value option
    with pytest.raises(SystemExit):
        parse_tool_args(p, ["data", "a=1"])
    assert "the 'data' subcommand takes no config overrides, got a=1" in capsys.readouterr().err


def test_with_opts_replaces_the_positional_and_is_idempotent():
    p = with_opts(with_opts(parser()))
    opts = [a for a in p._actions if a.dest == "opts"]
    assert len(opts) == 1 and opts[0].option_strings == ["--opts"] and opts[0].nargs == "*"
    assert "KEY=VALUE tokens anywhere" in p.format_help()


def test_train_net_keeps_options_after_overrides():
    train_net = tool("train_net")
    a = train_net.parse_args(["--config-file", "c.py", "a=b", "--resume", "--num-gpus", "2", "--opts", "c.d=1"])
    assert a.resume and a.num_gpus == 2 and a.opts == ["a=b", "c.d=1"] and a.config_file == "c.py"
    assert train_net.parse_args(["--config-file", "c.py"]).opts == []
    help_text = train_net.get_parser().format_help()
    assert "--opts [KEY=VALUE ...]" in help_text and "MODEL.WEIGHTS" not in help_text  # no yacs example


def test_postprocess_study_datasets_keep_names_and_lose_overrides():
    a = tool("postprocess_study").parse_args(["--config-file", "c.py", "--checkpoint", "m.pth", "--datasets", "d1",
                                              "d2", "model.postprocess.grid=[16,16]", "--output", "o"])
    assert a.datasets == ["d1", "d2"] and a.opts == ["model.postprocess.grid=[16,16]"] and a.output == "o"


def test_benchmark_pipeline_entries_are_not_overrides():
    bm = tool("benchmark")
    a = bm.parse_args(["pipeline", "--entries", "a=c.py:m.pth", "b=d.py", "--rounds", "1", "x.y=1"])
    assert a.entries == ["a=c.py:m.pth", "b=d.py"] and a.opts == ["x.y=1"]
    a = bm.parse_args(["train", "--config-file", "c.py", "k=1", "--against", "m.u=conv", "--batch", "8"])
    assert a.against == ["m.u=conv"] and a.batch == 8 and a.opts == ["k=1"]


PARSER_TOOLS = ("train_net", "benchmark", "learning_experiments", "postprocess_study", "run_demo",
                "eval_postprocess", "demo", "export", "analyze_sizes")


@pytest.mark.parametrize("name", PARSER_TOOLS)
def test_every_override_tool_parses_positional_and_opts_alike(name):
    mod = tool(name)
    head = {"benchmark": ["model"], "analyze_sizes": ["--dataset", "d", "--model", "a=p.json,pngs"],
            "postprocess_study": ["--checkpoint", "m.pth"]}.get(name, [])
    cfg = [] if name in ("learning_experiments", "analyze_sizes") else ["--config-file", "c.py"]
    a = mod.parse_args(head + cfg + ["a.b=1", "--opts", "c=2"])
    assert a.opts == ["a.b=1", "c=2"]
    with pytest.raises(SystemExit) as e:
        mod.parse_args(["--help"] if name != "benchmark" else ["model", "--help"])
    assert e.value.code == 0
