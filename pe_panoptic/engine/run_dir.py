"""Protecting finished training runs from being replaced by accident.

``tools/train_net.py`` (without ``--resume``) into an ``output_dir`` that already holds a run
would start from iteration 0 and overwrite its checkpoints, ``last_checkpoint`` and
``model_final.pth``, and append to its ``metrics.json``. :func:`check_output_dir` refuses that,
naming the folder and the ways out, unless the caller passes ``overwrite=True`` (the tools'
``--overwrite``); then :func:`clear_run_markers` removes the old run's ``model_final.pth``,
``last_checkpoint`` and ``metrics.json`` first, so that a re-run that crashes cannot pass for the
old finished run or resume from its checkpoints. A ``model_final.pth`` that is empty or
truncated (a run killed while writing it) does not count as finished.

:func:`lock_run_dir` holds an exclusive ``fcntl.flock`` on ``<output_dir>/.lock`` for the rest of
the process (the OS releases it when the process ends, crashed or not), so a second training into
the same folder at the same time fails at once, naming the folder and the holder's pid.
:func:`eval_output_dir` gives ``--eval-only`` its own sub-folder, and :class:`ConfigYamlGuard`
keeps a run's ``config.yaml`` until a ``--resume`` has actually loaded the run.
"""
from __future__ import annotations

import errno
import fcntl
import os
import time
from typing import Dict, List, Optional

from pe_panoptic.engine.checkpoint_files import atomic_write, checkpoint_file_problem

__all__ = ["RUN_MARKERS", "OutputDirInUseError", "existing_run", "check_output_dir", "clear_run_markers",
           "lock_run_dir", "unlock_run_dir", "eval_output_dir", "ConfigYamlGuard"]

#: files of a run that say what state it is in (removed by ``--overwrite``)
RUN_MARKERS = ("model_final.pth", "last_checkpoint", "metrics.json")


class OutputDirInUseError(RuntimeError):
    """The output folder holds another run; the message names it and the ways out."""


def existing_run(output_dir: str) -> Optional[str]:
    """What run ``output_dir`` holds: ``"a finished run (model_final.pth)"``, ``"an unfinished run
    (last_checkpoint -> model_0000299.pth)"``, or ``None``."""
    if not output_dir or not os.path.isdir(output_dir):
        return None
    final = os.path.join(output_dir, "model_final.pth")
    if os.path.isfile(final):
        why = checkpoint_file_problem(final)
        if why is None:
            return "a finished run (model_final.pth)"
        return f"an unfinished run (model_final.pth is {why})"
    last = os.path.join(output_dir, "last_checkpoint")
    if os.path.isfile(last):
        with open(last) as f:
            return f"an unfinished run (last_checkpoint -> {f.read().strip() or '?'})"
    return None


def check_output_dir(output_dir: str, *, resume: bool, overwrite: bool, found: Optional[str] = None,
                     what: str = "train.output_dir") -> None:
    """Raise :class:`OutputDirInUseError` if a new run (not ``resume``) would replace the run in
    ``output_dir`` and ``overwrite`` is not set. ``found``: :func:`existing_run`'s answer when
    the caller has it (e.g. from the main process), else it is computed here."""
    if resume or overwrite:
        return
    found = found or existing_run(output_dir)
    if found:
        raise OutputDirInUseError(
            f"{what}={output_dir} already holds {found}; a new run would overwrite it. Either continue it "
            f"with --resume, or train into another folder (train.output_dir=<new folder>), or pass "
            f"--overwrite to replace it.")


def clear_run_markers(output_dir: str) -> List[str]:
    """Remove :data:`RUN_MARKERS` from ``output_dir``; returns the removed paths."""
    removed = []
    for name in RUN_MARKERS:
        path = os.path.join(output_dir, name)
        if os.path.isfile(path):
            os.remove(path)
            removed.append(path)
    return removed


_HELD: Dict[str, int] = {}  # output_dir (absolute) -> file descriptor of its held .lock


def lock_run_dir(output_dir: str, what: str = "train.output_dir") -> str:
    """Take the exclusive lock ``<output_dir>/.lock`` (creating the folder) for this process;
    raise :class:`OutputDirInUseError` naming the folder and the holder's pid if another process
    holds it. Re-entrant within a process (tests run several trainings in one process one after
    the other). Returns the lock file's path."""
    if not output_dir:
        raise OutputDirInUseError(f"{what} is empty: give the folder to train into")
    key = os.path.abspath(output_dir)
    path = os.path.join(key, ".lock")
    if key in _HELD:
        return path
    os.makedirs(key, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "?"
        os.close(fd)
        if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            raise
        raise OutputDirInUseError(
            f"{what}={output_dir} is in use by another training (pid {holder}, lock {path}); two runs into one "
            f"folder would replace each other's checkpoints and mix their metrics.json. Wait for it to end, or "
            f"train into another folder (train.output_dir=<new folder>).") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    _HELD[key] = fd
    return path


def unlock_run_dir(output_dir: str) -> None:
    """Release this process's lock on ``output_dir`` (no-op if it holds none)."""
    fd = _HELD.pop(os.path.abspath(output_dir), None)
    if fd is not None:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def eval_output_dir(output_dir: str) -> str:
    """A new sub-folder ``<output_dir>/eval_<YYYYmmdd-HHMMSS>[_N]`` for an ``--eval-only`` run's
    outputs (log, config.yaml, predictions), so that the run in ``output_dir`` stays as it was."""
    base = os.path.join(output_dir or ".", "eval_" + time.strftime("%Y%m%d-%H%M%S"))
    path, n = base, 1
    while os.path.exists(path):
        n += 1
        path = f"{base}_{n}"
    return path


class ConfigYamlGuard:
    """Keeps ``<output_dir>/config.yaml`` as it is while detectron2's ``default_setup`` writes the
    new one: call :meth:`hold` after ``default_setup`` (the new text is set aside, the old one put
    back) and :meth:`commit` once the resumed run has loaded and its settings are the ones used."""

    def __init__(self, output_dir: str):
        self.path = os.path.join(output_dir, "config.yaml")
        self.old: Optional[bytes] = None
        self.new: Optional[bytes] = None
        if os.path.isfile(self.path):
            with open(self.path, "rb") as f:
                self.old = f.read()

    def hold(self) -> None:
        if self.old is None or not os.path.isfile(self.path):
            return
        with open(self.path, "rb") as f:
            self.new = f.read()
        if self.new != self.old:
            old = self.old
            atomic_write(self.path, lambda f: f.write(old))

    def commit(self) -> None:
        if self.new is not None and self.new != self.old:
            new = self.new
            atomic_write(self.path, lambda f: f.write(new))
        self.new = None
