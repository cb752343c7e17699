"""Exception shared by the dataset readers (panoptic mapper, depth labels, NYUv2 loader)."""

__all__ = ["InvalidSampleError"]


class InvalidSampleError(ValueError):
    """A dataset sample is unusable (corrupt / inconsistent files); the message names the file."""
