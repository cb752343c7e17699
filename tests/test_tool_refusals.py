"""What the tools refuse (docs/refusals.md), each through the tool itself with a
tiny pe_tiny model: pickled checkpoints without --trust-pickle, checkpoints of another
architecture / with NaN / that are not checkpoints, unknown or mistyped overrides, --eval-only
without a checkpoint, a new run over a finished one; and what they survive: a bad image in
tools/demo.py's folder."""
import argparse
import importlib.util
import json
import os
import pathlib
import pickle

import pytest
import torch

from pe_panoptic.engine.checkpoint_io import CheckpointError, UntrustedCheckpointError
from pe_panoptic.engine.config_overrides import ConfigOverrideError, apply_overrides, load_config
from pe_panoptic.engine.run_dir import OutputDirInUseError

ROOT = pathlib.Path(__file__).resolve().parents[1]
CONFIG = str(ROOT / "configs/synthetic/pe_tiny.py")
TINY = ["model.backbone.model_kwargs.embed_dim=48", "model.backbone.model_kwargs.depth=2",
        "model.backbone.model_kwargs.num_heads=2", "model.backbone.out_indices=[0,1]",
        "model.decoder.width=16"]
# the same model with a 96-dim ViT (decoder input 192 channels, derived from the backbone)
WIDER = ["model.backbone.model_kwargs.embed_dim=96", *TINY[1:4], "model.decoder.width=16"]


def tool(name):
    spec = importlib.util.spec_from_file_location(f"{name}_tool", ROOT / "tools" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


class Payload:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.mkdir, (self.marker,)


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    """Checkpoints of the tiny model: good (48-dim ViT, decoder in 96), NaN, a text file renamed
    .pth and a malicious .pkl; plus the folder its payload would create."""
    from detectron2.config import instantiate

    tmp = tmp_path_factory.mktemp("ckpts")
    torch.manual_seed(0)
    sd = instantiate(load_config(CONFIG, TINY).model).state_dict()
    torch.save({"model": sd}, tmp / "tiny.pth")
    bad = {k: v.clone() for k, v in sd.items()}
    bad["heads.sem.bias"][0] = float("nan")
    torch.save({"model": bad}, tmp / "nan.pth")
    (tmp / "notes.pth").write_text("these are my notes, not weights\n")
    marker = tmp / "payload_ran"
    (tmp / "evil.pkl").write_bytes(pickle.dumps({"model": {}, "__author__": "x", "p": Payload(marker)}))
    return {k: str(tmp / f) for k, f in (("tiny", "tiny.pth"), ("nan", "nan.pth"), ("text", "notes.pth"),
                                          ("evil", "evil.pkl"), ("marker", "payload_ran"))}


# ------------------------------------------------------------------------------ overrides (shared helper)
@pytest.mark.parametrize("override, message", [
    ("train.max_itr=3", r"'train.max_itr=3': train.max_itr is not a key of the config "
                        r"\(did you mean 'train.max_iter'\?"),
    ("train.max_iter=abc", r"train.max_iter expects an int \(the config has 1000\), got the string 'abc'"),
    ("dataloader.train.total_batch_size=two", r"total_batch_size expects an int .* got the string 'two'"),
    ("optimizer.lr=fast", r"optimizer.lr expects a number \(the config has 0.001\), got the string 'fast'"),
    ("model.backbone.grad_checkpointing=1", r"expects a bool \(True / False\) .* got the int 1"),
    ("dataloader.train.mapper.output_stride=14/16", r"output_stride expects float, got the string '14/16'"),
])
def test_bad_overrides_are_named(override, message):
    with pytest.raises(ConfigOverrideError, match=message):
        load_config(CONFIG, [override])


def test_valid_overrides_still_apply():
    cfg = load_config(CONFIG, TINY + [
        "train.max_iter=5", "optimizer.lr=1",  # int for a float
        "model.backbone.grad_checkpointing=True",  # a LazyCall parameter the config does not set
        "train.accumulate_steps=auto", "train.compile=True",  # train_net options of several types
        "dataloader.train.mapper.input_size=[168,168]",  # the mapper's hint: int or (h, w)
        "model.backbone.weights=null", "train.init_checkpoint=", "+train.my_note=hello"])
    assert cfg.train.max_iter == 5 and cfg.optimizer.lr == 1 and cfg.model.backbone.grad_checkpointing is True
    assert cfg.train.accumulate_steps == "auto" and cfg.train.my_note == "hello"
    assert list(cfg.dataloader.train.mapper.input_size) == [168, 168] and cfg.model.backbone.weights is None
    with pytest.raises(ConfigOverrideError) as e:  # every problem at once
        apply_overrides(load_config(CONFIG), ["trian.max_iter=3", "train.seed=x"], source="pe_tiny")
    assert "invalid overrides of pe_tiny" in str(e.value) and "did you mean 'train.max_iter'" in str(e.value)
    assert "train.seed expects an int" in str(e.value)


@pytest.mark.parametrize("name", ["train_net", "demo", "export", "benchmark", "compare", "eval_postprocess"])
def test_every_tool_rejects_a_typo_override(name, ckpts, tmp_path):
    typo = "train.max_itr=3"
    mod = tool(name)
    with pytest.raises(ConfigOverrideError, match="did you mean 'train.max_iter'"):
        if name == "train_net":
            mod.main(mod.parse_args(["--config-file", CONFIG, typo, f"train.output_dir={tmp_path}"]))
        elif name in ("demo", "export"):
            extra = ["--input", ckpts["tiny"]] if name == "demo" else []
            mod.main(["--config-file", CONFIG, "--output", str(tmp_path)] + extra + ["--opts", typo])
        elif name == "benchmark":
            mod.main(["model", "--config-file", CONFIG, "--size", "28", typo])
        elif name == "compare":
            mod.main(["--entries", f"a={CONFIG}", "--opts", typo])
        else:
            mod.main(["--config-file", CONFIG, "--checkpoint", ckpts["tiny"], typo])


# ------------------------------------------------------------------------------ checkpoints
def load_through(name, weights, tmp_path, extra=(), opts=TINY):
    """Load ``weights`` into the tiny model the way tool ``name`` does."""
    mod = tool(name)
    if name == "train_net":
        args = mod.parse_args(["--config-file", CONFIG, "--eval-only", *extra,
                                            f"train.init_checkpoint={weights}", f"train.output_dir={tmp_path}",
                                            "train.device=cpu", *opts])
        return mod.main(args)
    if name == "demo":
        return mod.main(["--config-file", CONFIG, "--device", "cpu", "--weights", weights, *extra, "--video-input",
                         str(tmp_path / "none.mp4"), "--output", str(tmp_path), "--opts", *opts])
    if name == "export":
        return mod.main(["--config-file", CONFIG, "--weights", weights, *extra, "--output", str(tmp_path),
                         "--opts", *opts])
    if name == "compare":
        return mod.evaluate_entry("x", CONFIG, weights, opts, device="cpu", trust_pickle=bool(extra))
    return mod.main(["--config-file", CONFIG, "--checkpoint", weights, *extra, *opts])  # eval_postprocess


TOOLS = ["train_net", "demo", "export", "compare", "eval_postprocess"]


@pytest.mark.parametrize("name", TOOLS)
def test_pickles_are_refused_without_trust(name, ckpts, tmp_path):
    with pytest.raises(UntrustedCheckpointError, match="evil.pkl: .pkl files are Python pickles.*--trust-pickle"):
        load_through(name, ckpts["evil"], tmp_path)
    assert not os.path.exists(ckpts["marker"])  # the payload never ran


@pytest.mark.parametrize("name", TOOLS)
def test_wrong_architecture_is_an_error_not_a_warning(name, ckpts, tmp_path):
    with pytest.raises(CheckpointError) as e:
        load_through(name, ckpts["tiny"], tmp_path, opts=WIDER)  # a 96-dim ViT (decoder in 192)
    msg = str(e.value)
    assert f"{ckpts['tiny']} does not fit the model" in msg and "parameters of another shape" in msg
    assert "backbone.vit.cls_token (1, 1, 48) vs (1, 1, 96)" in msg


@pytest.mark.parametrize("name", ["train_net", "demo"])
def test_nan_weights_and_text_files_are_named(name, ckpts, tmp_path):
    with pytest.raises(CheckpointError, match=r"non-finite \(NaN / inf\) weights in heads.sem.bias \(1 of "):
        load_through(name, ckpts["nan"], tmp_path)
    with pytest.raises(CheckpointError, match=f"{ckpts['text']} is not a checkpoint"):
        load_through(name, ckpts["text"], tmp_path)


def test_finetuning_from_init_checkpoint_needs_the_new_head_allowed(d2_datasets, ckpts, tmp_path):
    """tools/train_net.py from train.init_checkpoint (the tiny model trained for the 7 synthetic
    classes) on COCO (133 classes): refused, naming the semantic head, until its prefix is in
    train.init_checkpoint_allow_mismatch (the Cityscapes fine-tuning case); then it trains."""
    train_net = tool("train_net")
    coco = "coco_2017_val_panoptic"
    opts = TINY + [f"model.dataset_name={coco}", f"dataloader.train.dataset.names={coco}",
                   f"dataloader.train.mapper.panoptic.dataset_name={coco}", f"dataloader.test.dataset.names={coco}",
                   f"dataloader.test.mapper.panoptic.dataset_name={coco}", f"dataloader.evaluator.dataset_name={coco}",
                   "dataloader.train.total_batch_size=1", "dataloader.train.num_workers=0",
                   "dataloader.test.num_workers=0", "train.max_iter=1", "train.device=cpu",
                   f"train.init_checkpoint={ckpts['tiny']}"]

    def run(out, *extra):
        return train_net.main(train_net.parse_args(
            ["--config-file", CONFIG, *opts, f"train.output_dir={tmp_path / out}", *extra]))

    with pytest.raises(CheckpointError, match=r"heads.sem.weight \(7, 16, 3, 3\) vs \(133, 16, 3, 3\)"):
        run("refused")
    results = run("allowed", "train.init_checkpoint_allow_mismatch=[heads.sem.]")
    assert {"PQ", "PQ_th", "PQ_st"} <= set(results["panoptic_seg"])
    assert (tmp_path / "allowed" / "model_final.pth").is_file()


# ------------------------------------------------------------------------------ train_net runs
def test_eval_only_without_checkpoint_is_refused(tmp_path):
    train_net = tool("train_net")
    args = train_net.parse_args(["--config-file", CONFIG, "--eval-only", f"train.output_dir={tmp_path}"])
    with pytest.raises(SystemExit, match="--eval-only needs a checkpoint: give train.init_checkpoint="):
        train_net.main(args)
    assert not (tmp_path / "config.yaml").exists()  # refused before anything was written


def test_a_finished_run_is_not_overwritten(tmp_path):
    train_net = tool("train_net")
    out = tmp_path / "run"
    out.mkdir()
    for f in ("last_checkpoint", "metrics.json", "model_0000099.pth"):
        (out / f).write_text("old run")
    torch.save({"model": {}}, out / "model_final.pth")  # a complete checkpoint: a finished run
    final = (out / "model_final.pth").read_bytes()
    args = train_net.parse_args(["--config-file", CONFIG, f"train.output_dir={out}"])
    with pytest.raises(OutputDirInUseError) as e:
        train_net.main(args)
    msg = str(e.value)
    assert f"train.output_dir={out} already holds a finished run (model_final.pth)" in msg
    assert "--resume" in msg and "train.output_dir=<new folder>" in msg and "--overwrite" in msg
    assert (out / "model_final.pth").read_bytes() == final
    # --overwrite: the old run's markers go first (a crash cannot pass for the old finished run)
    train_net.prepare_output_dir(argparse.Namespace(resume=False, overwrite=True), load_config(
        CONFIG, [f"train.output_dir={out}"]))
    assert sorted(p.name for p in out.iterdir() if p.name != ".lock") == ["model_0000099.pth"]
    (out / "last_checkpoint").write_text("model_0000099.pth")
    with pytest.raises(OutputDirInUseError, match=r"an unfinished run \(last_checkpoint -> model_0000099.pth\)"):
        train_net.main(args)
    train_net.prepare_output_dir(argparse.Namespace(resume=True, overwrite=False), load_config(
        CONFIG, [f"train.output_dir={out}"]))  # --resume continues it
    assert (out / "last_checkpoint").exists()


def test_run_demo_refuses_to_replace_a_finished_demo(tmp_path):
    import torch

    torch.save({"model": {}}, tmp_path / "model_final.pth")  # a real (finished) checkpoint archive
    with pytest.raises(SystemExit, match=f"{tmp_path} already holds a finished run .*make clean-demo.*--overwrite"):
        tool("run_demo").main(["--output", str(tmp_path)])
    (tmp_path / "model_final.pth").write_text("old")  # truncated / not a checkpoint: an unfinished run, refused too
    with pytest.raises(SystemExit, match=f"{tmp_path} already holds an unfinished run .*--overwrite"):
        tool("run_demo").main(["--output", str(tmp_path)])


def test_run_demo_refuses_missing_weights_before_any_work(tmp_path):
    """The default demo fine-tunes real DINOv2 weights: without them it stops at once, naming the
    file and `make weights`, before generating data or training."""
    out = tmp_path / "demo"
    with pytest.raises(SystemExit, match=r"pretrained weights .*nope\.pth are missing: run `make weights`"):
        tool("run_demo").main(["--output", str(out), f"model.backbone.weights={tmp_path / 'nope.pth'}"])
    assert not out.exists()


# ------------------------------------------------------------------------------ demo / oracle
def test_demo_processes_the_other_images_and_exits_1(d2_datasets, ckpts, tmp_path, capsys):
    folder = tmp_path / "images"
    folder.mkdir()
    good = d2_datasets / "coco" / "val2017" / "000000039769.jpg"
    os.symlink(good, folder / "a_good.jpg")
    (folder / "b_broken.jpg").write_text("not an image")
    os.symlink(good, folder / "c_good.jpg")
    demo = tool("demo")
    argv = ["--config-file", CONFIG, "--device", "cpu", "--weights", ckpts["tiny"], "--input", str(folder),
            "--output", str(tmp_path / "out"), "--opts", *TINY]
    assert demo.cli(argv) == 1
    out = capsys.readouterr()
    summary = json.loads(out.out.strip().splitlines()[-1])
    assert [r["name"] for r in summary["images"]] == ["a_good", "c_good"]
    assert [f["file_name"] for f in summary["failed"]] == [str(folder / "b_broken.jpg")]
    assert "cannot read image file" in summary["failed"][0]["error"]
    assert f"1 of 3 images failed:\n  {folder / 'b_broken.jpg'}" in out.err
    assert (tmp_path / "out" / "c_good_panoptic.png").is_file()


def test_oracle_input_size_zero_is_an_error(d2_datasets):
    oracle = tool("oracle_pq")
    with pytest.raises(ValueError, match="--input-size must be >= 14 .* got 0"):
        oracle.main(["--dataset", "coco_2017_val_panoptic", "--input-size", "0"])
