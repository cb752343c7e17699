"""Input checks shared by the losses: clear errors naming the function, the argument and the
expected layout."""
import torch

__all__ = ["check_ndim", "check_same_shape", "check_spatial", "pe_channels", "as_bhw"]


def check_ndim(fn: str, name: str, t: torch.Tensor, ndim: int, layout: str) -> None:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{fn}: {name} must be a torch.Tensor {layout}, got {type(t).__name__}")
    if t.dim() != ndim:
        raise ValueError(f"{fn}: {name} must be {layout}, got shape {tuple(t.shape)}")


def check_same_shape(fn: str, name_a: str, a: torch.Tensor, name_b: str, b: torch.Tensor) -> None:
    if a.shape != b.shape:
        raise ValueError(
            f"{fn}: {name_a} {tuple(a.shape)} and {name_b} {tuple(b.shape)} must have the same shape"
        )


def check_spatial(fn: str, name_a: str, a: torch.Tensor, name_b: str, b: torch.Tensor) -> None:
    """``a`` is ``[B, C, H, W]``, ``b`` is ``[B, H, W]``: batch and spatial sizes must agree."""
    if a.shape[0] != b.shape[0] or a.shape[-2:] != b.shape[-2:]:
        raise ValueError(
            f"{fn}: {name_a} {tuple(a.shape)} and {name_b} {tuple(b.shape)} disagree in batch or "
            f"spatial size (expected [B, C, H, W] and [B, H, W])"
        )


def pe_channels(fn: str, pred: torch.Tensor, L: int) -> None:
    if int(L) < 1:
        raise ValueError(f"{fn}: L (number of harmonics) must be >= 1, got {L}")
    if pred.shape[1] != 4 * L:
        raise ValueError(
            f"{fn}: pred must have 4L = {4 * L} channels for L = {L}, got shape {tuple(pred.shape)}"
        )


def as_bhw(fn: str, name: str, t: torch.Tensor) -> torch.Tensor:
    """Depth maps may come as ``[B, H, W]`` or ``[B, 1, H, W]``."""
    if t.dim() == 4 and t.shape[1] == 1:
        return t[:, 0]
    check_ndim(fn, name, t, 3, "[B, H, W] or [B, 1, H, W]")
    return t
