"""pe_panoptic.engine.checkpoint_io: the strict checkpoint loader every tool uses (pickles only when
trusted, non-checkpoint files named, NaN / inf refused, no silently skipped, missing or unexpected
keys unless allowed by prefix, resume always exact)."""
import fractions
import os
import pickle

import numpy as np
import pytest
import torch
from torch import nn

from detectron2.checkpoint import DetectionCheckpointer
from pe_panoptic.engine.checkpoint_io import CheckpointError, StrictCheckpointer, UntrustedCheckpointError, load_weights


class Net(nn.Module):
    def __init__(self, width=96, head=5, extra=False):
        super().__init__()
        self.body = nn.Conv2d(3, width, 1)
        self.head = nn.Conv2d(width, head, 1)
        if extra:
            self.aux = nn.Linear(2, 2)


def save(model, path):
    torch.save({"model": model.state_dict(), "iteration": 3}, path)
    return str(path)


class Payload:
    """Unpickling it creates a folder: the side effect a malicious pickle would have."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.mkdir, (self.marker,)


def test_round_trip_and_extra_entries(tmp_path):
    torch.manual_seed(0)
    src = Net()
    extra = load_weights(Net(), save(src, tmp_path / "m.pth"))
    assert extra == {"iteration": 3}
    dst = Net()
    load_weights(dst, str(tmp_path / "m.pth"))
    for k, v in src.state_dict().items():
        assert torch.equal(dst.state_dict()[k], v)
    torch.save(src.state_dict(), tmp_path / "plain.pth")  # a bare state dict loads too
    load_weights(Net(), str(tmp_path / "plain.pth"))


def test_wrong_architecture_names_every_bad_key(tmp_path):
    path = save(Net(width=96), tmp_path / "w96.pth")
    with pytest.raises(CheckpointError) as e:
        load_weights(Net(width=192), path)
    msg = str(e.value)
    assert path in msg and "3 parameters of another shape" in msg
    assert "body.weight (96, 3, 1, 1) vs (192, 3, 1, 1)" in msg and "head.weight (5, 96, 1, 1) vs (5, 192, 1, 1)" in msg
    assert "body.bias (96,) vs (192,)" in msg and "head.bias" not in msg  # same shape: not a problem

    with pytest.raises(CheckpointError, match=r"2 model parameters missing from the checkpoint: aux.bias, aux.weight"):
        load_weights(Net(extra=True), path)
    with pytest.raises(CheckpointError, match=r"2 checkpoint parameters the model does not have: aux.bias, aux.weight"):
        load_weights(Net(), save(Net(extra=True), tmp_path / "extra.pth"))


def test_allow_mismatch_prefixes_but_never_when_resuming(tmp_path):
    torch.manual_seed(0)
    src = Net(head=7, extra=True)
    path = save(src, tmp_path / "other_head.pth")
    dst = Net(head=5)
    load_weights(dst, path, allow_mismatch=["head.", "aux."])  # a new head: allowed on purpose
    assert torch.equal(dst.body.weight, src.body.weight)
    with pytest.raises(CheckpointError, match="head.weight"):
        load_weights(Net(head=5), path, allow_mismatch=["aux."])  # only what is named is allowed

    run = tmp_path / "run"
    run.mkdir()
    save(src, run / "model_0000009.pth")
    (run / "last_checkpoint").write_text("model_0000009.pth")
    ckpt = StrictCheckpointer(Net(head=5), str(run), allow_mismatch=["head.", "aux."])
    with pytest.raises(CheckpointError, match="resuming: the run's own checkpoint must match"):
        ckpt.resume_or_load(path, resume=True)
    assert ckpt.resume_or_load(path, resume=False) == {"iteration": 3}  # --resume not given: init load


def test_non_finite_weights_are_refused_before_loading(tmp_path):
    src = Net()
    with torch.no_grad():
        src.head.bias[1] = float("nan")
        src.body.weight[0, 0, 0, 0] = float("inf")
    path = save(src, tmp_path / "nan.pth")
    dst = Net()
    before = {k: v.clone() for k, v in dst.state_dict().items()}
    with pytest.raises(CheckpointError) as e:
        load_weights(dst, path)
    assert "non-finite" in str(e.value) and "body.weight (1 of 288 values)" in str(e.value)
    assert "head.bias (1 of 5 values)" in str(e.value) and path in str(e.value)
    assert all(torch.equal(dst.state_dict()[k], v) for k, v in before.items())  # nothing was loaded


@pytest.mark.parametrize("content", [b"hello, I am a text file\n", b""])
def test_a_file_that_is_not_a_checkpoint_is_named(tmp_path, content):
    path = tmp_path / "notes.pth"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=f"{path} is not a checkpoint"):
        load_weights(Net(), str(path))
    with pytest.raises(FileNotFoundError, match="missing.pth not found"):
        load_weights(Net(), str(tmp_path / "missing.pth"))


def test_pickles_need_trust_and_do_not_run_without_it(tmp_path):
    marker = tmp_path / "payload_ran"
    evil = tmp_path / "evil.pkl"
    evil.write_bytes(pickle.dumps({"model": {}, "__author__": "x", "p": Payload(marker)}))
    with pytest.raises(UntrustedCheckpointError, match="--trust-pickle"):
        load_weights(Net(), str(evil))
    assert not marker.exists()

    # a .pth that needs a full unpickling (a Python object inside) is refused the same way
    odd = tmp_path / "odd.pth"
    torch.save({"model": Net().state_dict(), "meta": fractions.Fraction(1, 3)}, odd)
    with pytest.raises(UntrustedCheckpointError, match="--trust-pickle"):
        load_weights(Net(), str(odd))
    assert load_weights(Net(), str(odd), trust_pickle=True)["meta"] == fractions.Fraction(1, 3)

    # a trusted detectron2 model-zoo style .pkl (numpy arrays) loads, strictly
    torch.manual_seed(1)
    src = Net()
    zoo = tmp_path / "zoo.pkl"
    zoo.write_bytes(pickle.dumps({"model": {k: v.numpy() for k, v in src.state_dict().items()},
                                  "__author__": "model zoo"}))
    dst = Net()
    load_weights(dst, str(zoo), trust_pickle=True)
    assert torch.equal(dst.head.weight, src.head.weight)
    text = tmp_path / "text.pkl"
    text.write_text("not a pickle")
    with pytest.raises(CheckpointError, match=f"{text} is not a checkpoint"):
        load_weights(Net(), str(text), trust_pickle=True)


def test_state_dict_with_non_tensor_entries(tmp_path):
    torch.save({"model": {"body.weight": [1, 2, 3]}}, tmp_path / "bad.pth")
    with pytest.raises(CheckpointError, match=r"not tensors: body.weight \(list\)"):
        load_weights(Net(), str(tmp_path / "bad.pth"))


def test_detectron2_checkpointer_output_loads_strictly(tmp_path):
    """What the trainer writes (DetectionCheckpointer.save) is read back by the strict loader."""
    torch.manual_seed(2)
    src = Net()
    DetectionCheckpointer(src, str(tmp_path)).save("model_final", iteration=5)
    dst = Net()
    assert load_weights(dst, str(tmp_path / "model_final.pth"))["iteration"] == 5
    np.testing.assert_array_equal(dst.head.weight.detach().numpy(), src.head.weight.detach().numpy())
