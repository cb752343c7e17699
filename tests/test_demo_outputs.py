"""tools/demo.py output safety (issue 22): unique output names for inputs sharing a stem, no
silent overwrite, atomic PNG writes that name ENOSPC, an error for an input folder without images.
These parts need no model (the full runs are in test_demo_tool.py)."""
import argparse
import errno
import importlib.util
import os
import pathlib

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def demo():
    spec = importlib.util.spec_from_file_location("demo_tool_outputs", ROOT / "tools" / "demo.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def args(**kw):
    base = dict(dataset=None, gt_json=None, gt_root=None, input=None, max_inputs=0)
    return argparse.Namespace(**{**base, **kw})


def test_inputs_sharing_a_stem_get_distinct_output_names(demo, tmp_path):
    for f in ("same.jpg", "same.png", "other.jpg"):
        (tmp_path / f).write_bytes(b"")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "other.jpg").write_bytes(b"")
    items = demo.iter_inputs(args(input=[str(tmp_path), str(tmp_path / "sub")]))
    names = [it["name"] for it in items]
    assert names == ["other_jpg", "same_jpg", "same_png", "other_jpg_2"]


def test_empty_input_folder_is_an_error(demo, tmp_path):
    (tmp_path / "notes.txt").write_text("no image here")
    with pytest.raises(SystemExit, match=rf"--input {tmp_path}: no image found"):
        demo.iter_inputs(args(input=[str(tmp_path)]))


def test_outputs_are_never_overwritten_without_the_flag(demo, tmp_path):
    img = np.zeros((4, 5, 3), np.uint8)
    path = str(tmp_path / "a_panoptic.png")
    demo.save_rgb(path, img)
    before = open(path, "rb").read()
    with pytest.raises(FileExistsError, match=rf"{path} exists; refusing to overwrite it \(give --overwrite"):
        demo.save_rgb(path, img + 1)
    assert open(path, "rb").read() == before
    demo.save_rgb(path, img + 1, overwrite=True)
    assert open(path, "rb").read() != before
    assert demo.get_parser().parse_args(["--config-file", "c.py", "--input", "x", "--overwrite"]).overwrite


def test_full_disk_leaves_no_partial_png_and_names_enospc(demo, tmp_path, monkeypatch):
    real_fsync = os.fsync

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    path = tmp_path / "b_panoptic.png"
    with pytest.raises(OSError, match=rf"no space left on the device while writing {path} \(ENOSPC\)"):
        demo.save_rgb(str(path), np.zeros((4, 5, 3), np.uint8))
    monkeypatch.setattr(os, "fsync", real_fsync)
    assert os.listdir(tmp_path) == []  # neither a 0-byte PNG nor a temporary file
