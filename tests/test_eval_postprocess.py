"""Post-processing variants of one model (pe_panoptic/evaluation/variants.py and
tools/eval_postprocess.py): one forward pass per batch gives, for every variant, exactly what a
separate inference_on_dataset run with that config gives."""
import dataclasses
import importlib.util
import json
import os
import subprocess
import sys

import pytest
import torch

from detectron2.checkpoint import DetectionCheckpointer
from detectron2.data import DatasetCatalog, build_detection_test_loader
from detectron2.evaluation import COCOPanopticEvaluator, inference_on_dataset

from conftest import save_untrained_checkpoint
from pe_panoptic.modeling.backbone import DINOv2Backbone
from pe_panoptic.data.mapper import PanopticCentroidDatasetMapper, PanopticTargets, build_test_augmentations
from pe_panoptic.data.synthetic import generate_synthetic_panoptic, register_synthetic_panoptic
from pe_panoptic.modeling.decoder import TransposedConvDecoder
from pe_panoptic.evaluation.variants import evaluate_postprocess_variants, variant_grid, variant_name
from pe_panoptic.modeling.meta_arch import PixelCentroidHead

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_spec = importlib.util.spec_from_file_location("oracle_pq", os.path.join(ROOT, "tools", "oracle_pq.py"))
ORACLE = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(ORACLE)
NAME = "pe_test_variants_val"
SIZE = 56


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("variants") / "synthetic_panoptic"
    generate_synthetic_panoptic(str(root), seed=5, num_train=1, num_val=4, image_size=(SIZE, SIZE))
    if NAME not in DatasetCatalog.list():
        register_synthetic_panoptic(NAME, str(root), "val")
    return NAME


class ShrunkOracleHead(PixelCentroidHead):
    """Outputs built from each input's targets: confident semantic logits and the true instance
    codes times 0.3, i.e. a model that knows the centroids but is unsure (every thing pixel is
    nearer to the void code than to its grid code)."""

    def preprocess_image(self, batched_inputs):
        self._batch = batched_inputs
        return super().preprocess_image(batched_inputs)

    def forward_features(self, x):
        # the perfect outputs of tools/oracle_pq.py, instance codes scaled down
        sem, inst = zip(*(ORACLE.oracle_outputs(d["targets"], self.encoding, self.num_classes) for d in self._batch))
        return {"sem_logits": torch.stack(sem), "inst": 0.3 * torch.stack(inst)}


def small_model(dataset):
    torch.manual_seed(0)
    bb = DINOv2Backbone("vit_small_patch14_dinov2", out_indices=(0, 1), img_size=SIZE,
                        model_kwargs=dict(embed_dim=32, depth=2, num_heads=2, init_values=1.0))
    return ShrunkOracleHead(backbone=bb, decoder=TransposedConvDecoder(64, width=16), decoder_width=16,
                            dataset_name=dataset, postprocess=dict(grid=(32, 32))).eval()


def loader(dataset):
    mapper = PanopticCentroidDatasetMapper(False, augmentations=build_test_augmentations(SIZE),
                                           panoptic=PanopticTargets(dataset_name=dataset), with_targets=True)
    return build_detection_test_loader(DatasetCatalog.get(dataset), mapper=mapper, num_workers=0)


def test_variants_equal_separate_runs(dataset, tmp_path):
    model = small_model(dataset)
    variants = variant_grid()
    assert len(variants) == 6
    got = evaluate_postprocess_variants(
        model, loader(dataset), lambda n: COCOPanopticEvaluator(dataset, str(tmp_path / n)), variants)
    assert list(got) == [variant_name(v) for v in variants]
    base = model.postprocess_cfg
    assert base.decoder == "nn" and base.void_source == "instance"  # restored afterwards
    pq_th = {}
    for v in variants:
        model.postprocess_cfg = dataclasses.replace(base, **v)
        ref = inference_on_dataset(model, loader(dataset), COCOPanopticEvaluator(dataset, str(tmp_path / "ref")))
        for k in ("PQ", "PQ_th", "PQ_st", "SQ", "RQ"):
            assert got[variant_name(v)]["panoptic_seg"][k] == pytest.approx(ref["panoptic_seg"][k], abs=1e-9)
        assert got[variant_name(v)]["postprocess_ms_per_image"] > 0
        pq_th[(v["decoder"], v["void_source"])] = ref["panoptic_seg"]["PQ_th"]
    # the shrunk codes decode as void with the paper's void source and as instances otherwise
    for d in ("nn", "vote", "painter"):
        assert pq_th[(d, "instance")] == 0
        assert pq_th[(d, "semantic")] > 80


def test_variant_errors(dataset):
    model = small_model(dataset)
    with pytest.raises(ValueError, match="unknown PostProcessConfig fields"):
        evaluate_postprocess_variants(model, [], lambda n: None, [{"decodr": "nn"}])
    with pytest.raises(ValueError, match="given twice"):
        evaluate_postprocess_variants(model, [], lambda n: None, [{"decoder": "nn"}, {"decoder": "nn"}])
    with pytest.raises(ValueError, match="unknown decoder"):
        variant_grid(["nearest"])
    with pytest.raises(ValueError, match="at least one"):
        evaluate_postprocess_variants(model, [], lambda n: None, [])


def test_tool_on_a_checkpoint(tmp_path):
    """tools/eval_postprocess.py on the demo config with a saved (random) checkpoint: a table
    row per variant and the JSON last line."""
    from pe_panoptic.data.synthetic import generate_synthetic_panoptic as gen

    d2 = tmp_path / "d2"
    gen(str(d2 / "synthetic_panoptic"), seed=2, num_train=1, num_val=2)
    env = dict(os.environ, DETECTRON2_DATASETS=str(d2), PYTHONWARNINGS="ignore")
    cfg = os.path.join(ROOT, "configs/synthetic/pe_tiny.py")
    ckpt = save_untrained_checkpoint(cfg, tmp_path, env)
    assert ckpt.is_file()
    out = tmp_path / "m.json"
    proc = subprocess.run(
        [sys.executable, os.path.join(ROOT, "tools/eval_postprocess.py"), "--config-file", cfg, "--checkpoint",
         str(ckpt), "--decoders", "nn", "vote", "--metrics-json", str(out), "dataloader.test.num_workers=0"],
        env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()
    res = json.loads(lines[-1])
    assert list(res) == ["decoder=nn,void_source=instance", "decoder=nn,void_source=semantic",
                         "decoder=vote,void_source=instance", "decoder=vote,void_source=semantic"]
    assert json.loads(out.read_text()) == res
    for name, r in res.items():
        assert {"PQ", "PQ_th", "PQ_st"} <= set(r["panoptic_seg"]) and "mIoU" in r["sem_seg"]
        assert any(line.startswith(f"| {name} |") for line in lines)

    missing = subprocess.run(
        [sys.executable, os.path.join(ROOT, "tools/eval_postprocess.py"), "--config-file", cfg,
         "--checkpoint", str(tmp_path / "nope.pth")], env=env, capture_output=True, text=True, timeout=300)
    assert missing.returncode != 0 and "checkpoint not found" in missing.stderr
