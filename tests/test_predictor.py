"""pe_panoptic.engine.predictor (config + weights -> model; one image -> results through the test
mapper) and pe_panoptic.engine.device (the one resolution of ``--device auto``)."""
import os
import pathlib

import numpy as np
import pytest
import torch

from pe_panoptic.engine.device import resolve_device

ROOT = pathlib.Path(__file__).resolve().parents[1]
CONFIG = str(ROOT / "configs/coco/vitb_ablation_420.py")
# the COCO recipe with a 2-block ViT-S/14-shaped encoder at 112 px on the real COCO fixture
TINY = ["model.backbone.model_name=vit_small_patch14_dinov2", "model.backbone.model_kwargs={depth: 2}",
        "model.backbone.out_indices=[0,1]", "model.backbone.weights=null",
        "dataloader.test.mapper.augmentations.size=112", "dataloader.test.num_workers=0"]


# ----------------------------------------------------------------------------- device
def test_resolve_device_auto_and_names(monkeypatch):
    assert resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device(None) == resolve_device("") == resolve_device("auto")
    assert resolve_device("cpu") == "cpu" and resolve_device(torch.device("cpu")) == "cpu"
    with pytest.raises(ValueError, match=r"--device 'gpu0' is not a device name"):
        resolve_device("gpu0")
    with pytest.raises(ValueError, match=r"train.device 'nonsense'"):
        resolve_device("nonsense", "train.device")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == "cpu"
    with pytest.raises(ValueError, match=r"--device 'cuda:1': CUDA is not available"):
        resolve_device("cuda:1")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert resolve_device("auto") == "cuda" and resolve_device("cuda:0") == "cuda:0"
    with pytest.raises(ValueError, match="has 1 CUDA device"):
        resolve_device("cuda:3")


def test_every_device_resolution_is_the_same(monkeypatch):
    from pe_panoptic.engine.trainer import default_device
    from pe_panoptic.studies import benchmark as B

    for available in (False, True):
        monkeypatch.setattr(torch.cuda, "is_available", lambda: available)
        want = "cuda" if available else "cpu"
        assert default_device() == want and B.resolve_device("auto") == torch.device(want)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="CUDA is not available"):
        B.resolve_device("cuda")


# ----------------------------------------------------------------------------- predictor
@pytest.fixture(scope="module")
def checkpoint(d2_datasets, tmp_path_factory):
    """Weights of the tiny COCO model (seed 0) in a plain state-dict file."""
    from detectron2.config import instantiate

    from pe_panoptic.engine.config_overrides import load_config

    cfg = load_config(CONFIG, TINY)
    torch.manual_seed(0)
    model = instantiate(cfg.model)
    with torch.no_grad():  # make the heads' output depend on every weight (not only the init)
        for p in model.parameters():
            p.add_(0.01 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())))
    path = tmp_path_factory.mktemp("predictor") / "model.pth"
    torch.save(model.state_dict(), path)
    return str(path)


def _assert_same_result(a: dict, b: dict):
    assert sorted(a) == sorted(b)
    (seg_a, info_a), (seg_b, info_b) = a["panoptic_seg"], b["panoptic_seg"]
    assert torch.equal(seg_a, seg_b) and info_a == info_b
    assert torch.equal(a["sem_seg"], b["sem_seg"])


def test_predictor_equals_the_test_loader_inference(checkpoint):
    """The predictor on an image (path or array) gives bit-identical results to the model on the
    test loader's batch of the same image, at the original size."""
    from detectron2.config import instantiate

    from pe_panoptic.data.mapper import read_image_8bit
    from pe_panoptic.engine.checkpoint_io import load_weights
    from pe_panoptic.engine.config_overrides import load_config
    from pe_panoptic.engine.predictor import Predictor

    torch.set_num_threads(2)
    pred = Predictor.from_config(CONFIG, TINY, checkpoint, device="cpu")
    assert pred.device == "cpu" and not pred.model.training
    assert pred.metadata.name == "coco_2017_val_panoptic"

    cfg = load_config(CONFIG, TINY)
    ref_model = instantiate(cfg.model).eval()
    load_weights(ref_model, checkpoint)
    batch = next(iter(instantiate(cfg.dataloader.test)))
    assert len(batch) == 1
    with torch.no_grad():
        ref = ref_model(batch)[0]
    file_name = batch[0]["file_name"]
    image = read_image_8bit(file_name, "RGB")
    H, W = image.shape[:2]
    assert ref["panoptic_seg"][0].shape == (H, W) and (H, W) != tuple(batch[0]["image"].shape[-2:])
    assert len(ref["panoptic_seg"][1]) > 0  # something to compare

    _assert_same_result(pred(file_name), ref)
    _assert_same_result(pred(pathlib.Path(file_name)), ref)
    _assert_same_result(pred(image), ref)
    _assert_same_result(pred(np.ascontiguousarray(image[:, :, ::-1]), image_format="BGR"), ref)
    mapped, outputs, res = pred.run(image)
    _assert_same_result(res, ref)
    assert torch.equal(mapped["image"], batch[0]["image"])
    assert mapped["image_size_unpadded"] == batch[0]["image_size_unpadded"]
    # the raw outputs of the unpadded region: the image is 112 x 75 in a 112 x 84 input, its
    # outputs the first round(75 * 48 / 84) = 43 of the 48 output columns
    assert mapped["image_size_unpadded"] == (75, 112) and mapped["input_hw"] == (84, 112)
    with torch.no_grad():
        full = pred.model.forward_features(pred.model.preprocess_image([mapped]).tensor)
    assert full["inst"].shape[-2:] == (48, 64) and outputs["inst"].shape[-2:] == (43, 64)
    for k, v in outputs.items():
        assert torch.equal(v, full[k][..., :43, :64])

def test_predictor_refusals(checkpoint, tmp_path):
    from pe_panoptic.engine.checkpoint_io import CheckpointError
    from pe_panoptic.engine.config_overrides import ConfigOverrideError
    from pe_panoptic.engine.predictor import Predictor, load_model

    with pytest.raises(ConfigOverrideError, match="model.backbone.nonsense"):
        load_model(CONFIG, TINY + ["model.backbone.nonsense=1"], checkpoint, "cpu")
    other = TINY[:-2] + ["model.decoder.width=16"]
    with pytest.raises(CheckpointError, match="does not fit the model"):
        load_model(CONFIG, other, checkpoint, "cpu")
    with pytest.raises(ValueError, match="no weights given"):
        load_model(CONFIG, TINY, "", "cpu", missing_weights="error")
    with pytest.raises(ValueError, match="--device 'gpu'"):
        load_model(CONFIG, TINY, checkpoint, "gpu")
    pkl = tmp_path / "model.pkl"
    pkl.write_bytes(open(checkpoint, "rb").read())
    from pe_panoptic.engine.checkpoint_io import UntrustedCheckpointError

    with pytest.raises(UntrustedCheckpointError, match="--trust-pickle"):
        load_model(CONFIG, TINY, str(pkl), "cpu")
    pred = Predictor.from_config(CONFIG, TINY, checkpoint, device="cpu")
    with pytest.raises(TypeError, match="HWC uint8"):
        pred(np.zeros((10, 10), np.uint8))
    with pytest.raises(ValueError, match="'L'"):
        pred(np.zeros((28, 28, 3), np.uint8), image_format="L")
    with pytest.raises(FileNotFoundError):
        pred(os.path.join(str(tmp_path), "missing.jpg"))
