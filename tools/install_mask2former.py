#!/usr/bin/env python
"""Install Mask2Former's Python code from the ``maskformer2==0.1`` sdist, reproducibly, without C++.

Why a script and not ``pip install maskformer2``: upstream Mask2Former
(https://github.com/facebookresearch/Mask2Former) is not on PyPI. ``maskformer2==0.1`` carries its
``mask2former/`` and ``mask2former_video/`` packages, but (a) its ``setup.py`` depends on
detectron2 / panopticapi / lvis by URL and on old hydra / omegaconf pins, (b) it would try to
compile the ``MultiScaleDeformableAttention`` CUDA op whenever CUDA is visible although it ships
no op sources, and (c) one of its edits breaks upstream's own model building. This script

1. fetches the sdist with pip (or takes a local copy with ``--sdist``) and checks its sha256,
2. applies a fixed list of minimal source edits, each naming the upstream commit it mirrors or
   its reason (every edit must match exactly the expected number of times, else we stop),
3. builds no C++/CUDA extension: ``MSDeformAttn`` then runs the pure-PyTorch
   ``ms_deform_attn_core_pytorch`` (upstream 16c3bee, "support inference on CPU", which the sdist
   already contains); with a GPU and a CUDA toolkit the op can be built separately (docs/install.md),
4. ``pip install --no-deps --no-build-isolation`` the patched tree into the current interpreter
   (torch and detectron2 must already be installed: ``tools/install_detectron2.py``).

Users with full internet can instead use an upstream checkout on ``PYTHONPATH`` (see docs/install.md);
this script then does nothing.
"""
import os
import subprocess
import sys

import sdist_install  # tools/sdist_install.py (the running script's directory is on sys.path)
from sdist_install import Sdist

SDIST_NAME = "maskformer2-0.1.tar.gz"
SDIST_SHA256 = "d934e3378e86cc326129eeda18ca1097cf32d9c248dc8e957a14899d9241602a"
#: the upstream commit whose files the edits restore / compare with
UPSTREAM = "facebookresearch/Mask2Former@9b0651c"
#: sha256 of upstream's mask2former/modeling/criterion.py at that commit: after patching, the
#: installed file must be byte-identical to it
UPSTREAM_CRITERION_SHA256 = "b80c583c1dcfc63f9fbdaea3d0509a7908d161fc348aefdbf6746ffff53a88da"

# (relative path, literal, replacement, expected count, upstream commit / reason)
PATCHES = [
    # --- packaging -------------------------------------------------------------------------
    ("setup.py", "    ext_modules=get_extensions(),\n", "    ext_modules=[],\n", 1,
     "packaging only: the sdist has no ops/src, so building the op whenever CUDA is visible fails; "
     "the op is built from upstream's ops/ folder instead (docs/install.md)"),
    # --- the sdist's SetCriterion does not match its own MaskFormer.from_config --------------
    ("mask2former/modeling/criterion.py",
     "    def __init__(self, num_classes, matcher, class_weight, mask_weight, dice_weight, num_layers, "
     "eos_coef, losses,\n",
     "    def __init__(self, num_classes, matcher, weight_dict, eos_coef, losses,\n", 1,
     f"{UPSTREAM} criterion.py: MaskFormer.from_config passes weight_dict= (TypeError otherwise)"),
    ("mask2former/modeling/criterion.py",
     "        self.matcher = matcher\n"
     "\n"
     '        weight_dict = {"loss_ce": class_weight, "loss_mask": mask_weight, "loss_dice": dice_weight}\n'
     "        aux_weight_dict = {}\n"
     "        for i in range(num_layers):\n"
     '            aux_weight_dict.update({k + f"_{i}": v for k, v in weight_dict.items()})\n'
     "        weight_dict.update(aux_weight_dict)\n"
     "        self.weight_dict = weight_dict\n"
     "\n"
     "        self.eos_coef = eos_coef\n",
     "        self.matcher = matcher\n"
     "        self.weight_dict = weight_dict\n"
     "        self.eos_coef = eos_coef\n", 1,
     f"{UPSTREAM} criterion.py (the weight dict is built by MaskFormer.from_config)"),
    # --- numpy >= 1.24: deprecated aliases (video evaluation only) ----------------------------
    ("mask2former_video/data_video/datasets/ytvis_api/ytvoseval.py", ".astype(dtype=np.float)",
     ".astype(dtype=np.float64)", 2,
     "np.float removed in numpy 1.24 (not fixed upstream; the fix of detectron2 54dd614e)"),
]


SDIST = Sdist(requirement="maskformer2==0.1", file_name=SDIST_NAME, sha256=SDIST_SHA256, src_dir="maskformer2-0.1",
              egg_info="maskformer2.egg-info", tool="install_mask2former", what="Mask2Former")
log = SDIST.log


def fetch_sdist(dest_dir, sdist=None):
    """The hash-checked sdist (:meth:`sdist_install.Sdist.fetch`)."""
    return SDIST.fetch(dest_dir, sdist)


def apply_patches(src_root):
    SDIST.apply(src_root, PATCHES)
    crit = os.path.join(src_root, "mask2former", "modeling", "criterion.py")
    if sdist_install.sha256_of(crit) != UPSTREAM_CRITERION_SHA256:
        raise SDIST.fail(f"{crit}: after patching it differs from {UPSTREAM}'s criterion.py")
    with open(os.path.join(src_root, "mask2former", "_pe_panoptic_patches.py"), "w") as f:
        f.write(f'"""Written by pe_panoptic\'s tools/install_mask2former.py."""\nPATCH_ID = "{patch_id()}"\n')


def patch_id():
    """Identifies the patch set: an install made with other patches is redone."""
    return sdist_install.patch_id(PATCHES)


# An upstream checkout (no __version__) is accepted as it is; the sdist's code must carry this
# script's current patch set. Either way SetCriterion must take upstream's weight_dict.
_PROBE = f"""
import inspect, mask2former
from mask2former.modeling.criterion import SetCriterion
if hasattr(mask2former, "__version__"):
    import mask2former._pe_panoptic_patches as p
    assert p.PATCH_ID == "{patch_id()}", "stale patch set"
assert "weight_dict" in inspect.signature(SetCriterion.__init__).parameters, "sdist SetCriterion"
print(getattr(mask2former, "__version__", "upstream checkout"), mask2former.__file__)
"""


def installed_ok():
    """The installed mask2former's version and path if it is usable (see ``_PROBE``), else None."""
    try:
        out = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, check=True)
        return out.stdout.strip().splitlines()[-1]
    except subprocess.CalledProcessError:
        return None


def get_parser():
    return sdist_install.parser(__doc__, SDIST_NAME)


def main():
    args = get_parser().parse_args()
    SDIST.install(args, apply_patches, installed_ok, note="no C++/CUDA op")


if __name__ == "__main__":
    main()
