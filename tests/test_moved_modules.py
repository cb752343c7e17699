"""A run saved before the package reorganization (issue 19) still loads: its ``config.yaml`` names
the old flat modules (``pe_panoptic.meta_arch``, ``pe_panoptic.engine.build_evaluators``, ...), and
``load_config`` reads them as today's, saying which it rewrote."""
import logging

import pytest
from detectron2.config import LazyConfig, instantiate

from conftest import ROOT
from pe_panoptic.engine.config_overrides import load_config
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
