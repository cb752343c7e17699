"""pe_panoptic.export.exporter and tools/export.py: TorchScript / ONNX exports of a tiny model give the
same raw outputs and the same panoptic result as eager PyTorch (onnxruntime on the CPU)."""
import importlib.util
import json
import pathlib

import numpy as np
import pytest
import torch
from torch import nn

from pe_panoptic.modeling.backbone import DINOv2Backbone
from pe_panoptic.modeling.decoder import TransposedConvDecoder
from pe_panoptic.export.exporter import (
    ExportableNetwork,
    OnnxPanopticPredictor,
    export_metadata,
    export_onnx,
    export_torchscript,
    postprocess,
    preprocess,
    register_onnx_symbolics,
    trace_size,
)
from pe_panoptic.modeling.meta_arch import PixelCentroidHead

ort = pytest.importorskip("onnxruntime")
ROOT = pathlib.Path(__file__).resolve().parents[1]


def tiny_model(img_size: int = 56) -> PixelCentroidHead:
    """2-block ViT (pos-embed grid img_size / 14), decoder width 32, 5 classes (0-2 things).
    Head weights are scaled up so that the random model produces instances and stuff."""
    torch.manual_seed(0)
    bb = DINOv2Backbone(out_indices=(0, 1), img_size=img_size, model_kwargs=dict(embed_dim=48, depth=2, num_heads=2))
    model = PixelCentroidHead(
        backbone=bb, decoder=TransposedConvDecoder(96, width=32), decoder_width=32, num_classes=5,
        thing_ids=[0, 1, 2], postprocess=dict(grid=(16, 16), min_instance_area=0.0),
    )
    with torch.no_grad():
        nn.init.normal_(model.heads.sem.weight, std=0.3)
        model.heads.sem.bias.copy_(torch.tensor([0.1, 0.1, 0.1, 0.0, 0.0]))
        nn.init.normal_(model.heads.inst.weight, std=0.8)
    return model.eval()


@pytest.fixture(scope="module")
def model():
    return tiny_model()


@pytest.fixture(scope="module")
def dynamic_onnx(model, tmp_path_factory):
    return export_onnx(model, str(tmp_path_factory.mktemp("onnx") / "dyn.onnx"), 56, 84, dynamic=True)


def images(sizes, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, 256, (3, h, w), generator=g, dtype=torch.uint8) for h, w in sizes]


def assert_same_panoptic(a, b):
    seg_a, info_a = a
    seg_b, info_b = b
    assert torch.equal(seg_a, seg_b)
    strip = lambda info: [{k: v for k, v in s.items() if k != "score"} for s in info]  # noqa: E731
    assert strip(info_a) == strip(info_b)
    assert [s["score"] for s in info_a] == pytest.approx([s["score"] for s in info_b], abs=1e-5)


def run_onnx(path, x):
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    return [torch.from_numpy(a) for a in sess.run(None, {"image": x.numpy()})]


def test_onnx_dynamic_matches_eager_outputs_and_panoptic(model, dynamic_onnx):
    import onnx

    proto = onnx.load(dynamic_onnx)
    assert max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")) == 18
    dims = [d.dim_param for d in proto.graph.input[0].type.tensor_type.shape.dim]
    assert dims[0] == "B" and dims[2:] == ["H", "W"]

    # two sizes that are multiples of 14; the second batch has a padded image (60 x 40 -> 70 x 84)
    for sizes in ([(56, 84)], [(60, 40), (70, 84)]):
        batched = [{"image": im, "height": im.shape[1] * 2, "width": im.shape[2] * 2} for im in images(sizes)]
        with torch.no_grad():
            padded = model.preprocess_image(batched)
            # the model's inference on the same padded batch (model(batched) itself runs one pass per
            # size, so its result for the padded image differs: test_meta_arch)
            expected = model.inference(model.forward_features(padded.tensor), batched, padded)
            eager = ExportableNetwork(model)(padded.tensor)
        out = run_onnx(dynamic_onnx, padded.tensor)
        assert [tuple(o.shape) for o in out] == [tuple(e.shape) for e in eager]
        assert out[0].shape[-2:] == (padded.tensor.shape[-2] * 8 // 14, padded.tensor.shape[-1] * 8 // 14)
        for o, e in zip(out, eager):
            torch.testing.assert_close(o, e, atol=1e-5, rtol=1e-5)
        res = postprocess(dict(zip(("sem_logits", "inst"), out)), padded.image_sizes,
                          [(d["height"], d["width"]) for d in batched], model.encoding, model.thing_ids,
                          model.postprocess_cfg, model.decode_at)
        for r, e in zip(res, expected):
            assert_same_panoptic(r["panoptic_seg"], e["panoptic_seg"])
            torch.testing.assert_close(r["sem_seg"], e["sem_seg"], atol=1e-5, rtol=1e-5)
            infos = e["panoptic_seg"][1]
            assert sum(s["isthing"] for s in infos) >= 10 and sum(not s["isthing"] for s in infos) >= 1


def test_onnx_fixed_size(model, tmp_path):
    # 56 x 56 is the position-embedding grid (4 x 4): a fixed export may bake timm's size check in
    path = export_onnx(model, str(tmp_path / "fixed.onnx"), 56, 56, dynamic=False)
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    assert sess.get_inputs()[0].shape == [1, 3, 56, 56]
    x = torch.randn(1, 3, 56, 56, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        eager = ExportableNetwork(model)(x)
    for o, e in zip(sess.run(None, {"image": x.numpy()}), eager):
        np.testing.assert_allclose(o, e.numpy(), atol=1e-5, rtol=1e-5)
    with pytest.raises(Exception, match="(?i)dimension|shape"):
        sess.run(None, {"image": torch.randn(1, 3, 70, 56).numpy()})


def test_torchscript_dynamic(model, tmp_path):
    path = str(tmp_path / "net.ts")
    export_torchscript(model, path, 56, 56, dynamic=True)
    ts = torch.jit.load(path)
    net = ExportableNetwork(model)
    for shape in [(1, 3, 56, 56), (2, 3, 42, 98)]:
        x = torch.randn(*shape, generator=torch.Generator().manual_seed(4))
        with torch.no_grad():
            for o, e in zip(ts(x), net(x)):
                torch.testing.assert_close(o, e, atol=1e-6, rtol=1e-6)


def test_depth_head_is_exported(tmp_path):
    torch.manual_seed(0)
    bb = DINOv2Backbone(out_indices=(1,), img_size=56, model_kwargs=dict(embed_dim=48, depth=2, num_heads=2))
    model = PixelCentroidHead(backbone=bb, decoder=TransposedConvDecoder(48, width=16), decoder_width=16,
                              num_classes=3, thing_ids=[0], depth=True, max_depth=10.0).eval()
    net = ExportableNetwork(model)
    assert net.output_names == ("sem_logits", "inst", "depth")
    path = export_onnx(model, str(tmp_path / "depth.onnx"), 42, 56, dynamic=True)
    x = torch.randn(1, 3, 56, 42, generator=torch.Generator().manual_seed(5))
    out = run_onnx(path, x)
    with torch.no_grad():
        eager = net(x)
    assert len(out) == 3 and out[2].shape == (1, 1, 32, 24)
    for o, e in zip(out, eager):
        torch.testing.assert_close(o, e, atol=1e-5, rtol=1e-5)
    res = postprocess(dict(zip(net.output_names, out)), [(56, 42)], [(112, 84)], model.encoding, model.thing_ids)[0]
    assert res["depth"].shape == (112, 84) and 0 < float(res["depth"].min()) <= float(res["depth"].max()) < 10
    assert export_metadata(model, height=42, width=56, dynamic=True)["outputs"] == ["sem_logits", "inst", "depth"]


def test_trace_size_and_argument_checks(model):
    net = ExportableNetwork(model)
    assert trace_size(net, 56, 56, dynamic=True) == (56, 70)  # off the 4 x 4 pos-embed grid
    assert trace_size(net, 56, 56, dynamic=False) == (56, 56)
    assert trace_size(net, 42, 56, dynamic=True) == (42, 56)
    with pytest.raises(ValueError, match="multiples of 14"):
        trace_size(net, 50, 56, dynamic=True)
    with pytest.raises(ValueError, match="opset >= 18"):
        register_onnx_symbolics(17)
    out = {"sem_logits": torch.zeros(1, 5, 32, 32), "inst": torch.zeros(1, 16, 32, 32)}
    with pytest.raises(ValueError, match="image_sizes"):
        postprocess(out, [(56, 56), (56, 56)], [(56, 56)], model.encoding, model.thing_ids)
    with pytest.raises(ValueError, match="inst"):
        postprocess({"sem_logits": out["sem_logits"]}, [(56, 56)], [(56, 56)], model.encoding, model.thing_ids)


def test_onnx_predictor_on_real_image_matches_eager(model, dynamic_onnx, d2_datasets, tmp_path):
    """Resize + pad (as the test mapper) + ONNX + postprocess on a COCO fixture image == the
    eager network fed by PanopticCentroidDatasetMapper, post-processed on the unpadded region."""
    import shutil

    from detectron2.data import DatasetCatalog

    from pe_panoptic.data.mapper import PanopticCentroidDatasetMapper, build_test_augmentations, read_image_8bit

    onnx_path = str(tmp_path / "model.onnx")
    shutil.copy(dynamic_onnx, onnx_path)
    meta = export_metadata(model, height=56, width=84, dynamic=True, resize=112)
    (tmp_path / "model.export.json").write_text(json.dumps(meta))
    d = DatasetCatalog.get("coco_2017_val_panoptic")[0]  # 640 x 427 -> 112 x 75, padded to 112 x 84
    mapper = PanopticCentroidDatasetMapper(False, augmentations=build_test_augmentations(112))
    mapped = mapper({"file_name": d["file_name"]})
    assert mapped["image_size_unpadded"] != tuple(mapped["image"].shape[-2:])
    with torch.no_grad():
        x = model.preprocess_image([mapped]).tensor
        raw = dict(zip(("sem_logits", "inst"), ExportableNetwork(model)(x)))
    expected = postprocess(raw, [mapped["image_size_unpadded"]], [(mapped["height"], mapped["width"])],
                           model.encoding, model.thing_ids, model.postprocess_cfg)[0]
    image = read_image_8bit(d["file_name"])
    got = OnnxPanopticPredictor(onnx_path)(image)
    assert got["panoptic_seg"][0].shape == image.shape[:2]
    assert_same_panoptic(got["panoptic_seg"], expected["panoptic_seg"])
    torch.testing.assert_close(got["sem_seg"], expected["sem_seg"], atol=1e-5, rtol=1e-5)


def test_onnx_predictor_fixed_size(model, d2_datasets, tmp_path):
    """A fixed 112 x 112 graph: the resized image (112 x 75) is padded with black to the graph size."""
    import torch.nn.functional as F
    from detectron2.data import DatasetCatalog

    from pe_panoptic.data.mapper import PanopticCentroidDatasetMapper, build_test_augmentations, read_image_8bit

    path = export_onnx(model, str(tmp_path / "model.onnx"), 112, 112, dynamic=False)
    meta = export_metadata(model, height=112, width=112, dynamic=False, resize=112)
    (tmp_path / "model.export.json").write_text(json.dumps(meta))
    file_name = DatasetCatalog.get("coco_2017_val_panoptic")[0]["file_name"]
    mapped = PanopticCentroidDatasetMapper(False, augmentations=build_test_augmentations(112))({"file_name": file_name})
    raw = F.pad(mapped["image"], (0, 112 - mapped["image"].shape[-1], 0, 112 - mapped["image"].shape[-2]))
    x, _ = preprocess([raw], meta["input"]["pixel_mean"], meta["input"]["pixel_std"])
    with torch.no_grad():
        outputs = dict(zip(("sem_logits", "inst"), ExportableNetwork(model)(x)))
    expected = postprocess(outputs, [mapped["image_size_unpadded"]], [(mapped["height"], mapped["width"])],
                           model.encoding, model.thing_ids, model.postprocess_cfg)[0]
    image = read_image_8bit(file_name)
    assert_same_panoptic(OnnxPanopticPredictor(path)(image)["panoptic_seg"], expected["panoptic_seg"])
    meta["input"]["resize_longest"] = 140
    (tmp_path / "model.export.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="does not fit the fixed ONNX input 112x112"):
        OnnxPanopticPredictor(path)(image)


def test_preprocess_pads_black_then_normalizes():
    ims = [torch.full((3, 2, 3), 10, dtype=torch.uint8), torch.full((3, 4, 1), 20, dtype=torch.uint8)]
    x, sizes = preprocess(ims, [10.0, 0.0, 0.0], [2.0, 1.0, 1.0], size_divisibility=3)
    assert x.shape == (2, 3, 6, 3) and sizes == [(2, 3), (4, 1)]
    assert x[0, 0, :2].eq(0).all() and x[0, 0, 2:].eq(-5).all() and x[0, 1, :2].eq(10).all()
    assert x[1, 0, :4, :1].eq(5).all() and x[1, 0, :, 1:].eq(-5).all() and x[1, 2, 4:].eq(0).all()
    with pytest.raises(ValueError, match="image 1"):
        preprocess([ims[0], torch.zeros(1, 2, 2)], [0.0] * 3, [1.0] * 3)


def test_export_tool(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("export_tool", ROOT / "tools" / "export.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    opts = ["model.backbone.model_kwargs.embed_dim=48", "model.backbone.model_kwargs.depth=2",
            "model.backbone.model_kwargs.num_heads=2", "model.backbone.out_indices=[0,1]",
            "model.decoder.width=16", "model.encoding.num_harmonics=3"]
    res = tool.main(["--config-file", str(ROOT / "configs/synthetic/pe_tiny.py"), "--output", str(tmp_path),
                     "--check", "--opts"] + opts)
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed == json.loads(json.dumps(res))
    assert printed["input_hw"] == [168, 168]  # the config's test size (168, a multiple of 14)
    assert printed["exporter"].startswith("legacy") and printed["opset"] == 18
    assert set(printed["max_abs_diff"]) == {"onnx", "torchscript"}
    for diffs in printed["max_abs_diff"].values():
        assert set(diffs) == {"168x168", "182x196"} and max(diffs.values()) < 1e-4
    meta = json.loads((tmp_path / "model.export.json").read_text())
    assert meta["encoding"] == {"name": "pe", "num_harmonics": 3}  # the override reached the export
    assert meta["thing_ids"] == [0, 1, 2, 3] and meta["input"]["resize_longest"] == 168
    assert meta["postprocess"]["grid"] == [48, 48] and meta["outputs"] == ["sem_logits", "inst"]


def test_torchscript_refuses_what_the_eager_model_refuses(model, tmp_path):
    """A trace keeps no Python check: the saved TorchScript file is the trace behind a scripted
    input check, so a size that is not a multiple of 14 raises inside the graph (naming it), as
    the eager model does, instead of returning wrong-sized outputs."""
    dyn, fixed = str(tmp_path / "dyn.ts"), str(tmp_path / "fixed.ts")
    export_torchscript(model, dyn, 56, 56, dynamic=True)
    export_torchscript(model, fixed, 42, 56, dynamic=False)
    bad = torch.randn(1, 3, 50, 56)
    with pytest.raises(ValueError, match="not a multiple of the patch size 14"):
        ExportableNetwork(model)(bad)  # eager: refused
    for path in (dyn, fixed):
        ts = torch.jit.load(path)
        with pytest.raises(Exception, match=r"multiples of 14, got \[1, 3, 50, 56\]"):
            ts(bad)
        with pytest.raises(Exception, match=r"must be \[B, 3, H, W\]"):
            ts(torch.randn(3, 56, 56))
    with pytest.raises(Exception, match="fixed size 42x56"):
        torch.jit.load(fixed)(torch.randn(1, 3, 56, 56))
    assert [o.shape[-2:] for o in torch.jit.load(fixed)(torch.randn(1, 3, 42, 56))] == [(24, 32)] * 2
