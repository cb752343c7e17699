from setuptools import find_packages, setup

setup(
    name="pe_panoptic",
    version="0.1.0",
    description="Detectron2 plugin: panoptic segmentation by per-pixel regression of positional "
    "embeddings of instance centroids (DINOv2 encoder, shallow decoder, EDS)",
    packages=find_packages(include=["pe_panoptic", "pe_panoptic.*"]),
    python_requires=">=3.10",
    # Dependencies are pinned in requirements.lock and installed by `make venv`
    # (detectron2 by tools/install_detectron2.py, which PyPI metadata cannot express).
    install_requires=[],
)
