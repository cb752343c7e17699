"""Tests of the built-in synthetic panoptic dataset (pe_panoptic/data/synthetic/)."""
import importlib.util
import itertools
import json
import os
import pathlib
import uuid

import numpy as np
import pytest
import torch
from panopticapi.utils import rgb2id
from PIL import Image
from scipy import ndimage

from conftest import D2_DATASETS, ROOT
from pe_panoptic.data import synthetic as syn

SEED = 3
NUM_TRAIN, NUM_VAL = 2, 12
THING_IDS = {1, 2, 3, 4}
CONTIGUOUS = {1: 0, 2: 1, 3: 2, 4: 3, 11: 4, 12: 5, 13: 6}


@pytest.fixture(scope="module")
def synth_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic") / "synthetic_panoptic"
    manifest = syn.generate_synthetic_panoptic(root, seed=SEED, num_train=NUM_TRAIN,
                                               num_val=NUM_VAL)
    assert manifest["generated"] is True
    return root


def _unique_name(prefix):
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


def _load_split(root, split):
    """(panoptic json, [(annotation, id map, semantic map, image)]) read back from disk."""
    paths = syn.synthetic_split_paths(str(root), split)
    with open(paths["panoptic_json"]) as f:
        js = json.load(f)
    out = []
    for ann in js["annotations"]:
        pan = rgb2id(np.array(Image.open(os.path.join(paths["panoptic_root"], ann["file_name"]))))
        sem = np.array(Image.open(os.path.join(paths["sem_seg_root"], ann["file_name"])))
        jpg = ann["file_name"].replace(".png", ".jpg")
        img = Image.open(os.path.join(paths["image_root"], jpg))
        out.append((ann, pan, sem, img))
    return js, out


def _all_segments(root):
    for split in syn.SPLITS:
        for ann, pan, _, _ in _load_split(root, split)[1]:
            for seg in ann["segments_info"]:
                yield seg, pan


# ---------------------------------------------------------------------------------------------
# pure geometry helpers, hand-computed
# ---------------------------------------------------------------------------------------------
def test_masks_hand_computed():
    grid = syn.pixel_grid(5, 7)
    disk = syn.disk_mask(grid, (3.0, 2.0), 1.0)  # center pixel + its 4 neighbours
    assert disk.sum() == 5 and disk[2, 3] and disk[1, 3] and disk[2, 4] and not disk[1, 4]
    ring = syn.ring_mask(grid, (3.0, 2.0), 1.5, 1.0)  # only the 4 diagonal neighbours (d = 1.41)
    assert ring.sum() == 4 and ring[1, 2] and ring[3, 4] and not ring[2, 3]
    # axis-aligned square [1, 3] x [1, 3] given by increasing polar angle -> 3 x 3 pixels
    square = np.array([[3.0, 1.0], [3.0, 3.0], [1.0, 3.0], [1.0, 1.0]])
    sq = syn.convex_polygon_mask(grid, square)
    assert sq.sum() == 9 and sq[1:4, 1:4].all()
    # regular_polygon: 4 vertices at radius sqrt(2) around (2, 2), angle pi/4 -> same square
    poly = syn.regular_polygon((2.0, 2.0), np.sqrt(2.0), 4, np.pi / 4)
    np.testing.assert_allclose(poly, [[3, 3], [1, 3], [1, 1], [3, 1]], atol=1e-12)
    assert (syn.convex_polygon_mask(grid, poly) == sq).all()
    # a blob without harmonics is a disk
    zeros = np.zeros(3, np.float32)
    assert (syn.blob_mask(grid, (3.0, 2.0), 1.0, zeros, zeros) == disk).all()
    # windowing is exact, also for shapes partly outside the image
    big = syn.pixel_grid(40, 40)
    for name in ("disk", "square", "triangle", "ring"):
        windowed = syn.shape_mask(big, name, (2.0, 30.0), 20, 0.3)
        full = syn.windowed_mask(big, (2.0, 30.0), 1e3,
                                 lambda g: syn.shape_mask(g, name, (2.0, 30.0), 20, 0.3))
        assert (windowed == full).all()
        assert full.any() and not full[:, 25:].any()


@pytest.mark.parametrize("name", ["disk", "square", "triangle", "ring"])
def test_shape_area_is_size_squared(name):
    """``size`` is the square root of the unoccluded area (within 3 % for size 60)."""
    grid = syn.pixel_grid(100, 100)
    mask = syn.shape_mask(grid, name, (50.3, 49.7), 60.0, 0.4)
    assert abs(mask.sum() - 3600) / 3600 < 0.03


# ---------------------------------------------------------------------------------------------
# file format
# ---------------------------------------------------------------------------------------------
def test_categories_and_json_layout(synth_root):
    js, _ = _load_split(synth_root, "val")
    cats = js["categories"]
    assert [c["id"] for c in cats] == [1, 2, 3, 4, 11, 12, 13]
    assert [c["isthing"] for c in cats] == [1, 1, 1, 1, 0, 0, 0]
    assert all(len(c["color"]) == 3 and c["name"] for c in cats)
    assert [im["id"] for im in js["images"]] == list(range(1, NUM_VAL + 1))
    assert [a["image_id"] for a in js["annotations"]] == list(range(1, NUM_VAL + 1))
    assert js["images"][0] == {"id": 1, "file_name": "000000000001.jpg",
                               "height": 168, "width": 168}
    assert set(js["annotations"][0]) == {"image_id", "file_name", "segments_info"}
    assert set(js["annotations"][0]["segments_info"][0]) == {
        "id", "category_id", "iscrowd", "area", "bbox"}


@pytest.mark.parametrize("split", syn.SPLITS)
def test_segments_match_pngs_exactly(synth_root, split):
    js, items = _load_split(synth_root, split)
    assert len(items) == {"train": NUM_TRAIN, "val": NUM_VAL}[split]
    for ann, pan, sem, img in items:
        assert img.size == (168, 168) and img.mode == "RGB" and pan.shape == sem.shape == (168, 168)
        segs = ann["segments_info"]
        ids = [s["id"] for s in segs]
        assert len(set(ids)) == len(ids)
        assert set(np.unique(pan)) - {0} == set(ids)
        expected_sem = np.full(pan.shape, 255, np.uint8)
        for s in segs:
            m = pan == s["id"]
            ys, xs = np.nonzero(m)
            assert s["area"] == m.sum()
            w, h = xs.max() - xs.min() + 1, ys.max() - ys.min() + 1
            assert s["bbox"] == [xs.min(), ys.min(), w, h]
            assert s["iscrowd"] in (0, 1) and (s["iscrowd"] == 0 or s["category_id"] in THING_IDS)
            expected_sem[m] = CONTIGUOUS[s["category_id"]]
        assert (sem == expected_sem).all()
        # stuff: at most one segment per class and image (as in COCO)
        stuff = [s["category_id"] for s in segs if s["category_id"] not in THING_IDS]
        assert len(stuff) == len(set(stuff)) >= 1
    # COCO-style random segment ids, not 1..K
    all_ids = [s["id"] for a, *_ in items for s in a["segments_info"]]
    assert max(all_ids) > 1000


def test_instances_json_matches_panoptic(synth_root):
    from pycocotools.coco import COCO

    paths = syn.synthetic_split_paths(str(synth_root), "val")
    coco = COCO(paths["instances_json"])
    _, items = _load_split(synth_root, "val")
    n_things = 0
    for ann, pan, _, _ in items:
        things = [s for s in ann["segments_info"] if s["category_id"] in THING_IDS]
        n_things += len(things)
        insts = coco.loadAnns(coco.getAnnIds(imgIds=[ann["image_id"]]))
        assert len(insts) == len(things)
        for inst, seg in zip(insts, things):
            assert (inst["category_id"], inst["iscrowd"], inst["area"], inst["bbox"]) == (
                seg["category_id"], seg["iscrowd"], seg["area"], seg["bbox"])
            assert (coco.annToMask(inst).astype(bool) == (pan == seg["id"])).all()
    assert len(coco.getAnnIds()) == n_things > 0


def test_hard_cases_present(synth_root):
    """Touching same-class instances, crowd made of several parts, void, small and large things."""
    touching = crowd_parts = void_px = 0
    sides = []
    for split in syn.SPLITS:
        for ann, pan, _, _ in _load_split(synth_root, split)[1]:
            cat = {s["id"]: s["category_id"] for s in ann["segments_info"]
                   if s["category_id"] in THING_IDS and not s["iscrowd"]}
            for s in ann["segments_info"]:
                if s["iscrowd"]:
                    crowd_parts = max(crowd_parts, ndimage.label(pan == s["id"])[1])
                elif s["category_id"] in THING_IDS:
                    sides.append(max(s["bbox"][2], s["bbox"][3]))
            void_px += int((pan == 0).sum())
            # horizontally / vertically adjacent pixels of two different same-class instances
            for a, b in ((pan[:, :-1], pan[:, 1:]), (pan[:-1, :], pan[1:, :])):
                for x, y in set(zip(a[a != b].tolist(), b[a != b].tolist())):
                    touching += x in cat and y in cat and cat[x] == cat[y]
    assert touching >= 1
    assert crowd_parts >= 2
    assert void_px > 0
    assert min(sides) <= 12 and max(sides) >= 48


def test_manifest_stats_agree_with_files(synth_root):
    with open(synth_root / "manifest.json") as f:
        stats = json.load(f)["stats"]
    segs = [s for s, _ in _all_segments(synth_root)]
    assert sum(st["images"] for st in stats.values()) == NUM_TRAIN + NUM_VAL
    assert sum(st["crowd"] for st in stats.values()) == sum(s["iscrowd"] for s in segs)
    n_stuff = sum(s["category_id"] not in THING_IDS for s in segs)
    assert sum(st["stuff"] for st in stats.values()) == n_stuff


# ---------------------------------------------------------------------------------------------
# determinism and idempotence
# ---------------------------------------------------------------------------------------------
def _tree_bytes(root):
    root = pathlib.Path(root)
    return {str(p.relative_to(root)): p.read_bytes()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_deterministic(synth_root, tmp_path):
    same = syn.generate_synthetic_panoptic(tmp_path / "a", seed=SEED, num_train=NUM_TRAIN,
                                           num_val=NUM_VAL)
    assert same["generated"]
    assert _tree_bytes(tmp_path / "a") == _tree_bytes(synth_root)
    # image i depends only on (seed, split, i): a smaller split reproduces the first images
    syn.generate_synthetic_panoptic(tmp_path / "b", seed=SEED, num_train=1, num_val=3)
    small, full = _tree_bytes(tmp_path / "b"), _tree_bytes(synth_root)
    for sub in ("val", "panoptic_val", "panoptic_semseg_val", "train"):
        files = [k for k in small if k.startswith(sub + os.sep)]
        assert files and all(small[k] == full[k] for k in files)
    # another seed gives other images
    syn.generate_synthetic_panoptic(tmp_path / "c", seed=SEED + 1, num_train=1, num_val=3)
    other = _tree_bytes(tmp_path / "c")
    for k in ("val/000000000001.jpg", "panoptic_val/000000000001.png", "train/000000000001.jpg"):
        assert other[k] != small[k]


def test_idempotent(tmp_path):
    root = tmp_path / "s"
    kw = dict(seed=1, num_train=1, num_val=2, image_size=(56, 70))
    assert syn.generate_synthetic_panoptic(root, **kw)["generated"]
    stamp = {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}
    again = syn.generate_synthetic_panoptic(root, **kw)
    assert again["generated"] is False and again["params"]["num_val"] == 2
    assert {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()} == stamp
    # other parameters: regenerated, stale files removed
    assert syn.generate_synthetic_panoptic(root, **{**kw, "num_val": 1})["generated"]
    assert sorted(os.listdir(root / "panoptic_val")) == ["000000000001.png"]
    assert Image.open(root / "val" / "000000000001.jpg").size == (70, 56)
    # a missing file: regenerated
    os.remove(root / "panoptic_semseg_train" / "000000000001.png")
    assert syn.generate_synthetic_panoptic(root, **{**kw, "num_val": 1})["generated"]
    assert (root / "panoptic_semseg_train" / "000000000001.png").is_file()
    # force
    assert syn.generate_synthetic_panoptic(root, **{**kw, "num_val": 1}, force=True)["generated"]


def test_ensure_uses_detectron2_datasets_layout(tmp_path, monkeypatch):
    made = syn.ensure_synthetic_panoptic(tmp_path, num_train=1, num_val=1, image_size=(42, 42))
    assert made["generated"] and made["root"] == os.path.join(str(tmp_path), "synthetic_panoptic")
    assert (tmp_path / "synthetic_panoptic" / "panoptic_val" / "000000000001.png").is_file()
    monkeypatch.setenv("DETECTRON2_DATASETS", str(tmp_path))
    again = syn.ensure_synthetic_panoptic(num_train=1, num_val=1, image_size=(42, 42))
    assert again["generated"] is False and again["root"] == made["root"]


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="image_size"):
        syn.generate_synthetic_panoptic(tmp_path, image_size=(10, 10))
    with pytest.raises(ValueError, match="image_size"):
        syn.generate_synthetic_panoptic(tmp_path, image_size=(168.5, 168))
    with pytest.raises(ValueError, match="num_val"):
        syn.generate_synthetic_panoptic(tmp_path, num_val=0)
    with pytest.raises(ValueError, match="seed"):
        syn.generate_synthetic_panoptic(tmp_path, seed=-1)
    with pytest.raises(ValueError, match="SceneConfig.min_size"):
        syn.SceneConfig(min_size=0)
    with pytest.raises(ValueError, match="SceneConfig.crowd_prob"):
        syn.SceneConfig(crowd_prob=1.5)
    with pytest.raises(ValueError, match="split"):
        syn.register_synthetic_panoptic(_unique_name("bad"), str(tmp_path), "test")
    assert not any(tmp_path.iterdir())  # nothing written on bad input


# ---------------------------------------------------------------------------------------------
# detectron2 registration: same dicts and metadata as the builtin COCO panoptic
# ---------------------------------------------------------------------------------------------
def test_catalog_matches_builtin_coco_panoptic(synth_root, d2_datasets):
    from detectron2.data import DatasetCatalog, MetadataCatalog

    name = _unique_name("synthetic_test_val")
    syn.register_synthetic_panoptic(name, str(synth_root), "val")
    ours = DatasetCatalog.get(name)
    coco = DatasetCatalog.get("coco_2017_val_panoptic")
    assert len(ours) == NUM_VAL
    assert set(ours[0]) == set(coco[0]) | {"sem_seg_file_name"}
    assert set(ours[0]["segments_info"][0]) == set(coco[0]["segments_info"][0])
    d = ours[0]
    r = str(synth_root)
    assert d["file_name"] == os.path.join(r, "val", "000000000001.jpg")
    assert d["pan_seg_file_name"] == os.path.join(r, "panoptic_val", "000000000001.png")
    assert d["sem_seg_file_name"] == os.path.join(r, "panoptic_semseg_val", "000000000001.png")
    assert d["image_id"] == 1
    # contiguous ids and isthing, mapped from the JSON exactly as for COCO
    js, _ = _load_split(synth_root, "val")
    for dd, ann in zip(ours, js["annotations"]):
        for s, raw in zip(dd["segments_info"], ann["segments_info"]):
            assert s["category_id"] == CONTIGUOUS[raw["category_id"]]
            assert s["isthing"] is (raw["category_id"] in THING_IDS)

    meta, coco_meta = MetadataCatalog.get(name), MetadataCatalog.get("coco_2017_val_panoptic")
    assert set(meta.as_dict()) == set(coco_meta.as_dict()) | {"sem_seg_root"}
    assert meta.thing_dataset_id_to_contiguous_id == {1: 0, 2: 1, 3: 2, 4: 3}
    # all categories, so that SemSegEvaluator can map thing classes too (Mask2Former convention)
    assert meta.stuff_dataset_id_to_contiguous_id == CONTIGUOUS
    names = ["disk", "square", "triangle", "ring", "sky", "grass", "wall"]
    assert meta.thing_classes == meta.stuff_classes == names
    assert len(meta.thing_colors) == len(meta.stuff_colors) == 7
    assert meta.evaluator_type == "coco_panoptic_seg"
    assert (meta.ignore_label, meta.label_divisor) == (255, 1000)
    assert meta.panoptic_json == os.path.join(str(synth_root), "annotations", "panoptic_val.json")
    assert os.path.isfile(meta.json_file) and os.path.isdir(meta.sem_seg_root)
    with pytest.raises(ValueError, match="already registered"):
        syn.register_synthetic_panoptic(name, str(synth_root), "val")


def test_import_registers_default_splits_lazily(d2_datasets):
    import pe_panoptic.data  # noqa: F401
    from detectron2.data import DatasetCatalog, MetadataCatalog

    for folder, split in itertools.product(("synthetic_panoptic", "synthetic_panoptic_small"), ("train", "val")):
        name = f"{folder}_{split}"
        assert name in DatasetCatalog.list()
        meta = MetadataCatalog.get(name)
        expected = os.path.join(str(D2_DATASETS), folder, f"panoptic_{split}")
        assert meta.panoptic_root == expected
        assert not os.path.exists(meta.panoptic_root)  # nothing generated at import
        with pytest.raises(FileNotFoundError, match="prepare_synthetic.py"):
            DatasetCatalog.get(name)


# ---------------------------------------------------------------------------------------------
# detectron2 evaluators on ground truth as prediction
# ---------------------------------------------------------------------------------------------
def _gt_prediction(d, wrong_class=False):
    pan = rgb2id(np.array(Image.open(d["pan_seg_file_name"])))
    segs = [{"id": s["id"], "category_id": s["category_id"], "isthing": s["isthing"]}
            for s in d["segments_info"]]
    if wrong_class:  # relabel the first thing as another thing class
        first = next(s for s in segs if s["isthing"])
        first["category_id"] = (first["category_id"] + 1) % 4
    return {"panoptic_seg": (torch.from_numpy(pan.astype(np.int32)), segs)}


def test_panoptic_evaluator_ground_truth_scores_100(synth_root, tmp_path):
    from detectron2.data import DatasetCatalog
    from detectron2.evaluation import COCOPanopticEvaluator

    name = _unique_name("synthetic_test_pq")
    syn.register_synthetic_panoptic(name, str(synth_root), "val")
    dicts = DatasetCatalog.get(name)
    results = []
    for wrong in (False, True):
        ev = COCOPanopticEvaluator(name, output_dir=str(tmp_path / str(wrong)))
        ev.reset()
        for d in dicts:
            inputs = [{"file_name": d["file_name"], "image_id": d["image_id"]}]
            ev.process(inputs, [_gt_prediction(d, wrong)])
        results.append(ev.evaluate()["panoptic_seg"])
    assert results[0]["PQ"] == pytest.approx(100.0)
    assert results[0]["PQ_th"] == pytest.approx(100.0)
    assert results[0]["PQ_st"] == pytest.approx(100.0)
    assert results[1]["PQ_th"] < 99.0 and results[1]["PQ_st"] == pytest.approx(100.0)


def test_semseg_evaluator_ground_truth_scores_100(synth_root):
    from detectron2.data import DatasetCatalog
    from detectron2.evaluation import SemSegEvaluator

    name = _unique_name("synthetic_test_sem")
    syn.register_synthetic_panoptic(name, str(synth_root), "val")
    ev = SemSegEvaluator(name, distributed=False)
    ev.reset()
    for d in DatasetCatalog.get(name):
        sem = torch.from_numpy(np.array(Image.open(d["sem_seg_file_name"])).astype(np.int64))
        logits = torch.nn.functional.one_hot(sem.clamp(max=6), 7).permute(2, 0, 1).float()
        ev.process([{"file_name": d["file_name"]}], [{"sem_seg": logits}])
    res = ev.evaluate()["sem_seg"]
    assert res["mIoU"] == pytest.approx(100.0) and res["pACC"] == pytest.approx(100.0)


# ---------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------
def test_prepare_script(tmp_path, capsys, monkeypatch):
    path = ROOT / "datasets" / "prepare_synthetic.py"
    spec = importlib.util.spec_from_file_location("prepare_synthetic", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    argv = ["--root", str(tmp_path / "cli"), "--seed", "5", "--num-train", "2", "--num-val", "1",
            "--size", "56", "70"]
    manifest = script.main(argv)
    out = capsys.readouterr().out
    assert manifest["generated"] and manifest["params"]["image_size"] == [56, 70]
    assert "train: 2 images" in out and "val  : 1 images" in out
    assert Image.open(tmp_path / "cli" / "train" / "000000000002.jpg").size == (70, 56)
    script.main(argv)
    assert "up to date" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        script.parse_args(["--size", "1", "2", "3"])

    # --variant small: its own folder next to the default one, 112 px, overridable counts
    env_root = tmp_path / "d2"
    monkeypatch.setenv("DETECTRON2_DATASETS", str(env_root))
    manifest = script.main(["--variant", "small", "--num-train", "2", "--num-val", "1"])
    assert manifest["root"] == str(env_root / "synthetic_panoptic_small")
    assert manifest["params"]["image_size"] == [112, 112] and manifest["params"]["seed"] == 3
    assert Image.open(env_root / "synthetic_panoptic_small" / "val" / "000000000001.jpg").size == (112, 112)


def test_ensure_small_variant(tmp_path):
    m = syn.ensure_synthetic_panoptic(str(tmp_path), variant="small", num_train=1, num_val=1)
    assert m["root"] == str(tmp_path / "synthetic_panoptic_small")
    assert m["params"]["image_size"] == [112, 112] and m["params"]["num_train"] == 1
    with pytest.raises(ValueError, match="variant must be one of"):
        syn.ensure_synthetic_panoptic(str(tmp_path), variant="huge")


def test_dense_variant_has_many_touching_same_class_things(tmp_path, monkeypatch):
    """The dense variant (post-processing measurements): 8-16 things of 8-24 px per image, most of
    them touching a same-class one; the script and ensure_synthetic_panoptic give the same files."""
    m = syn.ensure_synthetic_panoptic(str(tmp_path), variant="dense", num_train=1, num_val=3)
    assert m["root"] == str(tmp_path / "synthetic_panoptic_dense")
    assert m["params"]["scene"]["touch_prob"] == 0.85 and m["params"]["image_size"] == [168, 168]
    val = m["stats"]["val"]
    assert val["images"] == 3 and val["things"] >= 3 * 8 * 0.7  # some may be fully occluded
    assert val["touching_same_class_pairs"] >= val["things"] // 2 and val["crowd"] == 0
    monkeypatch.setenv("DETECTRON2_DATASETS", str(tmp_path / "env"))
    made = _load_prepare_script().main(["--variant", "dense", "--num-train", "1", "--num-val", "3"])
    assert made["root"] == str(tmp_path / "env" / "synthetic_panoptic_dense")
    assert made["params"]["scene"] == m["params"]["scene"] and made["stats"]["val"] == val


def _load_prepare_script():
    spec = importlib.util.spec_from_file_location("prepare_synthetic", ROOT / "datasets" / "prepare_synthetic.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    return script


def test_never_deletes_files_it_did_not_write(tmp_path, capsys):
    """Issue 22 BAD 1: regenerating into a folder holding the user's own files refuses (naming them)
    and deletes nothing; --delete-foreign-files deletes them on purpose."""
    path = ROOT / "datasets" / "prepare_synthetic.py"
    spec = importlib.util.spec_from_file_location("prepare_synthetic", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    root = tmp_path / "mine"
    (root / "train").mkdir(parents=True)
    (root / "val" / "sub").mkdir(parents=True)
    (root / "train" / "holiday.jpg").write_bytes(b"my photo")
    (root / "val" / "sub" / "notes.txt").write_text("keep")
    (root / "annotations").mkdir()
    (root / "annotations" / "panoptic_val.json").write_text('{"info": {"description": "mine"}}')
    argv = ["--root", str(root), "--num-train", "2", "--num-val", "2", "--size", "56"]
    with pytest.raises(SystemExit) as e:
        script.main(argv)
    msg = str(e.value)
    for name in ("holiday.jpg", "sub", "panoptic_val.json", "--delete-foreign-files"):
        assert name in msg
    assert (root / "train" / "holiday.jpg").read_bytes() == b"my photo"
    assert (root / "val" / "sub" / "notes.txt").read_text() == "keep"
    assert not (root / "manifest.json").exists() and not (root / "train" / "000000000001.jpg").exists()

    # an own dataset is replaced (its files recognized), but a user file added later still refuses
    clean = tmp_path / "clean"
    script.main(["--root", str(clean), "--num-train", "2", "--num-val", "1", "--size", "56"])
    (clean / "panoptic_train" / "extra.png").write_bytes(b"x")
    with pytest.raises(syn.ForeignFilesError, match="extra.png"):
        syn.generate_synthetic_panoptic(clean, num_train=1, num_val=1, image_size=(56, 56))
    assert (clean / "train" / "000000000002.jpg").is_file()  # nothing deleted
    os.remove(clean / "panoptic_train" / "extra.png")
    assert syn.generate_synthetic_panoptic(clean, num_train=1, num_val=1, image_size=(56, 56))["generated"]
    assert sorted(os.listdir(clean / "train")) == ["000000000001.jpg"]

    # the explicit flag deletes them
    manifest = script.main(argv + ["--delete-foreign-files"])
    assert manifest["generated"] and not (root / "train" / "holiday.jpg").exists()
    assert sorted(os.listdir(root / "val")) == ["000000000001.jpg", "000000000002.jpg"]
    capsys.readouterr()
