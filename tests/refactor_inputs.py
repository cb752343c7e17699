"""Seeded inputs of the refactor-identity checks (tests/test_refactor_identity.py,
tests/test_postprocess_memory.py) and of the generator of their reference data
(tests/golden/make_refactor_identity_golden.py), plus the helpers that turn outputs into the
arrays stored in ``tests/golden/refactor_identity.npz``.

Changing an input here invalidates that file: the references were computed from exactly these.
"""
import copy
import hashlib
import importlib.util
import itertools
import json
import pathlib

import numpy as np
import torch
import torch.nn.functional as F

from pe_panoptic.encoding import build_encoding, normalize_coords
from pe_panoptic.postprocess import DECODERS, VOID_SOURCES, PostProcessConfig

ROOT = pathlib.Path(__file__).resolve().parents[1]
GOLDEN = ROOT / "tests" / "golden" / "refactor_identity.npz"

N_CLASSES = 7
THINGS = (0, 1, 2)  # 3..6 are stuff

# ------------------------------------------------------------------------------------------
# post-processing
# ------------------------------------------------------------------------------------------
#: every decoder x void_source x decode_at, through batch_results
CASES = list(itertools.product(DECODERS, VOID_SOURCES, ("output", "image")))
#: (seed, kind) of the batches of each case
SEEDS = ((0, "clean"), (1, "noisy"), (2, "noisy"), (3, "random"))
#: the cases run with a memory budget small enough for several column bands
BANDED_CASES = [("nn", "instance"), ("painter", "semantic"), ("vote", "semantic")]
BANDED_SEEDS = (1, 2)
BANDED_ARGS = ([(84, 112), (70, 91)], [(300, 401), (257, 330)])
OTHER_ENCODINGS = ("rgb", "bins")
OTHER_ENCODING_ARGS = ([(84, 112), (84, 100)], [(96, 128), (50, 60)])
LOSS_CASES = [("pe", "affine_invariant"), ("pe", "silog"), ("rgb", "silog"), ("bins", "affine_invariant")]
LOSS_KW = dict(num_classes=5, sem_weight=1.5, tv_weight=0.2, dice_weight=0.7)


def case_config(decoder: str, void_source: str) -> PostProcessConfig:
    return PostProcessConfig(decoder=decoder, void_source=void_source, grid=(24, 32), min_instance_area=2e-3,
                             painter_pre_nms_topk=200, painter_max_instances=40)


def case_sizes(kind: str):
    """``(out_hw, image_sizes, original_sizes)``: input 84 x 112 -> output 48 x 64, the second
    image cropped; the random batches are smaller."""
    if kind == "random":
        return (16, 20), [(28, 35), (21, 30)], [(123, 161), (60, 77)]
    return (48, 64), [(84, 112), (70, 91)], [(123, 161), (60, 77)]


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


def naive_decode_input():
    enc = build_encoding("pe", num_harmonics=3)
    return enc, torch.randn(2, enc.num_channels, 9, 11, generator=torch.Generator().manual_seed(4)), (10, 12)


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


def loss_encoding(name: str):
    return build_encoding(name, num_harmonics=3, num_bins=10)


# ------------------------------------------------------------------------------------------
# synthetic dataset
# ------------------------------------------------------------------------------------------
SYNTHETIC_SEEDS = range(4)
SYNTHETIC_SIZE = (96, 120)
SYNTHETIC_FILES_KW = dict(seed=5, num_train=2, num_val=1, image_size=(64, 80))


def synthetic_scene_kw(seed: int) -> dict:
    return dict(crowd_prob=1.0 if seed % 2 else 0.3, void_prob=1.0 if seed < 2 else 0.6)


# ------------------------------------------------------------------------------------------
# real COCO fixtures
# ------------------------------------------------------------------------------------------
def coco_oracle_outputs():
    """Oracle outputs (tools/oracle_pq.py) + seeded noise of the 3 COCO val fixtures at the
    paper's 1008 px input (output 576 x 432 for 640 x 480), batched as the model would.
    ``$DETECTRON2_DATASETS`` must point at the fixtures (tests/conftest.py sets it)."""
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
    return items, enc, thing_ids


def coco_batch_args(mapped, sem, inst):
    """``(outputs, image_sizes, original_sizes, input_hw)`` of one fixture as a batch of one."""
    outputs = {"sem_logits": sem[None], "inst": inst[None]}
    return outputs, [mapped["image_size_unpadded"]], [(mapped["height"], mapped["width"])], \
        tuple(mapped["image"].shape[-2:])


# ------------------------------------------------------------------------------------------
# what is stored
# ------------------------------------------------------------------------------------------
def checksum(x) -> str:
    """``dtype shape sha256`` of a tensor / array's bytes (C order)."""
    a = x.detach().cpu().contiguous().numpy() if torch.is_tensor(x) else np.ascontiguousarray(x)
    return f"{a.dtype} {tuple(a.shape)} {hashlib.sha256(a.tobytes()).hexdigest()}"


def to_json(obj) -> str:
    """JSON of segments_info-like data; floats round-trip exactly (Python's repr)."""
    def default(v):
        if isinstance(v, np.generic):
            return v.item()
        raise TypeError(f"cannot store {type(v)} in the golden file")

    return json.dumps(obj, default=default)


def result_record(prefix: str, results, store_sem_probs: bool = True) -> dict:
    """Arrays of ``batch_results`` output (old form: ``sem_seg`` is ``[N, H, W]`` probabilities)
    under keys ``prefix:i:field``: the panoptic map, its segments (JSON), the semantic argmax
    (uint8), a checksum of the probabilities and of the depth."""
    out = {}
    for i, r in enumerate(results):
        seg, info = r["panoptic_seg"]
        out[f"{prefix}:{i}:pan"] = seg.numpy()
        out[f"{prefix}:{i}:info"] = np.array(to_json(info))
        probs = r["sem_seg"]
        out[f"{prefix}:{i}:sem_arg"] = probs.argmax(0).numpy().astype(np.uint8)
        if store_sem_probs:
            out[f"{prefix}:{i}:sem_probs"] = np.array(checksum(probs))
        if "depth" in r:
            out[f"{prefix}:{i}:depth"] = np.array(checksum(r["depth"]))
    out[f"{prefix}:n"] = np.array(len(results))
    return out


def load_golden() -> dict:
    """The stored references (tests/golden/refactor_identity.npz) as a dict of arrays."""
    if not GOLDEN.is_file():
        raise FileNotFoundError(f"{GOLDEN} is missing: it is committed with the tests")
    with np.load(GOLDEN) as z:
        return {k: z[k] for k in z.files}


def strip_scores(info):
    return [{k: v for k, v in s.items() if k != "score"} for s in info]


def assert_matches_record(golden: dict, prefix: str, results, score_rel: float = 0.0, score_abs: float = 0.0):
    """``batch_results`` output equals the stored record ``prefix``: the panoptic maps and
    segments (scores exactly, or to ``score_rel`` / ``score_abs``), the semantic argmax (``sem_seg`` as the
    ``[H, W]`` class map, or as probabilities whose checksum must match too) and the depth.
    Returns the number of thing segments."""
    import pytest

    assert len(results) == int(golden[f"{prefix}:n"]), prefix
    n_things = 0
    for i, r in enumerate(results):
        key = f"{prefix}:{i}"
        seg, info = r["panoptic_seg"]
        ref_seg = golden[f"{key}:pan"]
        assert seg.dtype == torch.int32 and np.array_equal(seg.numpy(), ref_seg), f"{key}: panoptic map differs"
        ref_info = json.loads(str(golden[f"{key}:info"]))
        if score_rel or score_abs:
            assert strip_scores(info) == strip_scores(ref_info), key
            assert [s["score"] for s in info] == pytest.approx([s["score"] for s in ref_info], rel=score_rel,
                                                               abs=score_abs), key
        else:
            assert info == ref_info, f"{key}: segments_info differs"  # float scores exactly
        sem = r["sem_seg"]
        if sem.dim() == 2:
            assert sem.dtype == torch.long and np.array_equal(sem.numpy(), golden[f"{key}:sem_arg"]), key
        else:
            assert checksum(sem) == str(golden[f"{key}:sem_probs"]), f"{key}: semantic probabilities differ"
            assert np.array_equal(sem.argmax(0).numpy(), golden[f"{key}:sem_arg"]), key
        if f"{key}:depth" in golden:
            assert checksum(r["depth"]) == str(golden[f"{key}:depth"]), f"{key}: depth differs"
        n_things += sum(s["isthing"] for s in info)
    return n_things
