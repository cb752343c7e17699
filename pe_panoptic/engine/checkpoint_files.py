"""Checkpoint files on disk: written atomically, checked for truncation, disk-full named.

* :func:`atomic_write` writes a file through a temporary file in the same folder, ``fsync`` and
  ``os.replace``: a process killed (SIGKILL) while writing leaves the old file (or none), never a
  0-byte or half-written one under the final name. A full disk is re-raised as
  :class:`DiskFullError` naming ENOSPC and the file (``torch.save`` reports it as
  "RuntimeError: [enforce fail at inline_container.cc:...] unexpected pos ...").
* :func:`checkpoint_file_problem` says why a ``.pth`` file cannot be a complete checkpoint
  (missing, empty, not a ``torch.save`` archive, truncated), reading only its header and zip
  directory.
* :func:`newest_valid_checkpoint`: the newest complete ``model_*.pth`` of a run folder.
"""
from __future__ import annotations

import errno
import os
import re
import zipfile
from typing import IO, Callable, List, Optional

__all__ = ["DiskFullError", "atomic_write", "checkpoint_file_problem", "newest_valid_checkpoint",
           "is_disk_full"]

_ZIP_MAGIC = b"PK\x03\x04"
_PICKLE_PROTO = b"\x80"
_CHECKPOINT_NAME = re.compile(r"^model_(\d+|final)\.pth$")


class DiskFullError(OSError):
    """No space left on the device (ENOSPC) while writing a file; the message names the file."""


def is_disk_full(e: BaseException) -> bool:
    """Whether ``e`` is how a full disk shows up: ``OSError`` ENOSPC (or EDQUOT), or the
    ``RuntimeError`` of torch's zip writer ("unexpected pos" / "file write failed")."""
    if isinstance(e, OSError):
        return e.errno in (errno.ENOSPC, errno.EDQUOT)
    if isinstance(e, RuntimeError):
        msg = str(e)
        return "inline_container" in msg and ("unexpected pos" in msg or "write failed" in msg)
    return False


def _fsync_dir(folder: str) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: str, write: Callable[[IO[bytes]], None]) -> None:
    """Call ``write(f)`` on a binary file that replaces ``path`` only once it is complete and on
    disk (temporary file next to ``path``, flush, fsync, ``os.replace``, fsync of the folder)."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(folder, f".{os.path.basename(path)}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        try:
            os.remove(tmp)
        except OSError:
            pass
        if is_disk_full(e):
            raise DiskFullError(errno.ENOSPC, f"no space left on device (ENOSPC) while writing {path} "
                                f"({type(e).__name__}: {str(e).splitlines()[0][:200]}); the previous "
                                f"file, if any, is unchanged. Free disk space and --resume.", path) from e
        raise
    _fsync_dir(folder)


def checkpoint_file_problem(path: str) -> Optional[str]:
    """``None`` if ``path`` looks like a complete checkpoint, else why not ("missing", "empty
    (0 bytes)", "truncated ...", "not a torch.save archive ...")."""
    if not os.path.isfile(path):
        return "missing"
    size = os.path.getsize(path)
    if size == 0:
        return "empty (0 bytes)"
    with open(path, "rb") as f:
        head = f.read(4)
    if head.startswith(_PICKLE_PROTO):
        return None  # legacy torch.save / pickle format: no directory to check
    if not head.startswith(_ZIP_MAGIC):
        return f"not a torch.save archive (first bytes {head!r})"
    try:
        with zipfile.ZipFile(path) as z:
            z.infolist()
    except (zipfile.BadZipFile, OSError, EOFError) as e:
        return f"truncated or corrupt ({size} bytes; {e})"
    return None


def _order(name: str):
    n = _CHECKPOINT_NAME.match(name).group(1)
    return (1, 0) if n == "final" else (0, int(n))


def newest_valid_checkpoint(folder: str, problems: Optional[List[str]] = None) -> Optional[str]:
    """Path of the newest complete ``model_final.pth`` / ``model_NNNNNNN.pth`` in ``folder``
    (``model_final`` counts as newest), or ``None``. ``problems`` collects "<file>: <why>" for
    the invalid ones met on the way."""
    if not os.path.isdir(folder):
        return None
    names = sorted((n for n in os.listdir(folder) if _CHECKPOINT_NAME.match(n)), key=_order, reverse=True)
    for name in names:
        path = os.path.join(folder, name)
        why = checkpoint_file_problem(path)
        if why is None:
            return path
        if problems is not None:
            problems.append(f"{path}: {why}")
    return None
