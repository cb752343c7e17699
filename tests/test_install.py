"""The installer's result: detectron2 v0.6 importable with the compatibility fixes, registries
populated by `import pe_panoptic`, model-zoo configs packaged, C++ ops failing clearly."""
import importlib
import importlib.util
import inspect
import os

import numpy as np
import pytest


def test_detectron2_imports_and_version():
    import detectron2
    from detectron2 import data, engine, evaluation, modeling, utils  # noqa: F401
    from detectron2.utils import visualizer  # noqa: F401

    assert detectron2.__version__ == "0.6"


def test_model_zoo_configs_present():
    from detectron2 import model_zoo

    for name in ("COCO-PanopticSegmentation/panoptic_fpn_R_50_1x.yaml", "common/models/panoptic_fpn.py",
                 "COCO-PanopticSegmentation/panoptic_fpn_R_50_1x.py", "Cityscapes/mask_rcnn_R_50_FPN.yaml"):
        assert os.path.isfile(model_zoo.get_config_file(name)), name
    zoo = os.path.dirname(model_zoo.get_config_file("common/train.py"))
    n = sum(len(f) for _, _, f in os.walk(os.path.dirname(zoo)))
    assert n >= 128  # all model zoo configs are packaged


def test_compiled_ops_fail_with_clear_message():
    from detectron2.layers import rotated_boxes

    with pytest.raises(RuntimeError, match="without its C\\+\\+/CUDA extension"):
        rotated_boxes.pairwise_iou_rotated(np.zeros((1, 5)), np.zeros((1, 5)))


@pytest.mark.parametrize(
    "module, forbidden",
    [
        ("detectron2.evaluation.sem_seg_evaluation", "np.float)"),
        ("detectron2.structures.masks", "np.bool)"),
        ("detectron2.data.transforms.transform", "Image.LINEAR"),
        ("detectron2.layers.mask_ops", "copy=False"),
        ("detectron2.data.build", "np.int\n"),
    ],
)
def test_compat_patches_applied(module, forbidden):
    src = inspect.getsource(importlib.import_module(module))
    assert forbidden not in src


def test_patched_code_paths_run():
    """Run the code paths the patches fixed (numpy 2 / Pillow 10 / matplotlib colours)."""
    from PIL import Image

    from detectron2.data import transforms as T
    from detectron2.structures.masks import polygons_to_bitmask
    from detectron2.utils.visualizer import Visualizer

    m = polygons_to_bitmask([np.array([0, 0, 4, 0, 4, 4, 0, 4], dtype=float)], 6, 6)
    assert m.dtype == bool and m.sum() > 0
    img = np.random.RandomState(0).randint(0, 255, (20, 30, 3), dtype=np.uint8)
    out = T.ExtentTransform((0, 0, 30, 20), (10, 15)).apply_image(img)
    assert out.shape == (10, 15, 3)
    vis = Visualizer(img)
    for color in ("w", (1.0, 1.0, 1.0), (0.99, 0.99, 0.2)):
        vis.draw_text("x", (5, 5), color=color)
        vis.draw_polygon(np.array([[0, 0], [5, 0], [5, 5]]), color=color, alpha=0.5)
    assert vis.get_output().get_image().shape == (20, 30, 3)
    assert Image.BILINEAR is not None


def test_registries_populated_without_collisions():
    import pe_panoptic  # noqa: F401
    from detectron2.data import DatasetCatalog, MetadataCatalog
    from detectron2.modeling import BACKBONE_REGISTRY, META_ARCH_REGISTRY

    assert "build_dinov2_backbone" in BACKBONE_REGISTRY._obj_map
    assert "PixelCentroidHead" in META_ARCH_REGISTRY._obj_map
    # detectron2's own entries are still there (nothing overwritten)
    for name in ("build_resnet_fpn_backbone", "build_resnet_backbone"):
        assert name in BACKBONE_REGISTRY._obj_map
    for name in ("PanopticFPN", "GeneralizedRCNN", "SemanticSegmentor"):
        assert name in META_ARCH_REGISTRY._obj_map
    # names Mask2Former registers stay free for it: absent, or registered by mask2former itself
    # (an earlier test of the session may have imported it for the baselines)
    for name in ("D2SwinTransformer", "MaskFormer"):
        for reg in (BACKBONE_REGISTRY, META_ARCH_REGISTRY):
            obj = reg._obj_map.get(name)
            assert obj is None or obj.__module__.startswith("mask2former."), (name, obj)
    # and no pe_panoptic registration uses a name that detectron2 or Mask2Former registers
    ours = {n for reg in (BACKBONE_REGISTRY, META_ARCH_REGISTRY) for n, o in reg._obj_map.items()
            if o.__module__.startswith("pe_panoptic")}
    assert ours and not ours & {"D2SwinTransformer", "MaskFormer", "build_resnet_backbone", "PanopticFPN"}
    for split in ("train", "val"):
        assert f"synthetic_panoptic_{split}" in DatasetCatalog.list()
        assert MetadataCatalog.get(f"synthetic_panoptic_{split}").evaluator_type == "coco_panoptic_seg"
    assert "coco_2017_val_panoptic" in DatasetCatalog.list()


def test_map_dataset_retry_works_on_python311():
    """detectron2 v0.6's MapDataset retries a sample the mapper rejected with random.sample on a
    set, which Python >= 3.11 refuses; the installer patches it."""
    from detectron2.data.common import MapDataset

    ds = MapDataset([0, 1, 2], lambda x: None if x == 0 else x)
    assert ds[0] in (1, 2)


def test_installer_is_idempotent_and_detects_its_patch_set(monkeypatch):
    import subprocess
    import sys

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = subprocess.run([sys.executable, os.path.join(root, "tools/install_detectron2.py")],
                         capture_output=True, text=True, check=True).stdout
    assert "already installed: detectron2 0.6" in out
    import detectron2._pe_panoptic_patches as p

    monkeypatch.syspath_prepend(os.path.join(root, "tools"))  # as for the script: its sibling sdist_install
    spec = importlib.util.spec_from_file_location("inst", os.path.join(root, "tools/install_detectron2.py"))
    inst = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(inst)
    assert p.PATCH_ID == inst.patch_id()


def test_sdist_install_refuses_unknown_sources(tmp_path, monkeypatch, capsys):
    """tools/sdist_install.py (shared by both installers): the sha256 check, the exact-count
    literal edits, and the patch-set id."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    monkeypatch.syspath_prepend(os.path.join(root, "tools"))
    import hashlib

    import sdist_install

    fake = tmp_path / "pkg-1.0.tar.gz"
    fake.write_bytes(b"some bytes")
    digest = hashlib.sha256(b"some bytes").hexdigest()
    assert sdist_install.sha256_of(str(fake)) == digest
    sd = sdist_install.Sdist("pkg==1.0", fake.name, digest, "pkg-1.0", "pkg.egg-info", "install_pkg", "Pkg")
    assert sd.fetch(str(tmp_path), str(fake)) == str(fake)
    bad = sdist_install.Sdist("pkg==1.0", fake.name, "0" * 64, "pkg-1.0", "pkg.egg-info", "install_pkg", "Pkg")
    with pytest.raises(SystemExit, match=r"\[install_pkg\] .*does not match the pinned 0{64}; refusing to install "
                                         r"an unknown Pkg source"):
        bad.fetch(str(tmp_path), str(fake))
    (tmp_path / "a.py").write_text("x = 1\nx = 1\ny = 2\n")
    sd.apply(str(tmp_path), [("a.py", "x = 1\n", "x = 3\n", 2, "why"), ("a.py", "y", "z", 1, "because")])
    assert (tmp_path / "a.py").read_text() == "x = 3\nx = 3\nz = 2\n"
    assert "[install_pkg] patched a.py (why)" in capsys.readouterr().out
    with pytest.raises(SystemExit, match=r"a.py: expected 1 occurrence\(s\) of 'x = 3\\n', found 2"):
        sd.apply(str(tmp_path), [("a.py", "x = 3\n", "", 1, "")])
    assert sdist_install.patch_id([1], "s") == hashlib.sha256(b"[1]s").hexdigest()[:16]
