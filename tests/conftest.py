"""Shared pytest fixtures: paths to the real fixtures in ../shared/testdata."""
import os
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
TESTDATA = pathlib.Path(os.environ.get("PE_PANOPTIC_TESTDATA", ROOT.parent / "shared" / "testdata"))
D2_DATASETS = TESTDATA / "detectron2_datasets"
# detectron2 registers its builtin datasets at import time from $DETECTRON2_DATASETS: point it at
# the real fixtures before anything imports detectron2.data.
os.environ["DETECTRON2_DATASETS"] = str(D2_DATASETS)


def require_testdata():
    if not D2_DATASETS.is_dir():
        pytest.skip(f"real testdata not found at {TESTDATA} (set PE_PANOPTIC_TESTDATA)")
    return TESTDATA


@pytest.fixture(scope="session")
def testdata():
    return require_testdata()


@pytest.fixture(scope="session")
def d2_datasets(testdata, tmp_path_factory):
    """DETECTRON2_DATASETS pointing at the real fixtures (detectron2's builtin COCO panoptic and
    Cityscapes panoptic registrations resolve to them)."""
    return D2_DATASETS


def save_untrained_checkpoint(config: str, save_dir, env: dict) -> pathlib.Path:
    """``<save_dir>/model.pth``: the config's freshly initialized model (seed 0), saved by
    detectron2's checkpointer in a subprocess that sees ``env`` (its dataset registrations)."""
    import subprocess
    import sys

    script = (
        "import sys; sys.path.insert(0, %r); import pe_panoptic\n"
        "from detectron2.config import LazyConfig, instantiate\n"
        "from detectron2.checkpoint import DetectionCheckpointer\n"
        "import torch; torch.manual_seed(0)\n"
        "m = instantiate(LazyConfig.load(%r).model)\n"
        "DetectionCheckpointer(m, save_dir=%r).save('model')\n"
    ) % (str(ROOT), config, str(save_dir))
    subprocess.run([sys.executable, "-c", script], env=env, check=True, capture_output=True, timeout=300)
    return pathlib.Path(save_dir) / "model.pth"
