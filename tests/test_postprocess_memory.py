"""Post-processing at the original image size in bounded memory (pe_panoptic/postprocess/upsample.py,
fullsize.py): the piecewise upsampling equals the one-call upsampling bitwise, results on the real
COCO fixtures are those of the pre-refactor module (bit for bit with ``decode_at="output"``; with
``decode_at="image"`` the same segmentation, scores to ~1e-10), and the peak memory of a
6000 x 4000 image stays far below the ``N x H x W`` logits the old code upsampled."""
import copy
import importlib.util
import pathlib
import subprocess
import sys
import textwrap

import pytest
import torch

from legacy import load_legacy
from pe_panoptic.encoding import build_encoding
from pe_panoptic.postprocess import DECODERS, PostProcessConfig, batch_results, panoptic_at_size
from pe_panoptic.postprocess.upsample import (
    BAND_ALIGN,
    MIN_BAND_ROWS,
    band_width,
    bilinear,
    bilinear_column_bands,
    column_bands,
    upsampled_argmax,
)

ROOT = pathlib.Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------------------
# exact decompositions of the bilinear upsampling
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape, size, chunk_bytes", [
    ((7, 12, 17), (50, 61), 1),  # one class at a time
    ((7, 12, 17), (50, 61), 3 * 4 * 50 * 61),  # three at a time, last chunk partial
    ((133, 9, 11), (40, 47), 1 << 30),  # all at once
])
def test_upsampled_argmax_is_the_first_maximum_of_the_full_upsampling(shape, size, chunk_bytes):
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 2, shape, generator=g).float()  # 0 / 1 logits: many exact ties
    full = bilinear(x, size)
    got = upsampled_argmax(x, size, chunk_bytes)
    assert got.dtype == torch.long and got.shape == size
    assert torch.equal(got, full.max(0).indices) and torch.equal(got, full.argmax(0))
    ties = (full == full.max(0, keepdim=True).values).sum(0) > 1
    assert ties.float().mean() > 0.02  # the tie-breaking was exercised


def test_column_bands_and_band_width_by_hand():
    assert column_bands(100, 128) == [(0, 100)]
    assert column_bands(128, 64) == [(0, 64), (64, 128)]
    assert column_bands(150, 64) == [(0, 64), (64, 128), (86, 150)]  # last band shifted left
    assert band_width(1000, 10, 4 * 1000 * 10 * 200) == 192  # 200 columns fit, aligned down
    assert band_width(1000, 10, 1) == BAND_ALIGN
    with pytest.raises(ValueError, match="band"):
        column_bands(10, 0)


@pytest.mark.parametrize("shape, size, band", [
    ((5, 48, 64), (300, 401), 64),
    ((3, 61, 37), (427, 640), 128),
    ((2, 384, 576), (1000, 1500), 192),
    ((4, 30, 40), (MIN_BAND_ROWS - 1, 700), 64),  # few rows: one call
    ((4, 30, 40), (200, 60), 64),  # narrower than a band: one call
])
def test_column_bands_are_the_full_upsampling_bitwise(shape, size, band):
    x = torch.randn(shape, generator=torch.Generator().manual_seed(1)) * 5
    full = bilinear(x, size)
    covered = torch.zeros(size[1], dtype=torch.bool)
    for x0, x1, tile in bilinear_column_bands(x, size, band):
        assert tile.shape == (shape[0], size[0], x1 - x0)
        assert torch.equal(tile, full[:, :, x0:x1])
        covered[x0:x1] = True
    assert bool(covered.all())


# ------------------------------------------------------------------------------------------
# decode_at="image" in bands
# ------------------------------------------------------------------------------------------
def block_scene(seed, enc, n=6, h=40, w=56):
    """Noisy outputs of rectangles of classes 0 / 1 on stuff 2 / 3."""
    g = torch.Generator().manual_seed(seed)
    sem = torch.full((h, w), 2, dtype=torch.long)
    sem[h // 2 :] = 3
    uv = torch.zeros(2, h, w)
    valid = torch.zeros(h, w, dtype=torch.bool)
    for k in range(n):
        y0, x0 = int(torch.randint(0, h - 8, (1,), generator=g)), int(torch.randint(0, w - 8, (1,), generator=g))
        y1, x1 = y0 + int(torch.randint(4, 12, (1,), generator=g)), x0 + int(torch.randint(4, 14, (1,), generator=g))
        sem[y0:y1, x0:x1] = k % 2
        valid[y0:y1, x0:x1] = True
        uv[0, y0:y1, x0:x1] = (x0 + x1) / w - 1
        uv[1, y0:y1, x0:x1] = (y0 + y1) / h - 1
    logits = 4.0 * torch.nn.functional.one_hot(sem, 5).permute(2, 0, 1).float() + torch.randn(5, h, w, generator=g)
    inst = enc.targets(uv[None], valid[None])[0] + 0.3 * torch.randn(enc.num_channels, h, w, generator=g)
    return logits, inst


@pytest.mark.parametrize("decoder", DECODERS)
def test_panoptic_at_size_in_bands_equals_one_band(decoder):
    enc = build_encoding("pe", num_harmonics=4)
    cfg = PostProcessConfig(decoder=decoder, void_source="semantic", grid=(20, 28))
    for seed in range(2):
        sem, inst = block_scene(seed, enc)
        (seg1, info1), lab1 = panoptic_at_size(sem, inst, (257, 360), enc, (0, 1), cfg)  # one band
        (seg2, info2), lab2 = panoptic_at_size(sem, inst, (257, 360), enc, (0, 1), cfg, chunk_bytes=1 << 20)
        assert band_width(257, 5 + enc.num_channels + 48, 1 << 20) < 360  # several bands
        assert torch.equal(seg1, seg2) and torch.equal(lab1, lab2)
        assert torch.equal(lab1, bilinear(sem, (257, 360)).argmax(0))
        strip = lambda infos: [{k: v for k, v in s.items() if k != "score"} for s in infos]  # noqa: E731
        assert strip(info1) == strip(info2) and sum(s["isthing"] for s in info1) >= 3
        assert [s["score"] for s in info2] == pytest.approx([s["score"] for s in info1], rel=1e-5, abs=1e-6)


def test_semantic_output_option():
    enc = build_encoding("pe", num_harmonics=4)
    sem, inst = block_scene(3, enc)
    outputs = {"sem_logits": sem[None], "inst": inst[None]}
    args = ([(70, 98)], [(90, 120)], enc, (0, 1))
    labels = batch_results(outputs, *args)[0]["sem_seg"]
    probs = batch_results(outputs, *args, semantic="probs")[0]["sem_seg"]
    assert labels.shape == (90, 120) and labels.dtype == torch.long
    assert probs.shape == (5, 90, 120) and torch.allclose(probs.sum(0), torch.ones(90, 120))
    assert torch.equal(labels, probs.argmax(0))
    with pytest.raises(ValueError, match="semantic"):
        batch_results(outputs, *args, semantic="logits")
    # the semantic evaluator reads either form
    from pe_panoptic.evaluation.semseg import semantic_labels

    assert torch.equal(semantic_labels(labels), labels) and torch.equal(semantic_labels(probs), labels)
    with pytest.raises(ValueError, match="class map"):
        semantic_labels(probs[0])


# ------------------------------------------------------------------------------------------
# real COCO fixtures: unchanged results
# ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def coco_outputs(d2_datasets):
    """Oracle outputs (tools/oracle_pq.py) + seeded noise of the 3 COCO val fixtures at the
    paper's 1008 px input (output 576 x 432 for 640 x 480), batched as the model would."""
    from detectron2.data import DatasetCatalog, MetadataCatalog

    from pe_panoptic.data import PanopticCentroidDatasetMapper, PanopticTargets, build_test_augmentations

    spec = importlib.util.spec_from_file_location("oracle_pq", ROOT / "tools" / "oracle_pq.py")
    oracle = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(oracle)
    meta = MetadataCatalog.get("coco_2017_val_panoptic")
    thing_ids = sorted(set(meta.thing_dataset_id_to_contiguous_id.values()))
    enc = build_encoding("pe", num_harmonics=4)
    mapper = PanopticCentroidDatasetMapper(False, augmentations=build_test_augmentations(1008),
                                           panoptic=PanopticTargets(dataset_name="coco_2017_val_panoptic", use_eds=False),
                                           with_targets=True)
    g = torch.Generator().manual_seed(0)
    items = []
    for d in DatasetCatalog.get("coco_2017_val_panoptic"):
        mapped = mapper(copy.deepcopy(d))
        sem, inst = oracle.oracle_outputs(mapped["targets"], enc, len(meta.stuff_classes))
        sem = sem + 2.0 * torch.randn(sem.shape, generator=g)
        inst = inst + 0.3 * torch.randn(inst.shape, generator=g)
        items.append((mapped, sem, inst))
    assert len(items) == 3
    return items, enc, thing_ids


@pytest.mark.parametrize("decode_at", ["output", "image"])
def test_real_coco_results_unchanged(coco_outputs, decode_at):
    old = load_legacy("pe_panoptic/postprocess.py", "pe_panoptic")
    items, enc, thing_ids = coco_outputs
    cfg = PostProcessConfig()  # paper settings: nn decoder, 80 x 80 grid
    n_things = 0
    for mapped, sem, inst in items:
        outputs = {"sem_logits": sem[None], "inst": inst[None]}
        sizes, originals = [mapped["image_size_unpadded"]], [(mapped["height"], mapped["width"])]
        kw = dict(decode_at=decode_at, input_hw=tuple(mapped["image"].shape[-2:]))
        (new,) = batch_results(outputs, sizes, originals, enc, thing_ids, cfg, **kw)
        (ref,) = old.batch_results(outputs, sizes, originals, enc, thing_ids, old.PostProcessConfig(), **kw)
        if decode_at == "image":  # a 640 px wide image is decoded in two column bands
            assert band_width(mapped["height"], 133 + 16 + 160) < mapped["width"]
        assert torch.equal(new["panoptic_seg"][0], ref["panoptic_seg"][0])
        if decode_at == "output":
            assert new["panoptic_seg"][1] == ref["panoptic_seg"][1]  # scores too, bit for bit
        else:  # scores up to the last bit of a few pixels' log-sum-exp (postprocess/fullsize.py)
            strip = lambda infos: [{k: v for k, v in s.items() if k != "score"} for s in infos]  # noqa: E731
            assert strip(new["panoptic_seg"][1]) == strip(ref["panoptic_seg"][1])
            scores = [s["score"] for s in new["panoptic_seg"][1]]
            assert scores == pytest.approx([s["score"] for s in ref["panoptic_seg"][1]], rel=1e-7, abs=0)
        assert torch.equal(new["sem_seg"], ref["sem_seg"].argmax(0))
        n_things += sum(s["isthing"] for s in new["panoptic_seg"][1])
    assert n_things >= 30


# ------------------------------------------------------------------------------------------
# peak memory of a 6000 x 4000 image
# ------------------------------------------------------------------------------------------
from pe_panoptic.studies.benchmark import POSTPROCESS_MEMORY_PROBE as PROBE  # noqa: E402



@pytest.mark.skipif(not pathlib.Path("/proc/self/status").is_file(), reason="needs Linux's /proc/self/status")
@pytest.mark.parametrize("H, W, decode_at, budget, old_need", [
    # labels 8 + running max 4 + mask 1 + nearest paste / depth; the old code held the upsampled
    # logits and their softmax: 2 x 19 x 4 bytes (3.6 GB here; 133 COCO classes: 25 GB)
    (4000, 6000, "output", 32, 2 * 19 * 4),
    # + the per-pixel maps of the merge and decode (max, argmax, lse, thing argmax, cell, distance,
    # instance); the old code also held the upsampled code and its distances to the gh + gw axes
    (2000, 3000, "image", 120, (2 * 19 + 16 + 40 + 40) * 4),
])
def test_peak_memory_of_a_large_image_is_bounded(H, W, decode_at, budget, old_need):
    """Bytes per original pixel above the outputs, 19 classes, PE with L = 4, 40 x 40 grid."""
    res = subprocess.run([sys.executable, "-c", PROBE, str(ROOT), str(H), str(W), decode_at, "19"],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    peak = int(res.stdout.strip().splitlines()[-1])
    print(f"{H}x{W} decode_at={decode_at}: peak +{peak / 2**20:.0f} MiB ({peak / (H * W):.1f} bytes/pixel)")
    assert 8 * H * W < peak < budget * H * W + (64 << 20), f"peak +{peak / 2**20:.0f} MiB"  # 8: the labels
    assert peak < old_need * H * W / 3
