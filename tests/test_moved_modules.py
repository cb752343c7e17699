"""A run saved before the package reorganization (issue 19) still loads: its ``config.yaml`` names
the old flat modules (``pe_panoptic.meta_arch``, ``pe_panoptic.engine.build_evaluators``, ...), and
``load_config`` reads them as today's, saying which it rewrote."""
import logging

import pytest
from detectron2.config import LazyConfig, instantiate

from conftest import ROOT
from pe_panoptic.engine.config_overrides import load_config
from pe_panoptic.engine.legacy_mapper import upgrade_mapper_args
from pe_panoptic.engine.moved_modules import MOVED, MOVED_OBJECTS, upgrade_name


def _old_names(text: str) -> str:
    for old, new in sorted(MOVED.items(), key=lambda kv: -len(kv[1])):
        text = text.replace(new + ".", old + ".")
    for old, new in MOVED_OBJECTS.items():
        text = text.replace(new, old)
    # detectron2 saves the shortest importable path of a function
    return text.replace("pe_panoptic.evaluation.build_evaluators", "pe_panoptic.engine.build_evaluators")


def test_every_moved_name_resolves():
    import importlib

    for old, new in MOVED.items():
        importlib.import_module(new)
        assert upgrade_name(old + ".X") == new + ".X"
        with pytest.raises(ModuleNotFoundError):
            importlib.import_module(old)
    from detectron2.utils.registry import locate

    for old, new in MOVED_OBJECTS.items():
        assert locate(upgrade_name(old)) is not None
    assert upgrade_name("pe_panoptic.modeling.meta_arch.PixelCentroidHead") == \
        "pe_panoptic.modeling.meta_arch.PixelCentroidHead"
    assert upgrade_name("pe_panoptic.decoder_extra.X") == "pe_panoptic.decoder_extra.X"  # whole names only


def test_pre_reorganization_config_yaml_loads(tmp_path, caplog):
    cfg = LazyConfig.load(str(ROOT / "configs/synthetic/pe_tiny.py"))
    new_yaml = tmp_path / "new.yaml"
    LazyConfig.save(cfg, str(new_yaml))
    text = new_yaml.read_text()
    assert "pe_panoptic.modeling.meta_arch.PixelCentroidHead" in text
    old_text = _old_names(text)
    assert "pe_panoptic.meta_arch.PixelCentroidHead" in old_text
    assert "pe_panoptic.engine.build_evaluators" in old_text
    old_yaml = tmp_path / "config.yaml"
    old_yaml.write_text(old_text)
    with caplog.at_level(logging.WARNING):
        loaded = load_config(str(old_yaml), ["model.backbone.out_indices=[1,3]"])
    assert "pe_panoptic.meta_arch.PixelCentroidHead -> pe_panoptic.modeling.meta_arch.PixelCentroidHead" in caplog.text
    assert loaded.model._target_ == "pe_panoptic.modeling.meta_arch.PixelCentroidHead"
    assert loaded.dataloader.evaluator._target_ == "pe_panoptic.evaluation.build.build_evaluators"
    model = instantiate(loaded.model)
    assert type(model).__module__ == "pe_panoptic.modeling.meta_arch"


def test_config_yaml_with_the_former_mapper_arguments_loads(tmp_path, caplog, d2_datasets):
    """A run saved before the target builders has the panoptic / depth settings as mapper
    arguments (``dataset_name``, ``eds_D``, ``include_void``, ``panoptic="auto"``,
    ``depth="metric"``, ``depth_root``, ...): ``load_config`` reads them as today's builders, with
    the same targets, and relative interpolations still point at the same keys."""
    import torch
    from detectron2.data import DatasetCatalog
    from omegaconf import OmegaConf

    from pe_panoptic.data.mapper import DepthTargets, PanopticCentroidDatasetMapper, PanopticTargets

    coco = "coco_2017_val_panoptic"
    mapper = "pe_panoptic.data.PanopticCentroidDatasetMapper"  # detectron2 saves the shortest path
    old = {"dataloader": {
        "train": {"mapper": {"_target_": mapper, "is_train": True, "augmentations": [], "dataset_name": coco,
                             "eds_D": 10.0, "use_eds": True, "include_void": False, "skip_invalid": False,
                             "depth": None}},
        "test": {"dataset": {"names": coco},
                 "mapper": {"_target_": mapper, "is_train": False, "augmentations": [],
                            "dataset_name": "${..dataset.names}", "with_targets": True}},
        "mixed": {"mappers": [{"_target_": mapper, "is_train": True, "augmentations": [], "panoptic": "auto",
                               "depth": "disparity", "depth_root": [str(tmp_path)], "min_depth": 0.01,
                               "dataset_name": coco}]},
    }}
    yaml = tmp_path / "config.yaml"
    OmegaConf.save(OmegaConf.create(old), str(yaml))
    with caplog.at_level(logging.WARNING):
        cfg = load_config(str(yaml))
    assert "dataloader.train.mapper" in caplog.text and "dataloader.mixed.mappers.0" in caplog.text
    train = cfg.dataloader.train.mapper
    assert "dataset_name" not in train and "eds_D" not in train and train.depth is None
    assert (train.panoptic.dataset_name, train.panoptic.eds_D, train.panoptic.include_void) == (coco, 10.0, False)
    assert cfg.dataloader.test.mapper.panoptic.dataset_name == coco  # the interpolation, one level deeper
    mixed = cfg.dataloader.mixed.mappers[0]
    assert mixed.panoptic.optional is True and mixed.panoptic.dataset_name == coco
    assert (mixed.depth.kind, list(mixed.depth.root), mixed.depth.min_depth) == ("disparity", [str(tmp_path)], 0.01)
    assert isinstance(instantiate(mixed).depth, DepthTargets)

    d = DatasetCatalog.get(coco)[0]
    got = instantiate(train)(d)["targets"]
    want = PanopticCentroidDatasetMapper(True, augmentations=[], panoptic=PanopticTargets(
        dataset_name=coco, eds_D=10.0, include_void=False))(d)["targets"]
    assert set(got) == set(want) and all(torch.equal(got[k], want[k]) for k in want)
    assert set(instantiate(cfg.dataloader.test.mapper)(d)["targets"]) == set(want)
    # a config of today is left alone
    assert not upgrade_mapper_args(cfg)
