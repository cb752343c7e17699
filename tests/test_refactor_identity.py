"""The split packages give bit-identical results to the single modules they replaced.

The pre-refactor modules are loaded from git (:mod:`legacy`, commit ``LEGACY_COMMIT``) and run
side by side with today's packages on seeded inputs: ``pe_panoptic.postprocess`` (every decoder
x ``void_source`` x ``decode_at`` through ``batch_results``), ``pe_panoptic.modeling.losses`` and
``pe_panoptic.data.synthetic``. Every public name of an old module must still be importable from
the package that replaced it.
"""
import importlib
import itertools
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from legacy import load_legacy, public_names
from pe_panoptic.encoding import build_encoding, normalize_coords
from pe_panoptic.postprocess import DECODERS, VOID_SOURCES, PostProcessConfig, batch_results

N_CLASSES = 7
THINGS = (0, 1, 2)  # 3..6 are stuff


@pytest.fixture(scope="module")
def old_postprocess():
    return load_legacy("pe_panoptic/postprocess.py", "pe_panoptic")


@pytest.mark.parametrize("path, package, new", [
    ("pe_panoptic/postprocess.py", "pe_panoptic", "pe_panoptic.postprocess"),
    ("pe_panoptic/losses.py", "pe_panoptic", "pe_panoptic.modeling.losses"),
    ("pe_panoptic/data/synthetic.py", "pe_panoptic.data", "pe_panoptic.data.synthetic"),
])
def test_public_names_still_importable(path, package, new):
    old = load_legacy(path, package)
    names = public_names(old)
    assert len(names) >= 10
    module = importlib.import_module(new)
    missing = [n for n in names if not hasattr(module, n)]
    assert not missing, f"{new} lost {missing}"
    assert set(getattr(old, "__all__", ())) <= set(getattr(module, "__all__", ()))


# ------------------------------------------------------------------------------------------
# post-processing
# ------------------------------------------------------------------------------------------
def oracle_like(g: torch.Generator, enc, h: int, w: int, noise: float):
    """Noisy perfect outputs of a random layout: stuff bands, 3-8 rectangles of thing classes
    (some overlapping: the later one wins), some instance codes shrunk toward void, plus pixels
    whose semantic argmax says thing but the instance head says void."""
    sem = torch.full((h, w), 3, dtype=torch.long)
    sem[: h // 3] = 4
    sem[:, (2 * w) // 3 :] = 5
    sem[h - 3 :, : w // 4] = 6  # a small stuff region (min_stuff_area)
    ids = torch.zeros(h, w, dtype=torch.long)
    shrink = torch.ones(h, w)
    for k in range(1, int(torch.randint(3, 9, (1,), generator=g)) + 1):
        y0, x0 = int(torch.randint(0, h - 4, (1,), generator=g)), int(torch.randint(0, w - 4, (1,), generator=g))
        y1 = min(h, y0 + int(torch.randint(3, h // 2, (1,), generator=g)))
        x1 = min(w, x0 + int(torch.randint(3, w // 2, (1,), generator=g)))
        ids[y0:y1, x0:x1] = k
        sem[y0:y1, x0:x1] = int(torch.randint(0, len(THINGS), (1,), generator=g))
        if float(torch.rand(1, generator=g)) < 0.3:
            shrink[y0:y1, x0:x1] = 0.2
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij")
    uv = torch.zeros(2, h, w)
    for k in ids.unique().tolist():
        if k:
            m = ids == k
            uv[0][m] = float(normalize_coords(xs[m].mean(), w))
            uv[1][m] = float(normalize_coords(ys[m].mean(), h))
    inst = enc.targets(uv[None], (ids > 0)[None])[0] * shrink
    inst = inst + noise * torch.randn(inst.shape, generator=g)
    logits = F.one_hot(sem, N_CLASSES).permute(2, 0, 1).float() * 4.0
    logits = logits + 1.5 * torch.randn(logits.shape, generator=g)
    return logits, inst


def batch_outputs(seed: int, enc, kind: str, out_hw=(48, 64)):
    """Outputs of a padded batch of two images: a full-size one and a smaller one (cropped)."""
    g = torch.Generator().manual_seed(seed)
    h, w = out_hw
    if kind == "random":  # unstructured: many tiny candidates
        sem = 3.0 * torch.randn(2, N_CLASSES, h, w, generator=g)
        inst = torch.randn(2, enc.num_channels, h, w, generator=g)
    else:
        pairs = [oracle_like(g, enc, h, w, noise=0.35 if kind == "noisy" else 0.0) for _ in range(2)]
        sem = torch.stack([p[0] for p in pairs])
        inst = torch.stack([p[1] for p in pairs])
    depth = torch.rand(2, 1, h, w, generator=g)
    return {"sem_logits": sem, "inst": inst, "depth": depth}


def assert_same_results(new, old):
    """Same panoptic maps, segments (scores exactly), depth; ``sem_seg``: the old probabilities
    exactly (``semantic="probs"``) or their argmax (the default ``[H, W]`` class map)."""
    assert len(new) == len(old)
    for n, o in zip(new, old):
        assert set(n) == set(o)
        seg_n, info_n = n["panoptic_seg"]
        seg_o, info_o = o["panoptic_seg"]
        assert seg_n.dtype == seg_o.dtype == torch.int32 and torch.equal(seg_n, seg_o)
        assert info_n == info_o  # ids, classes, areas and float scores, exactly
        if n["sem_seg"].dim() == 2:
            assert n["sem_seg"].dtype == torch.long and torch.equal(n["sem_seg"], o["sem_seg"].argmax(0))
        else:
            assert torch.equal(n["sem_seg"], o["sem_seg"])
        assert torch.equal(n["depth"], o["depth"])


CASES = list(itertools.product(DECODERS, VOID_SOURCES, ("output", "image")))


@pytest.mark.parametrize("decoder, void_source, decode_at", CASES)
def test_batch_results_identical_to_pre_refactor_module(old_postprocess, decoder, void_source, decode_at):
    enc = build_encoding("pe", num_harmonics=4)
    cfg = PostProcessConfig(decoder=decoder, void_source=void_source, grid=(24, 32), min_instance_area=2e-3,
                            painter_pre_nms_topk=200, painter_max_instances=40)
    old_cfg = old_postprocess.PostProcessConfig(**vars(cfg))
    image_sizes = [(84, 112), (70, 91)]  # input 84 x 112 -> output 48 x 64; the second is cropped
    original_sizes = [(123, 161), (60, 77)]
    n_things = 0
    for seed, kind in ((0, "clean"), (1, "noisy"), (2, "noisy"), (3, "random")):
        outputs = batch_outputs(seed, enc, kind, (48, 64) if kind != "random" else (16, 20))
        sizes = image_sizes if kind != "random" else [(28, 35), (21, 30)]
        new = batch_results(outputs, sizes, original_sizes, enc, THINGS, cfg, decode_at=decode_at,
                            semantic="probs" if seed % 2 else "labels")
        old = old_postprocess.batch_results(outputs, sizes, original_sizes, enc, THINGS, old_cfg, decode_at=decode_at)
        assert_same_results(new, old)
        n_things += sum(s["isthing"] for r in new for s in r["panoptic_seg"][1])
    assert n_things >= 10  # the comparison saw real instances


@pytest.mark.parametrize("decoder, void_source", [("nn", "instance"), ("painter", "semantic"), ("vote", "semantic")])
def test_decode_at_image_in_column_bands_matches_pre_refactor_module(old_postprocess, decoder, void_source):
    """A budget small enough for several column bands: same segmentation, classes and areas;
    scores equal up to float rounding (see pe_panoptic/postprocess/fullsize.py)."""
    enc = build_encoding("pe", num_harmonics=4)
    cfg = PostProcessConfig(decoder=decoder, void_source=void_source, grid=(24, 32), min_instance_area=2e-3)
    old_cfg = old_postprocess.PostProcessConfig(**vars(cfg))
    args = ([(84, 112), (70, 91)], [(300, 401), (257, 330)], enc, THINGS)
    n_things = 0
    for seed in (1, 2):
        outputs = batch_outputs(seed, enc, "noisy")
        new = batch_results(outputs, *args, cfg, decode_at="image", chunk_bytes=1 << 20)
        old = old_postprocess.batch_results(outputs, *args, old_cfg, decode_at="image")
        for n, o in zip(new, old):
            assert torch.equal(n["panoptic_seg"][0], o["panoptic_seg"][0])
            assert torch.equal(n["sem_seg"], o["sem_seg"].argmax(0)) and torch.equal(n["depth"], o["depth"])
            info_n, info_o = n["panoptic_seg"][1], o["panoptic_seg"][1]
            assert [{k: v for k, v in d.items() if k != "score"} for d in info_n] == \
                [{k: v for k, v in d.items() if k != "score"} for d in info_o]
            assert [d["score"] for d in info_n] == pytest.approx([d["score"] for d in info_o], rel=1e-5, abs=1e-6)
            n_things += sum(d["isthing"] for d in info_n)
    assert n_things >= 5


@pytest.mark.parametrize("name", ["rgb", "bins"])
def test_other_encodings_identical_to_pre_refactor_module(old_postprocess, name):
    enc = build_encoding(name, num_bins=24)
    for decoder in DECODERS:
        cfg = PostProcessConfig(decoder=decoder, grid=(24, 24), min_instance_area=2e-3)
        old_cfg = old_postprocess.PostProcessConfig(**vars(cfg))
        outputs = batch_outputs(5, enc, "noisy")
        args = ([(84, 112), (84, 100)], [(96, 128), (50, 60)], enc, THINGS)
        assert_same_results(batch_results(outputs, *args, cfg), old_postprocess.batch_results(outputs, *args, old_cfg))


def test_naive_decode_identical_to_pre_refactor_module(old_postprocess):
    from pe_panoptic.postprocess import naive_decode

    enc = build_encoding("pe", num_harmonics=3)
    pred = torch.randn(2, enc.num_channels, 9, 11, generator=torch.Generator().manual_seed(4))
    for a, b in zip(naive_decode(pred, enc, (10, 12)), old_postprocess.naive_decode(pred, enc, (10, 12))):
        assert torch.equal(a, b)


# ------------------------------------------------------------------------------------------
# losses
# ------------------------------------------------------------------------------------------
def loss_batch(enc, seed: int, B=2, H=14, W=17, num_classes=5):
    """Random outputs and consistent targets: block instances whose pixels share a centroid."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.zeros(B, H, W, dtype=torch.long)
    uv = torch.zeros(B, 2, H, W)
    for b in range(B):
        for k in range(1, 4 + b):
            y0, x0 = int(torch.randint(0, H - 3, (1,), generator=g)), int(torch.randint(0, W - 3, (1,), generator=g))
            ids[b, y0 : y0 + 3 + k, x0 : x0 + 4] = k
        for k in ids[b].unique().tolist():
            if k:
                uv[b, :, ids[b] == k] = (torch.rand(2, 1, generator=g) * 2 - 1)
    sem = torch.randint(0, num_classes, (B, H, W), generator=g)
    sem[:, :2, :3] = 255
    targets = {"sem_seg": sem, "sem_weight": torch.rand(B, H, W, generator=g) * (sem != 255),
               "inst_uv": uv, "inst_valid": ids > 0, "inst_ids": ids, "inst_weight": torch.rand(B, H, W, generator=g),
               "depth": torch.rand(B, H, W, generator=g) + 0.5, "depth_valid": torch.rand(B, H, W, generator=g) > 0.3}
    outputs = {"sem_logits": torch.randn(B, num_classes, H, W, generator=g),
               "inst": torch.randn(B, enc.num_channels, H, W, generator=g),
               "depth": torch.rand(B, 1, H, W, generator=g) + 0.2}
    return outputs, targets


@pytest.mark.parametrize("enc_name, depth_loss", [("pe", "affine_invariant"), ("pe", "silog"), ("rgb", "silog"),
                                                  ("bins", "affine_invariant")])
def test_criterion_identical_to_pre_refactor_module(enc_name, depth_loss):
    import pe_panoptic.modeling.losses as new

    old = load_legacy("pe_panoptic/losses.py", "pe_panoptic")
    enc = build_encoding(enc_name, num_harmonics=3, num_bins=10)
    kw = dict(num_classes=5, sem_weight=1.5, tv_weight=0.2, dice_weight=0.7, depth_loss=depth_loss)
    for seed in range(3):
        outputs, targets = loss_batch(enc, seed)
        results = []
        for crit in (new.PixelCentroidCriterion(enc, **kw), old.PixelCentroidCriterion(enc, **kw)):
            outs = {k: v.clone().requires_grad_(True) for k, v in outputs.items()}
            losses = crit(outs, targets, {"sem", "inst", "depth"})
            sum(losses.values()).backward()
            results.append(({k: v.detach() for k, v in losses.items()}, {k: v.grad for k, v in outs.items()}))
        (new_l, new_g), (old_l, old_g) = results
        assert set(new_l) == set(old_l) and len(new_l) >= 4
        for k in old_l:
            assert torch.equal(new_l[k], old_l[k]), k
        for k in old_g:
            assert torch.equal(new_g[k], old_g[k]), k
    # the pure functions with their optional arguments
    outputs, t = loss_batch(enc, 9)
    if enc_name == "pe":
        codes = new.instance_codes_from_targets(t["inst_uv"], t["inst_ids"], enc)
        for a, b in zip(codes, old.instance_codes_from_targets(t["inst_uv"], t["inst_ids"], enc)):
            assert torch.equal(a, b)
        mask = t["depth_valid"]
        assert torch.equal(new.generalized_dice_loss(outputs["inst"], t["inst_ids"], codes, 3, mask),
                           old.generalized_dice_loss(outputs["inst"], t["inst_ids"], codes, 3, mask))
    assert torch.equal(new.tv_loss_regression(outputs["inst"], "l1"), old.tv_loss_regression(outputs["inst"], "l1"))
    assert torch.equal(new.silog_loss(outputs["depth"], t["depth"], t["depth_valid"], 1.0),
                       old.silog_loss(outputs["depth"], t["depth"], t["depth_valid"], 1.0))


# ------------------------------------------------------------------------------------------
# synthetic dataset
# ------------------------------------------------------------------------------------------
def test_synthetic_scenes_and_files_identical_to_pre_refactor_module(tmp_path):
    from pe_panoptic.data import synthetic as new

    old = load_legacy("pe_panoptic/data/synthetic.py", "pe_panoptic.data")
    for seed in range(4):
        cfg = new.SceneConfig(crowd_prob=1.0 if seed % 2 else 0.3, void_prob=1.0 if seed < 2 else 0.6)
        a = new.render_scene(np.random.default_rng(seed), (96, 120), cfg)
        b = old.render_scene(np.random.default_rng(seed), (96, 120), old.SceneConfig(**vars(cfg)))
        for x, y in zip(a[:3], b[:3]):
            assert x.dtype == y.dtype and np.array_equal(x, y)
        assert a.segments_info == b.segments_info and len(a.segments_info) >= 3
    kw = dict(seed=5, num_train=2, num_val=1, image_size=(64, 80))
    new.generate_synthetic_panoptic(tmp_path / "new", **kw)
    old.generate_synthetic_panoptic(tmp_path / "old", **kw)
    files = sorted(os.path.relpath(os.path.join(d, f), tmp_path / "new")
                   for d, _, fs in os.walk(tmp_path / "new") for f in fs)
    assert len(files) == 14  # 3 images x (jpg, panoptic png, semantic png), 4 json, manifest
    assert files == sorted(os.path.relpath(os.path.join(d, f), tmp_path / "old")
                           for d, _, fs in os.walk(tmp_path / "old") for f in fs)
    for f in files:
        assert (tmp_path / "new" / f).read_bytes() == (tmp_path / "old" / f).read_bytes(), f
