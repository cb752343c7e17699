"""The split packages give bit-identical results to the single modules they replaced.

The references in ``tests/golden/refactor_identity.npz`` are the outputs of the pre-refactor
modules ``pe_panoptic/postprocess.py``, ``pe_panoptic/losses.py`` and
``pe_panoptic/data/synthetic.py`` at LEGACY_COMMIT e173ad8 (the last commit before they became
packages), written by ``tests/golden/make_refactor_identity_golden.py`` as of commit
e2d2cfe (which loaded those modules from git) on the seeded inputs of
``tests/refactor_inputs.py``. Today's ``pe_panoptic.postprocess`` (every decoder x
``void_source`` x ``decode_at`` through ``batch_results``, column bands, other encodings,
``naive_decode``), ``pe_panoptic.modeling.losses`` (losses and gradients) and
``pe_panoptic.data.synthetic`` (scenes and files) must reproduce them. Every public name of an
old module (listed below, as the old modules had them) must still be importable from the
package that replaced it.
"""
import importlib
import json
import os
import tempfile

import numpy as np
import pytest
import torch

import refactor_inputs as ri
from pe_panoptic.encoding import build_encoding
from pe_panoptic.postprocess import PostProcessConfig, batch_results

#: the commit whose modules produced the references
LEGACY_COMMIT = "e173ad8"

#: public names (``__all__`` plus the module-level names they defined) of the old modules
OLD_PUBLIC_NAMES = {
    "pe_panoptic.postprocess": (
        ["DECODERS", "PostProcessConfig", "VOID_SOURCES", "batch_results", "decode_cells", "decode_scale",
         "grid_nms", "instance_map_from_outputs", "matrix_nms", "merge_instances_and_semantics", "naive_decode",
         "panoptic_from_outputs", "resize_panoptic", "thing_pixel_mask"],
        "all",  # every name was in __all__
    ),
    "pe_panoptic.modeling.losses": (
        ["PixelCentroidCriterion", "TASKS", "affine_invariant_disparity_loss", "generalized_dice_loss",
         "instance_codes_from_targets", "instance_pe_loss_map", "semantic_ce_map", "silog_loss",
         "tv_loss_regression", "tv_loss_semantic", "weighted_mean"],
        "all",
    ),
    "pe_panoptic.data.synthetic": (
        ["GENERATOR_VERSION", "IGNORE_LABEL", "LABEL_DIVISOR", "SMALL_VARIANT", "SPLITS", "SYNTHETIC_CATEGORIES",
         "SceneConfig", "SyntheticSample", "VARIANTS", "blob_mask", "convex_polygon_mask", "default_synthetic_root",
         "disk_mask", "ensure_synthetic_panoptic", "generate_synthetic_panoptic", "load_synthetic_panoptic",
         "paint_labels", "pixel_grid", "register_all_synthetic_panoptic", "register_synthetic_panoptic",
         "regular_polygon", "render_scene", "ring_mask", "shape_extent", "shape_mask", "smooth_noise",
         "stuff_texture", "synthetic_panoptic_metadata", "synthetic_split_paths", "thing_texture", "void_texture",
         "windowed_mask"],
        ["SPLITS", "SYNTHETIC_CATEGORIES", "SceneConfig", "SyntheticSample", "default_synthetic_root",
         "ensure_synthetic_panoptic", "generate_synthetic_panoptic", "load_synthetic_panoptic",
         "register_all_synthetic_panoptic", "register_synthetic_panoptic", "render_scene",
         "synthetic_panoptic_metadata", "synthetic_split_paths"],
    ),
}


@pytest.fixture(scope="module")
def golden():
    data = ri.load_golden()
    assert str(data["legacy_commit"]) == LEGACY_COMMIT
    return data


@pytest.mark.parametrize("new", sorted(OLD_PUBLIC_NAMES))
def test_public_names_still_importable(new):
    names, old_all = OLD_PUBLIC_NAMES[new]
    old_all = names if old_all == "all" else old_all
    module = importlib.import_module(new)
    missing = [n for n in names if not hasattr(module, n)]
    assert not missing, f"{new} lost {missing}"
    assert set(old_all) <= set(getattr(module, "__all__", ())), f"{new}.__all__ lost {set(old_all) - set(module.__all__)}"


# ------------------------------------------------------------------------------------------
# post-processing
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("decoder, void_source, decode_at", ri.CASES)
def test_batch_results_identical_to_pre_refactor_module(golden, decoder, void_source, decode_at):
    enc = build_encoding("pe", num_harmonics=4)
    cfg = ri.case_config(decoder, void_source)
    n_things = 0
    for seed, kind in ri.SEEDS:
        out_hw, sizes, originals = ri.case_sizes(kind)
        outputs = ri.batch_outputs(seed, enc, kind, out_hw)
        new = batch_results(outputs, sizes, originals, enc, ri.THINGS, cfg, decode_at=decode_at,
                            semantic="probs" if seed % 2 else "labels")
        n_things += ri.assert_matches_record(golden, f"case:{decoder}:{void_source}:{decode_at}:{seed}", new)
    assert n_things >= 10  # the comparison saw real instances


@pytest.mark.parametrize("decoder, void_source", ri.BANDED_CASES)
def test_decode_at_image_in_column_bands_matches_pre_refactor_module(golden, decoder, void_source):
    """A budget small enough for several column bands: same segmentation, classes and areas;
    scores equal up to float rounding (see pe_panoptic/postprocess/fullsize.py)."""
    enc = build_encoding("pe", num_harmonics=4)
    cfg = PostProcessConfig(decoder=decoder, void_source=void_source, grid=(24, 32), min_instance_area=2e-3)
    n_things = 0
    for seed in ri.BANDED_SEEDS:
        outputs = ri.batch_outputs(seed, enc, "noisy")
        new = batch_results(outputs, *ri.BANDED_ARGS, enc, ri.THINGS, cfg, decode_at="image", chunk_bytes=1 << 20)
        n_things += ri.assert_matches_record(golden, f"banded:{decoder}:{void_source}:{seed}", new,
                                             score_rel=1e-5, score_abs=1e-6)
    assert n_things >= 5


@pytest.mark.parametrize("name", ri.OTHER_ENCODINGS)
def test_other_encodings_identical_to_pre_refactor_module(golden, name):
    enc = build_encoding(name, num_bins=24)
    for decoder in ri.DECODERS:
        cfg = PostProcessConfig(decoder=decoder, grid=(24, 24), min_instance_area=2e-3)
        outputs = ri.batch_outputs(5, enc, "noisy")
        new = batch_results(outputs, *ri.OTHER_ENCODING_ARGS, enc, ri.THINGS, cfg, semantic="probs")
        ri.assert_matches_record(golden, f"encoding:{name}:{decoder}", new)


def test_naive_decode_identical_to_pre_refactor_module(golden):
    from pe_panoptic.postprocess import naive_decode

    enc, pred, grid = ri.naive_decode_input()
    out = naive_decode(pred, enc, grid)
    assert len(out) == sum(k.startswith("naive_decode:") for k in golden) >= 2
    for i, t in enumerate(out):
        ref = golden[f"naive_decode:{i}"]
        assert t.numpy().dtype == ref.dtype and np.array_equal(t.numpy(), ref), i


# ------------------------------------------------------------------------------------------
# losses
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("enc_name, depth_loss", ri.LOSS_CASES)
def test_criterion_identical_to_pre_refactor_module(golden, enc_name, depth_loss):
    import pe_panoptic.modeling.losses as new

    enc = ri.loss_encoding(enc_name)
    for seed in range(3):
        outputs, targets = ri.loss_batch(enc, seed)
        crit = new.PixelCentroidCriterion(enc, depth_loss=depth_loss, **ri.LOSS_KW)
        outs = {k: v.clone().requires_grad_(True) for k, v in outputs.items()}
        losses = crit(outs, targets, {"sem", "inst", "depth"})
        sum(losses.values()).backward()
        key = f"loss:{enc_name}:{depth_loss}:{seed}"
        names = json.loads(str(golden[f"{key}:names"]))
        assert sorted(losses) == names and len(names) >= 4
        values = np.stack([losses[k].detach().numpy() for k in names])
        assert values.dtype == golden[f"{key}:values"].dtype
        assert np.array_equal(values, golden[f"{key}:values"]), dict(zip(names, values.tolist()))
        for k, v in outs.items():
            assert ri.checksum(v.grad) == str(golden[f"{key}:grad:{k}"]), f"{key}: gradient of {k} differs"
    # the pure functions with their optional arguments
    outputs, t = ri.loss_batch(enc, 9)
    key = f"lossfn:{enc_name}:{depth_loss}"
    if enc_name == "pe":
        codes = new.instance_codes_from_targets(t["inst_uv"], t["inst_ids"], enc)
        assert [ri.checksum(c) for c in codes] == json.loads(str(golden[f"{key}:codes"]))
        dice = new.generalized_dice_loss(outputs["inst"], t["inst_ids"], codes, 3, t["depth_valid"])
        assert np.array_equal(dice.numpy(), golden[f"{key}:dice"])
    assert np.array_equal(new.tv_loss_regression(outputs["inst"], "l1").numpy(), golden[f"{key}:tv"])
    silog = new.silog_loss(outputs["depth"], t["depth"], t["depth_valid"], 1.0)
    assert np.array_equal(silog.numpy(), golden[f"{key}:silog"])


# ------------------------------------------------------------------------------------------
# synthetic dataset
# ------------------------------------------------------------------------------------------
def test_synthetic_scenes_and_files_identical_to_pre_refactor_module(golden):
    from pe_panoptic.data import synthetic as new

    for seed in ri.SYNTHETIC_SEEDS:
        scene = new.render_scene(np.random.default_rng(seed), ri.SYNTHETIC_SIZE,
                                 new.SceneConfig(**ri.synthetic_scene_kw(seed)))
        assert [ri.checksum(a) for a in scene[:3]] == json.loads(str(golden[f"scene:{seed}:arrays"])), seed
        segments = json.loads(ri.to_json(scene.segments_info))
        assert segments == json.loads(str(golden[f"scene:{seed}:segments"])) and len(segments) >= 3
    with tempfile.TemporaryDirectory() as tmp:
        new.generate_synthetic_panoptic(tmp, **ri.SYNTHETIC_FILES_KW)
        files = sorted(os.path.relpath(os.path.join(d, f), tmp) for d, _, fs in os.walk(tmp) for f in fs)
        sums = {f: ri.checksum(np.frombuffer(open(os.path.join(tmp, f), "rb").read(), np.uint8)) for f in files}
    assert len(files) == 14  # 3 images x (jpg, panoptic png, semantic png), 4 json, manifest
    ref = json.loads(str(golden["synthetic_files"]))
    assert sorted(ref) == files
    assert [f for f in files if sums[f] != ref[f]] == []
