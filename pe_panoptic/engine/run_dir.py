"""Protecting finished training runs from being replaced by accident.

``tools/train_net.py`` (without ``--resume``) into an ``output_dir`` that already holds a run
would start from iteration 0 and overwrite its checkpoints, ``last_checkpoint`` and
``model_final.pth``, and append to its ``metrics.json``. :func:`check_output_dir` refuses that,
naming the folder and the ways out, unless the caller passes ``overwrite=True`` (the tools'
``--overwrite``); then :func:`clear_run_markers` removes the old run's ``model_final.pth``,
``last_checkpoint`` and ``metrics.json`` first, so that a re-run that crashes cannot pass for the
old finished run or resume from its checkpoints.
"""
from __future__ import annotations

import os
from typing import List, Optional

__all__ = ["RUN_MARKERS", "OutputDirInUseError", "existing_run", "check_output_dir", "clear_run_markers"]

#: files of a run that say what state it is in (removed by ``--overwrite``)
RUN_MARKERS = ("model_final.pth", "last_checkpoint", "metrics.json")


class OutputDirInUseError(RuntimeError):
    """The output folder holds another run; the message names it and the ways out."""


def existing_run(output_dir: str) -> Optional[str]:
    """What run ``output_dir`` holds: ``"a finished run (model_final.pth)"``, ``"an unfinished run
    (last_checkpoint -> model_0000299.pth)"``, or ``None``."""
    if not output_dir or not os.path.isdir(output_dir):
        return None
    if os.path.isfile(os.path.join(output_dir, "model_final.pth")):
        return "a finished run (model_final.pth)"
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
