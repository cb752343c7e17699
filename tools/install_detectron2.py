#!/usr/bin/env python
"""Install detectron2 v0.6 from the ``pb1-detectron2==0.6`` sdist, reproducibly, without C++.

Why a script and not ``pip install detectron2``: detectron2 is not on PyPI under its own name.
``pb1-detectron2==0.6`` is a byte-identical copy of upstream v0.6's Python code, but it ships no
C++ sources and predates the upstream fixes for numpy 2 / Pillow 10+. This script

1. fetches the sdist with pip (or takes a local copy with ``--sdist``) and checks its sha256,
2. applies a fixed list of minimal source edits, each one mirroring the upstream commit named
   next to it (every edit must match exactly the expected number of times, else we stop),
3. builds no C++ extension; ops that need ``detectron2._C`` raise a clear error when called,
4. ``pip install --no-deps --no-build-isolation`` the patched tree into the current interpreter.

Users with full internet can instead install detectron2 from its official source
(see docs/install.md); pe_panoptic works with either.
"""
import os
import re
import subprocess
import sys

import sdist_install  # tools/sdist_install.py (the running script's directory is on sys.path)
from sdist_install import Sdist

SDIST_NAME = "pb1-detectron2-0.6.tar.gz"
SDIST_SHA256 = "5d2e9e51e523ec72f6a31cca04b0a515492e9514b773a3d134cedc0677170b29"

_C_MISSING = '''\
"""Stand-in for the C++/CUDA extension ``detectron2._C``, which this install does not build.

Written by pe_panoptic's tools/install_detectron2.py (mirrors upstream 710e7795, "Make
detectron2 usable without building C extensions"). Any use of a compiled op fails loudly.
"""


class _MissingExtension:
    def __getattr__(self, name):
        raise RuntimeError(
            f"detectron2._C.{name} is not available: detectron2 was installed by "
            "pe_panoptic's tools/install_detectron2.py without its C++/CUDA extension. "
            "The op you called (rotated boxes, deformable conv, ROIAlignRotated or the fast "
            "COCO evaluator) needs it: install detectron2 from its official source instead, "
            "or use the pure-Python path (e.g. COCOEvaluator(..., use_fast_impl=False))."
        )


_C = _MissingExtension()
'''

_OPTIONAL_C = (
    "try:\n"
    "    from detectron2 import _C\n"
    "except ImportError:  # C extension optional, mirrors upstream 710e7795\n"
    "    from detectron2._C_missing import _C\n"
)

# (relative path, regex or literal, replacement, expected count, upstream commit / reason)
# Literal strings are used unless the entry is marked as a regex.
PATCHES = [
    # --- packaging -------------------------------------------------------------------
    ("setup.py", "    ext_modules=get_extensions(),\n", "    ext_modules=[],\n", 1,
     "710e7795: C extension optional (the sdist has no csrc/)"),
    ("setup.py",
     'config_paths = glob.glob("configs/**/*.yaml", recursive=True) + glob.glob(\n'
     '        "configs/**/*.py", recursive=True\n'
     "    )",
     'root = path.join(path.dirname(path.realpath(__file__)), "detectron2", "model_zoo")\n'
     '    config_paths = glob.glob("configs/**/*.yaml", root_dir=root, recursive=True) + glob.glob(\n'
     '        "configs/**/*.py", root_dir=root, recursive=True\n'
     "    )",
     1, "packaging only: the sdist keeps model-zoo configs under detectron2/model_zoo/configs"),
    ("setup.py", 'name="pb1-detectron2"', 'name="detectron2"', 1,
     "packaging only: install under detectron2's own distribution name"),
    # --- C extension optional ------------------------------------------------------------
    ("detectron2/layers/rotated_boxes.py", "from detectron2 import _C\n", _OPTIONAL_C, 1, "710e7795"),
    ("detectron2/layers/deform_conv.py", "from detectron2 import _C\n", _OPTIONAL_C, 1, "710e7795"),
    ("detectron2/layers/roi_align_rotated.py", "from detectron2 import _C\n", _OPTIONAL_C, 1, "710e7795"),
    ("detectron2/evaluation/fast_eval_api.py", "from detectron2 import _C\n", _OPTIONAL_C, 1, "710e7795"),
    # --- Pillow >= 10 --------------------------------------------------------------------
    ("detectron2/data/transforms/transform.py", "interp=Image.LINEAR", "interp=Image.BILINEAR", 1,
     "ff53992b: Image.LINEAR was removed in Pillow 10"),
    # --- numpy >= 1.24: deprecated aliases ----------------------------------------------
    ("detectron2/structures/masks.py", "np.bool)", "bool)", 3, "857d5de2: np.bool removed"),
    ("detectron2/utils/visualizer.py", "astype(np.bool)", "astype(bool)", 3, "857d5de2: np.bool removed"),
    ("detectron2/utils/video_visualizer.py", "dtype=np.bool)", "dtype=bool)", 1, "857d5de2"),
    ("detectron2/evaluation/pascal_voc_evaluation.py", ".astype(np.bool)", ".astype(bool)", 2, "857d5de2"),
    ("detectron2/evaluation/sem_seg_evaluation.py", "dtype=np.int)", "dtype=np.int64)", 2,
     "027099d3: np.int removed"),
    ("detectron2/evaluation/sem_seg_evaluation.py", "np.float)", "np.float64)", 5,
     "54dd614e: np.float removed"),
    ("detectron2/data/build.py", "dtype=np.int)", "dtype=np.int64)", 1, "027099d3: np.int removed"),
    ("detectron2/data/build.py", "dtype=np.int\n", "dtype=np.int64\n", 1, "027099d3: np.int removed"),
    ("detectron2/data/datasets/pascal_voc.py", "dtype=np.str)", "dtype=str)", 1, "654570a2: np.str removed"),
    # --- numpy 2: copy=False means "never copy" -------------------------------------------
    ("detectron2/layers/mask_ops.py", "mask = np.array(mask, copy=False)", "mask = np.asarray(mask)", 1,
     "70f45430: np.array(copy=False) raises in numpy 2"),
    # --- Python >= 3.11: random.sample() no longer accepts a set -----------------------------
    ("detectron2/data/common.py", "self._rng.sample(self._fallback_candidates, k=1)[0]",
     "self._rng.sample(sorted(self._fallback_candidates), k=1)[0]", 1,
     "upstream MapDataset retry fix (random.sample on a set raises TypeError on Python 3.11)"),
    # --- matplotlib: colours must stay within [0, 1] ------------------------------------
    ("detectron2/utils/visualizer.py",
     "        modified_color = colorsys.hls_to_rgb(polygon_color[0], modified_lightness, polygon_color[2])\n"
     "        return modified_color\n",
     "        modified_color = colorsys.hls_to_rgb(polygon_color[0], modified_lightness, polygon_color[2])\n"
     "        return tuple(np.clip(modified_color, 0.0, 1.0))\n",
     1, "b8ef0392: 'RGBA values should be within 0-1 range' in draw_text"),
]


SDIST = Sdist(requirement="pb1-detectron2==0.6", file_name=SDIST_NAME, sha256=SDIST_SHA256,
              src_dir="pb1-detectron2-0.6", egg_info="pb1_detectron2.egg-info", tool="install_detectron2", what="detectron2")
log = SDIST.log


def fetch_sdist(dest_dir, sdist=None):
    """The hash-checked sdist (:meth:`sdist_install.Sdist.fetch`)."""
    return SDIST.fetch(dest_dir, sdist)


def apply_patches(src_root):
    SDIST.apply(src_root, PATCHES)
    with open(os.path.join(src_root, "detectron2", "_C_missing.py"), "w") as f:
        f.write(_C_MISSING)
    with open(os.path.join(src_root, "detectron2", "_pe_panoptic_patches.py"), "w") as f:
        f.write(f'"""Written by pe_panoptic\'s tools/install_detectron2.py."""\nPATCH_ID = "{patch_id()}"\n')
    # Sanity: no deprecated numpy alias may remain anywhere in the installed package.
    pattern = re.compile(r"np\.(bool|int|float|str|object)\b(?![_\d])")
    left = []
    for dirpath, _, files in os.walk(os.path.join(src_root, "detectron2")):
        for name in files:
            if name.endswith(".py"):
                p = os.path.join(dirpath, name)
                with open(p) as f:
                    for i, line in enumerate(f, 1):
                        if pattern.search(line) and not line.lstrip().startswith("#"):
                            left.append(f"{os.path.relpath(p, src_root)}:{i}: {line.strip()}")
    if left:
        raise SystemExit("[install_detectron2] deprecated numpy aliases left:\n" + "\n".join(left))


def patch_id():
    """Identifies the patch set: an install made with other patches is redone."""
    return sdist_install.patch_id(PATCHES, _C_MISSING)


def installed_ok():
    """The installed detectron2's version and a model-zoo path if it is usable and carries this
    script's current patch set (or is an official install that builds its C++ extension)."""
    try:
        out = subprocess.run(
            [sys.executable, "-c",
             "import detectron2, detectron2.model_zoo as m\n"
             "try:\n    import detectron2._C\nexcept ImportError:\n"
             f"    import detectron2._pe_panoptic_patches as p; assert p.PATCH_ID == '{patch_id()}', 'stale'\n"
             "print(detectron2.__version__, m.get_config_file('COCO-PanopticSegmentation/"
             "panoptic_fpn_R_50_1x.yaml'))"],
            capture_output=True, text=True, check=True,
        )
        return out.stdout.strip()
    except subprocess.CalledProcessError:
        return None


def get_parser():
    return sdist_install.parser(__doc__, SDIST_NAME)


def main():
    args = get_parser().parse_args()
    SDIST.install(args, apply_patches, installed_ok, note="no C++ extension")


if __name__ == "__main__":
    main()
