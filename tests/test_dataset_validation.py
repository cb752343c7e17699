"""pe_panoptic.data.validation: broken dataset JSONs are reported naming the file and the entry
(instead of detectron2's bare AssertionError / KeyError / "No images found"), paths that leave the
dataset folder are refused, a missing Cityscapes download is named as such; the checks run in
front of detectron2's builtin COCO / Cityscapes panoptic loaders and the synthetic datasets.

The broken datasets are JSON files in tmp_path whose images / PNGs are symbolic links to the
real fixtures (nothing is copied)."""
import json
import os

import pytest

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets.coco_panoptic import load_coco_panoptic_json, register_coco_panoptic
from pe_panoptic.data.validation import (
    ALLOW_OUTSIDE_ROOT_ENV,
    DatasetError,
    install_validation,
    validate_cityscapes_panoptic,
    validate_coco_panoptic,
)

COCO = "coco_2017_val_panoptic"


@pytest.fixture
def coco_copy(d2_datasets, tmp_path):
    """A COCO panoptic dataset in tmp_path (JSON copy, images / PNGs linked to the fixtures) and
    a function writing a modified JSON."""
    src = d2_datasets / "coco"
    root = tmp_path / "coco"
    (root / "images").mkdir(parents=True)
    (root / "panoptic").mkdir()
    for f in (src / "val2017").iterdir():
        os.symlink(f, root / "images" / f.name)
    for f in (src / "panoptic_val2017").iterdir():
        os.symlink(f, root / "panoptic" / f.name)
    data = json.loads((src / "annotations" / "panoptic_val2017.json").read_text())

    def write(change=lambda d: None):
        d = json.loads(json.dumps(data))
        change(d)
        path = root / "panoptic.json"
        path.write_text(json.dumps(d))
        return str(path), str(root / "images"), str(root / "panoptic")

    return write


def meta():
    return MetadataCatalog.get(COCO).as_dict()


def test_builtin_datasets_load_exactly_as_detectron2_loads_them(d2_datasets):
    m = MetadataCatalog.get(COCO)
    assert DatasetCatalog.get(COCO) == load_coco_panoptic_json(m.panoptic_json, m.image_root, m.panoptic_root, meta())
    city = DatasetCatalog.get("cityscapes_fine_panoptic_val")
    assert [d["image_id"] for d in city] == ["frankfurt_000000_000294"]


def test_missing_panoptic_png_is_named_with_its_annotation(coco_copy):
    json_file, images, pngs = coco_copy(lambda d: d["annotations"][0].update(file_name="gone.png"))
    with pytest.raises(AssertionError):  # what detectron2 alone says: the path, nothing else
        load_coco_panoptic_json(json_file, images, pngs, meta())
    with pytest.raises(DatasetError) as e:
        validate_coco_panoptic(json_file, images, pngs, meta())
    msg = str(e.value)
    assert msg.startswith(f"{json_file}: 2 problems")
    assert "annotation 0 (image_id 142238, file_name 'gone.png'): panoptic PNG" in msg
    assert f"{os.path.join(pngs, 'gone.png')} does not exist" in msg
    assert f"image {os.path.join(images, 'gone.jpg')} does not exist" in msg


def test_unknown_category_is_named(coco_copy):
    json_file, images, pngs = coco_copy(lambda d: d["annotations"][2]["segments_info"][1].update(category_id=9999))
    with pytest.raises(KeyError):  # detectron2 alone: KeyError: 9999
        load_coco_panoptic_json(json_file, images, pngs, meta())
    with pytest.raises(DatasetError, match=r"annotation 2 \(image_id \d+, file_name '\d+\.png'\): segment 1 "
                                           r"\(id \d+\) has category_id 9999, which is not a category"):
        validate_coco_panoptic(json_file, images, pngs, meta())


def test_empty_annotations_is_not_called_no_images(coco_copy):
    json_file, images, pngs = coco_copy(lambda d: d.update(annotations=[]))
    with pytest.raises(DatasetError, match=r"'annotations' is empty, although 'images' lists 3 images"):
        validate_coco_panoptic(json_file, images, pngs, meta())
    json_file, images, pngs = coco_copy(lambda d: d.update(annotations={"a": 1}))
    with pytest.raises(DatasetError, match="not a COCO panoptic JSON"):
        validate_coco_panoptic(json_file, images, pngs, meta())
    json_file, images, pngs = coco_copy(lambda d: d["annotations"][1].pop("segments_info"))
    with pytest.raises(DatasetError, match=r"annotation 1 .*: missing segments_info"):
        validate_coco_panoptic(json_file, images, pngs, meta())


def test_paths_outside_the_dataset_folder_are_refused_unless_allowed(coco_copy, d2_datasets, tmp_path, monkeypatch):
    outside = tmp_path / "outside"
    outside.mkdir()
    os.symlink(d2_datasets / "coco" / "panoptic_val2017" / "000000142238.png", outside / "x.png")
    os.symlink(d2_datasets / "coco" / "val2017" / "000000142238.jpg", outside / "x.jpg")
    json_file, images, pngs = coco_copy(lambda d: d["annotations"][0].update(file_name="../../outside/x.png"))
    assert load_coco_panoptic_json(json_file, images, pngs, meta())  # detectron2 alone reads it
    monkeypatch.delenv(ALLOW_OUTSIDE_ROOT_ENV, raising=False)
    with pytest.raises(DatasetError) as e:
        validate_coco_panoptic(json_file, images, pngs, meta())
    assert "panoptic PNG" in str(e.value) and f"is outside the dataset folder {pngs}" in str(e.value)
    assert f"is outside the dataset folder {images}" in str(e.value) and ALLOW_OUTSIDE_ROOT_ENV in str(e.value)
    # absolute paths leave the folder too
    json_abs = coco_copy(lambda d: d["annotations"][0].update(file_name=str(outside / "x.png")))[0]
    with pytest.raises(DatasetError, match="outside the dataset folder"):
        validate_coco_panoptic(json_abs, images, pngs, meta())
    validate_coco_panoptic(json_file, images, pngs, meta(), allow_outside_root=True)
    monkeypatch.setenv(ALLOW_OUTSIDE_ROOT_ENV, "1")
    validate_coco_panoptic(json_file, images, pngs, meta())


def test_registered_datasets_are_checked_when_loaded(coco_copy, tmp_path):
    """A COCO-format dataset registered with detectron2's own register_coco_panoptic, wrapped by
    install_validation, and a synthetic dataset (pe_panoptic's own registration)."""
    json_file, images, pngs = coco_copy(lambda d: d["annotations"][1]["segments_info"][0].update(category_id=9999))
    name = "validation_test_coco_copy"
    categories = {k: v for k, v in meta().items() if "classes" in k or "colors" in k or "contiguous" in k}
    install_validation()  # datasets that other packages registered since import (e.g. mask2former's)
    register_coco_panoptic(name, categories, images, pngs, json_file)
    try:
        assert install_validation() == [name]
        assert install_validation([name]) == []  # wrapped once
        with pytest.raises(DatasetError, match=f"{json_file}: 1 problem:\n  annotation 1 .*category_id 9999"):
            DatasetCatalog.get(name)
    finally:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)

    from pe_panoptic.data.synthetic import generate_synthetic_panoptic, register_synthetic_panoptic

    root = tmp_path / "synthetic"
    generate_synthetic_panoptic(str(root), seed=0, num_train=2, num_val=1, image_size=(56, 56))
    ann = root / "annotations" / "panoptic_val.json"
    data = json.loads(ann.read_text())
    data["annotations"][0]["file_name"] = "../../../elsewhere.png"
    ann.write_text(json.dumps(data))
    register_synthetic_panoptic("validation_test_synthetic_val", str(root), "val")
    try:
        with pytest.raises(DatasetError, match=r"annotation 0 \(image_id 1, file_name '../../../elsewhere.png'\): "
                                               r"panoptic PNG .* is outside the dataset folder"):
            DatasetCatalog.get("validation_test_synthetic_val")
    finally:
        DatasetCatalog.remove("validation_test_synthetic_val")
        MetadataCatalog.remove("validation_test_synthetic_val")


@pytest.fixture
def cityscapes_copy(d2_datasets, tmp_path):
    src = d2_datasets / "cityscapes"
    root = tmp_path / "cityscapes"
    for rel in ("leftImg8bit/val/frankfurt", "gtFine/val/frankfurt", "gtFine/cityscapes_panoptic_val"):
        (root / rel).mkdir(parents=True)
        for f in (src / rel).iterdir():
            os.symlink(f, root / rel / f.name)
    os.symlink(src / "gtFine" / "cityscapes_panoptic_val.json", root / "gtFine" / "cityscapes_panoptic_val.json")
    return root


def city_args(root):
    return (str(root / "leftImg8bit" / "val"), str(root / "gtFine" / "cityscapes_panoptic_val"),
            str(root / "gtFine" / "cityscapes_panoptic_val.json"), MetadataCatalog.get("cityscapes_fine_panoptic_val"))


def test_cityscapes_missing_download_and_missing_generated_files(cityscapes_copy, tmp_path):
    image_dir, gt_dir, gt_json, m = city_args(cityscapes_copy)
    validate_cityscapes_panoptic(image_dir, gt_dir, gt_json, m)  # the fixture is fine
    nowhere = tmp_path / "nowhere" / "cityscapes"
    with pytest.raises(FileNotFoundError, match=f"Cityscapes images not found: {nowhere}/leftImg8bit/val does not"):
        validate_cityscapes_panoptic(*city_args(nowhere))
    os.remove(gt_json)  # downloaded, but the panoptic ground truth was not generated
    with pytest.raises(FileNotFoundError, match=f"{gt_json} not found: create the panoptic ground truth .*"
                                                "csCreatePanopticImgs"):
        validate_cityscapes_panoptic(image_dir, gt_dir, gt_json, m)


def test_cityscapes_entries_are_checked(cityscapes_copy, d2_datasets):
    image_dir, gt_dir, gt_json, m = city_args(cityscapes_copy)
    data = json.loads((d2_datasets / "cityscapes" / "gtFine" / "cityscapes_panoptic_val.json").read_text())
    data["annotations"][0]["segments_info"][0]["category_id"] = 9999
    data["annotations"].append(dict(data["annotations"][0], image_id="berlin_000000_000001",
                                    file_name="../../elsewhere.png", segments_info=[]))
    os.remove(gt_json)
    with open(gt_json, "w") as f:
        json.dump(data, f)
    os.remove(os.path.join(cityscapes_copy, "gtFine/val/frankfurt/frankfurt_000000_000294_gtFine_labelTrainIds.png"))
    with pytest.raises(DatasetError) as e:
        validate_cityscapes_panoptic(image_dir, gt_dir, gt_json, m)
    msg = str(e.value)
    assert msg.startswith(f"{gt_json}: 4 problems")
    assert ("annotation 0 (image_id 'frankfurt_000000_000294', file_name "
            "'frankfurt_000000_000294_gtFine_panoptic.png'): segment 0 (id 7) has category_id 9999") in msg
    assert "labelTrainIds.png do not exist (create them with csCreateTrainIdLabelImgs" in msg
    assert "annotation 1 (image_id 'berlin_000000_000001', file_name '../../elsewhere.png'): panoptic PNG" in msg
    assert "is outside the dataset folder" in msg
    assert f"no image berlin_000000_000001_leftImg8bit.png in the city folders of {image_dir}" in msg
