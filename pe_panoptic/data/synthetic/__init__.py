"""Built-in synthetic panoptic dataset, written in COCO panoptic format.

A procedural, seed-deterministic stand-in for COCO panoptic that a tiny model can learn on a CPU
in minutes, yet contains what makes panoptic segmentation hard:

* 4 thing classes (``disk``, ``square``, ``triangle``, ``ring``) with a class colour jittered per
  instance plus shading and pixel noise; 2-8 instances per image, sizes log-uniform between
  ~8 px and ~64 px (``size`` = square root of the unoccluded area); same-class instances placed
  touching / overlapping; painted in depth order so an occluded instance keeps only its visible
  pixels; instances whose visible area is tiny become void.
* 3 textured stuff classes (``sky``: smooth clouds, ``grass``: stripes, ``wall``: checker) over
  irregular regions (argmax of low-frequency noise fields); one segment per class per image.
* void regions (panoptic id 0; irregular blobs of grey high-frequency noise, at a random depth so
  they may occlude things) and crowd regions (``iscrowd=1``: several small shapes of one thing
  class lumped into one segment).

On disk (under ``root``, normally ``$DETECTRON2_DATASETS/synthetic_panoptic``)::

    {split}/000000000001.jpg                   RGB image (JPEG: detectron2's COCO panoptic
                                               loader hard-codes the ".jpg" extension)
    panoptic_{split}/000000000001.png          COCO panoptic PNG (id = R + 256 G + 256^2 B,
                                               random segment ids as in COCO, 0 = void)
    panoptic_semseg_{split}/000000000001.png   semantic PNG: contiguous class id, 255 = void
                                               (crowd pixels carry their class, as in the
                                               panoptic->semantic converters for COCO)
    annotations/panoptic_{split}.json          COCO panoptic JSON (images, annotations with
                                               segments_info, categories with isthing/color)
    annotations/instances_{split}.json         COCO instances JSON (RLE masks of the things),
                                               the ``json_file`` of the metadata
    manifest.json                              generation parameters (idempotence)

Categories use non-contiguous dataset ids (things 1-4, stuff 11-13) so that code which confuses
dataset ids with contiguous ids fails here as it would on COCO. Registration mirrors detectron2's
"standard" COCO panoptic registration (``coco_2017_val_panoptic``): one contiguous id space over
all categories in category-list order, dataset dicts from
:func:`detectron2.data.datasets.coco_panoptic.load_coco_panoptic_json`, plus ``sem_seg_root`` /
``sem_seg_file_name`` so that :class:`detectron2.evaluation.SemSegEvaluator` works too.

Modules: :mod:`.catalog` (categories, metadata, paths, variants, detectron2 registration),
:mod:`.drawing` (shape masks and textures), :mod:`.scene` (:class:`SceneConfig`,
:func:`render_scene`), :mod:`.files` (writing the dataset, :func:`generate_synthetic_panoptic`).
Importing the package registers ``synthetic_panoptic{,_small,_dense}_{train,val}``.
"""

# every public name of the former single module stays importable from here
from pe_panoptic.data.synthetic.catalog import (
    GENERATOR_VERSION,
    IGNORE_LABEL,
    LABEL_DIVISOR,
    DENSE_VARIANT,
    SMALL_VARIANT,
    SPLITS,
    SYNTHETIC_CATEGORIES,
    VARIANTS,
    default_synthetic_root,
    load_synthetic_panoptic,
    register_all_synthetic_panoptic,
    register_synthetic_panoptic,
    synthetic_panoptic_metadata,
    synthetic_split_paths,
)
from pe_panoptic.data.synthetic.drawing import (
    Texture,
    blob_mask,
    convex_polygon_mask,
    disk_mask,
    pixel_grid,
    regular_polygon,
    ring_mask,
    shape_extent,
    shape_mask,
    smooth_noise,
    stuff_texture,
    thing_texture,
    void_texture,
    windowed_mask,
)
from pe_panoptic.data.synthetic.files import ForeignFilesError, ensure_synthetic_panoptic, generate_synthetic_panoptic
from pe_panoptic.data.synthetic.scene import SceneConfig, SyntheticSample, paint_labels, render_scene

__all__ = [
    "SYNTHETIC_CATEGORIES",
    "SPLITS",
    "SceneConfig",
    "SyntheticSample",
    "synthetic_panoptic_metadata",
    "default_synthetic_root",
    "synthetic_split_paths",
    "render_scene",
    "generate_synthetic_panoptic",
    "ensure_synthetic_panoptic",
    "ForeignFilesError",
    "load_synthetic_panoptic",
    "register_synthetic_panoptic",
    "register_all_synthetic_panoptic",
]

register_all_synthetic_panoptic()
