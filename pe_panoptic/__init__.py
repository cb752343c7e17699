"""pe_panoptic: a detectron2 plugin for "A Simple and Generalist Approach for Panoptic Segmentation".

Importing this package registers the backbone, meta-architecture, dataset mappers and the
built-in synthetic datasets into detectron2's registries.
"""
__version__ = "0.1.0"
