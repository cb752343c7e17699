"""Checks of a panoptic dataset's files when the dataset is loaded, before detectron2 reads it.

detectron2's loaders stop at the first problem with a bare error: ``AssertionError: <path>`` for
a missing panoptic PNG (and only the *first* annotation's files are checked at all),
``KeyError: 9999`` for an unknown category, "No images found" for an empty ``annotations`` list,
and "run createPanopticImgs.py" when the whole Cityscapes folder is missing. Here every
annotation is checked and all problems are reported together, each naming the JSON file and the
entry (annotation index, ``image_id``, ``file_name``, segment):

* the JSON exists, parses, and has a non-empty ``annotations`` list;
* every ``image_id`` appears once (a duplicate would be scored twice against one prediction);
  a split whose segments are all crowd is loaded with a warning (PQ undefined, reported as NaN);
* every annotation has ``file_name``, ``image_id`` and ``segments_info``; every segment an ``id``
  and a ``category_id`` that the dataset's metadata knows;
* the panoptic PNG and the image of every annotation exist (one directory listing per folder);
* **no path leaves its dataset folder**: a ``file_name`` such as ``../../outside/x.png`` or an
  absolute path is refused unless ``PE_PANOPTIC_ALLOW_OUTSIDE_ROOT=1`` (or
  ``allow_outside_root=True``). The check is on the path as written (normalized), so datasets
  whose folders are symbolic links elsewhere keep working.

:func:`install_validation` (run when :mod:`pe_panoptic.data` is imported) puts these checks in
front of the loaders of detectron2's builtin COCO panoptic (``coco_2017_*_panoptic``, standard
format) and Cityscapes panoptic (``cityscapes_fine_panoptic_*``) datasets; the synthetic
datasets call :func:`validate_coco_panoptic` themselves. Datasets registered later can call the
validators in their own loader or :func:`install_validation` with their names.
"""
from __future__ import annotations

import json
import logging
import os
from typing import Callable, Dict, Iterable, List, Mapping, Optional, Set

__all__ = [
    "ALLOW_OUTSIDE_ROOT_ENV",
    "DatasetError",
    "validate_coco_panoptic",
    "validate_cityscapes_panoptic",
    "install_validation",
    "mark_validated",
]

ALLOW_OUTSIDE_ROOT_ENV = "PE_PANOPTIC_ALLOW_OUTSIDE_ROOT"
_MAX_LISTED = 10  # problems listed in one error message
_VALIDATED: Set[str] = set()  # dataset names whose loader already validates


class DatasetError(ValueError):
    """A dataset's annotation files are unusable; the message names the file and the entries."""


def _allow_outside(allow_outside_root: Optional[bool]) -> bool:
    if allow_outside_root is not None:
        return bool(allow_outside_root)
    return os.environ.get(ALLOW_OUTSIDE_ROOT_ENV, "").strip().lower() in ("1", "true", "yes")


def _datasets_hint() -> str:
    return (f"DETECTRON2_DATASETS={os.environ.get('DETECTRON2_DATASETS', '(unset: ./datasets)')}; "
            "see datasets/README.md")


def _inside(root: str, relative: str) -> bool:
    """Whether ``root/relative`` stays inside ``root`` (lexically, after normalization)."""
    root_n = os.path.normpath(os.path.abspath(root))
    path = os.path.normpath(os.path.abspath(os.path.join(root, relative)))
    return path == root_n or path.startswith(root_n + os.sep)


class _Listing:
    """``exists(path)`` from one cached ``os.listdir`` per folder (fast for 100k files)."""

    def __init__(self):
        self._dirs: Dict[str, Set[str]] = {}

    def exists(self, path: str) -> bool:
        folder, name = os.path.split(os.path.normpath(path))
        if folder not in self._dirs:
            try:
                self._dirs[folder] = set(os.listdir(folder))
            except OSError:
                self._dirs[folder] = set()
        return name in self._dirs[folder]


class _Problems:
    def __init__(self, source: str):
        self.source = source
        self.items: List[str] = []

    def add(self, where: str, what: str) -> None:
        self.items.append(f"{where}: {what}")

    def raise_if_any(self) -> None:
        if not self.items:
            return
        shown = self.items[:_MAX_LISTED]
        more = f"\n  ... and {len(self.items) - _MAX_LISTED} more" if len(self.items) > _MAX_LISTED else ""
        raise DatasetError(f"{self.source}: {len(self.items)} problem{'s' if len(self.items) > 1 else ''}:\n  "
                           + "\n  ".join(shown) + more)


def _read_json(json_file: str, what: str) -> dict:
    if not os.path.isfile(json_file):
        raise FileNotFoundError(f"{what} {json_file} not found ({_datasets_hint()})")
    try:
        with open(json_file) as f:
            data = json.load(f)
    except (OSError, ValueError) as e:
        raise DatasetError(f"{json_file}: cannot read it as JSON: {e}") from e
    if not isinstance(data, dict) or not isinstance(data.get("annotations"), list):
        raise DatasetError(f"{json_file}: not a COCO panoptic JSON (needs an 'annotations' list; "
                           f"top-level keys: {sorted(data)[:10] if isinstance(data, dict) else type(data).__name__})")
    if not data["annotations"]:
        images = data.get("images") or []
        why = (f", although 'images' lists {len(images)} images: the panoptic annotations are missing "
               "(an instances JSON, or a filtered file?)") if images else " (and so is 'images')"
        raise DatasetError(f"{json_file}: 'annotations' is empty{why}")
    return data


def _known_categories(meta, data: dict, json_file: str) -> Set[int]:
    """Category ids of ``meta`` (a dict or detectron2 ``Metadata``), else of the JSON."""
    if hasattr(meta, "as_dict"):
        meta = meta.as_dict()
    maps = ("thing_dataset_id_to_contiguous_id", "stuff_dataset_id_to_contiguous_id")
    if meta is not None and any(k in meta for k in maps):
        return set().union(*(meta.get(k, {}) for k in maps))
    cats = data.get("categories")
    if not isinstance(cats, list):
        raise DatasetError(f"{json_file}: no 'categories' list and no dataset metadata to check category ids against")
    return {c["id"] for c in cats if isinstance(c, dict) and "id" in c}


def _check_annotation(ann, i: int, problems: _Problems, known: Set[int]) -> Optional[str]:
    """Field and segment checks of one annotation; returns its ``file_name`` if usable."""
    if not isinstance(ann, dict):
        problems.add(f"annotation {i}", f"not an object but {type(ann).__name__}")
        return None
    where = f"annotation {i} (image_id {ann.get('image_id')!r}, file_name {ann.get('file_name')!r})"
    missing = [k for k in ("file_name", "image_id", "segments_info") if k not in ann]
    if missing:
        problems.add(where, f"missing {', '.join(missing)}")
        return None
    segs = ann["segments_info"]
    if not isinstance(segs, list):
        problems.add(where, f"segments_info is a {type(segs).__name__}, not a list")
    else:
        for j, s in enumerate(segs):
            if not isinstance(s, dict) or "id" not in s or "category_id" not in s:
                problems.add(where, f"segment {j} needs 'id' and 'category_id' (got {s!r:.80})")
            elif s["category_id"] not in known:
                problems.add(where, f"segment {j} (id {s['id']}) has category_id {s['category_id']!r}, which is "
                             f"not a category of the dataset (known ids: {_ids(known)})")
    name = ann["file_name"]
    if not isinstance(name, str) or not name:
        problems.add(where, f"file_name must be a non-empty string, got {name!r}")
        return None
    return name


def _check_split(data: dict, json_file: str, problems: "_Problems", label: str) -> None:
    """Whole-file checks: every ``image_id`` once (panopticapi scores annotations that share an
    id against the same prediction, which changes PQ silently); a warning when no segment is
    a non-crowd one (PQ is then undefined and reported as NaN)."""
    seen: Dict = {}
    for i, ann in enumerate(data["annotations"]):
        if not isinstance(ann, dict) or "image_id" not in ann:
            continue
        iid = ann["image_id"]
        try:
            first = seen.setdefault(iid, i)
        except TypeError:  # unhashable id: reported by the field checks
            continue
        if first != i:
            problems.add(f"annotation {i} (image_id {iid!r}, file_name {ann.get('file_name')!r})",
                         f"duplicate image_id {iid!r} (annotation {first} has it too)")
    segs = [s for a in data["annotations"] if isinstance(a, dict) and isinstance(a.get("segments_info"), list)
            for s in a["segments_info"] if isinstance(s, dict)]
    if segs and all(s.get("iscrowd", 0) for s in segs):
        logging.getLogger(__name__).warning(
            f"{label}{json_file}: every segment is a crowd region (iscrowd=1): PQ is undefined on this split "
            "(the evaluator reports it as NaN)")


def _ids(ids: Iterable) -> str:
    ids = sorted(ids, key=str)
    return ", ".join(map(str, ids[:15])) + (f" ... ({len(ids)} in all)" if len(ids) > 15 else "")


def _check_file(path: str, root: str, relative: str, where: str, what: str, problems: _Problems,
                listing: _Listing, allow_outside: bool) -> None:
    if not allow_outside and not _inside(root, relative):
        problems.add(where, f"{what} {path} is outside the dataset folder {root}; refusing to read it "
                     f"(set {ALLOW_OUTSIDE_ROOT_ENV}=1 to allow paths outside the dataset folders)")
    elif not listing.exists(path):
        problems.add(where, f"{what} {path} does not exist")


# ------------------------------------------------------------------------------------------------
def validate_coco_panoptic(json_file: str, image_dir: str, gt_dir: str, meta: Optional[Mapping] = None, *,
                           allow_outside_root: Optional[bool] = None, dataset: Optional[str] = None) -> None:
    """Check a COCO panoptic dataset as detectron2's ``load_coco_panoptic_json`` will read it:
    image ``image_dir/<file_name stem>.jpg``, panoptic PNG ``gt_dir/<file_name>``, category ids of
    ``meta`` (``thing/stuff_dataset_id_to_contiguous_id``; the JSON's ``categories`` without it).
    Raises ``FileNotFoundError`` (JSON or folder missing) or :class:`DatasetError` listing the
    problems."""
    label = f"dataset {dataset!r}: " if dataset else ""
    for folder, what in ((image_dir, "image folder"), (gt_dir, "panoptic PNG folder")):
        if not os.path.isdir(folder):
            raise FileNotFoundError(f"{label}{what} {folder} not found ({_datasets_hint()})")
    data = _read_json(json_file, f"{label}panoptic JSON")
    known = _known_categories(meta, data, json_file)
    problems, listing, allow = _Problems(json_file), _Listing(), _allow_outside(allow_outside_root)
    _check_split(data, json_file, problems, label)
    for i, ann in enumerate(data["annotations"]):
        name = _check_annotation(ann, i, problems, known)
        if name is None:
            continue
        where = f"annotation {i} (image_id {ann['image_id']!r}, file_name {name!r})"
        image_rel = os.path.splitext(name)[0] + ".jpg"  # detectron2's loader hard-codes .jpg
        _check_file(os.path.join(gt_dir, name), gt_dir, name, where, "panoptic PNG", problems, listing, allow)
        _check_file(os.path.join(image_dir, image_rel), image_dir, image_rel, where, "image", problems, listing, allow)
    problems.raise_if_any()


def validate_cityscapes_panoptic(image_dir: str, gt_dir: str, gt_json: str, meta: Mapping, *,
                                 allow_outside_root: Optional[bool] = None, dataset: Optional[str] = None) -> None:
    """Check a Cityscapes panoptic split as detectron2's ``load_cityscapes_panoptic`` will read
    it: images ``image_dir/<city>/<image_id>_leftImg8bit.png``, panoptic PNGs
    ``gt_dir/<file_name>``, semantic ``gtFine/<split>/<city>/<image_id>_gtFine_labelTrainIds.png``."""
    label = f"dataset {dataset!r}: " if dataset else ""
    gtfine = os.path.dirname(os.path.normpath(gt_json))
    if not os.path.isdir(image_dir):
        raise FileNotFoundError(f"{label}Cityscapes images not found: {image_dir} does not exist (unzip leftImg8bit_"
                                f"trainvaltest.zip into $DETECTRON2_DATASETS/cityscapes; {_datasets_hint()})")
    if not os.path.isdir(gtfine):
        raise FileNotFoundError(f"{label}Cityscapes annotations not found: {gtfine} does not exist (unzip "
                                f"gtFine_trainvaltest.zip into $DETECTRON2_DATASETS/cityscapes; {_datasets_hint()})")
    if not os.path.isfile(gt_json) or not os.path.isdir(gt_dir):
        raise FileNotFoundError(f"{label}{gt_json if not os.path.isfile(gt_json) else gt_dir} not found: create the "
                                f"panoptic ground truth with CITYSCAPES_DATASET={os.path.dirname(gtfine)} "
                                "csCreatePanopticImgs --set-names train val (cityscapesScripts; datasets/README.md)")
    data = _read_json(gt_json, f"{label}Cityscapes panoptic JSON")
    known = _known_categories(meta, data, gt_json)
    problems, listing, allow = _Problems(gt_json), _Listing(), _allow_outside(allow_outside_root)
    _check_split(data, gt_json, problems, label)
    images = _cityscapes_images(image_dir, problems)
    split = os.path.basename(os.path.normpath(image_dir))
    for i, ann in enumerate(data["annotations"]):
        name = _check_annotation(ann, i, problems, known)
        if name is None:
            continue
        where = f"annotation {i} (image_id {ann['image_id']!r}, file_name {name!r})"
        _check_file(os.path.join(gt_dir, name), gt_dir, name, where, "panoptic PNG", problems, listing, allow)
        image_id = str(ann["image_id"])
        if image_id not in images:
            problems.add(where, f"no image {image_id}_leftImg8bit.png in the city folders of {image_dir}")
            continue
        city = os.path.basename(os.path.dirname(images[image_id]))
        sem = os.path.join(gtfine, split, city, f"{image_id}_gtFine_labelTrainIds.png")
        if not listing.exists(sem):
            problems.add(where, f"semantic labels {sem} do not exist (create them with "
                         "csCreateTrainIdLabelImgs, datasets/README.md)")
    problems.raise_if_any()


def _cityscapes_images(image_dir: str, problems: _Problems) -> Dict[str, str]:
    suffix = "_leftImg8bit.png"
    out = {}
    for city in sorted(os.listdir(image_dir)):
        folder = os.path.join(image_dir, city)
        if not os.path.isdir(folder):
            problems.add(image_dir, f"{city} is not a city folder (detectron2 expects only <city>/ folders here)")
            continue
        for name in sorted(os.listdir(folder)):
            if not name.endswith(suffix):
                problems.add(folder, f"{name} is not a *{suffix} image (detectron2 would stop on it)")
                continue
            out[name[: -len(suffix)]] = os.path.join(folder, name)
    return out


# ------------------------------------------------------------------------------------------------
def mark_validated(name: str) -> None:
    """Record that dataset ``name``'s own loader validates (:func:`install_validation` skips it)."""
    _VALIDATED.add(name)


def _validator(name: str) -> Optional[Callable[[], None]]:
    from detectron2.data import MetadataCatalog

    meta = MetadataCatalog.get(name)
    kind = getattr(meta, "evaluator_type", None)
    fields = ("panoptic_json", "image_root", "panoptic_root")
    if name.endswith("_separated") or not all(hasattr(meta, f) for f in fields):
        return None  # the "separated" COCO variant reads instance JSONs and semantic PNGs instead
    as_dict = meta.as_dict()
    if kind == "coco_panoptic_seg":
        return lambda: validate_coco_panoptic(meta.panoptic_json, meta.image_root, meta.panoptic_root, as_dict,
                                              dataset=name)
    if kind == "cityscapes_panoptic_seg":
        return lambda: validate_cityscapes_panoptic(meta.image_root, meta.panoptic_root, meta.panoptic_json, as_dict,
                                                    dataset=name)
    return None


def install_validation(names: Optional[Iterable[str]] = None) -> List[str]:
    """Put the checks in front of the registered loaders of ``names`` (default: every registered
    COCO-format or Cityscapes panoptic dataset whose loader does not validate itself). Returns
    the names wrapped; each dataset is wrapped once."""
    from detectron2.data import DatasetCatalog

    wrapped = []
    for name in list(DatasetCatalog.list()) if names is None else list(names):
        if name in _VALIDATED:
            continue
        check = _validator(name)
        if check is None:
            continue
        load = DatasetCatalog[name]  # the registered function (DatasetCatalog.get would call it)
        DatasetCatalog.remove(name)
        DatasetCatalog.register(name, _checked(check, load))
        _VALIDATED.add(name)
        wrapped.append(name)
    return wrapped


def _checked(check: Callable[[], None], load: Callable[[], list]) -> Callable[[], list]:
    def loader():
        check()
        return load()

    return loader
