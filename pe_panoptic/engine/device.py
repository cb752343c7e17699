"""One resolution of a device name, used by every tool and study.

``"auto"`` (or ``None`` / ``""``) is ``cuda`` when CUDA is available, else ``cpu``; any other name
is checked (``torch.device`` syntax, and a CUDA device only where CUDA is available), so a typo
or a GPU-less machine fails at once with a message naming the option, not deep inside a forward.
"""
from __future__ import annotations

from typing import Optional

import torch

__all__ = ["resolve_device"]


def resolve_device(name: Optional[str] = "auto", option: str = "--device") -> str:
    """The device ``name`` stands for, as a string (``"cuda"``, ``"cpu"``, ``"cuda:1"``, ...).

    Args:
        name: ``"auto"`` / ``None`` / ``""`` or a ``torch.device`` name (a ``torch.device`` too).
        option: how the caller's user set it (``--device``, ``train.device``), for the messages.
    """
    if name is None or (isinstance(name, str) and name.strip() in ("", "auto")):
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(name)
    except (RuntimeError, TypeError) as e:
        raise ValueError(f"{option} {name!r} is not a device name (auto, cpu, cuda, cuda:1, ...): {e}") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"{option} {name!r}: CUDA is not available on this machine (use auto or cpu)")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"{option} {name!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return str(dev)
