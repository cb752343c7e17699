"""Time caps and failure recording of ``tools/gpu_check.py``'s sections.

A section is a function ``fn(budget)`` that fills ``budget.result`` step by step and calls
:meth:`Budget.check` before every step it may skip. :func:`run_section` runs it: a section past
its cap stops at its next :meth:`Budget.check` and records how far it got (``completed``, the
results so far, ``stopped_before``); any exception is recorded by name and the script goes on.
An out-of-memory error at one setting (a batch size) is a result, not a failure:
:func:`attempt` records it as ``{"ok": False, "oom": True, ...}`` and frees the memory.
"""
from __future__ import annotations

import gc
import time
import traceback
from typing import Any, Callable, Dict, List, Optional

import torch

__all__ = ["CapReached", "Budget", "run_section", "is_oom", "attempt", "free_memory"]


class CapReached(Exception):
    """Raised by :meth:`Budget.check` when the section's time cap has passed."""

    def __init__(self, section: str, step: str, elapsed: float, cap: float):
        super().__init__(f"section {section!r}: time cap {cap:.0f} s reached after {elapsed:.1f} s, before {step!r}")
        self.step = step


class Budget:
    """The time cap of one section, its results so far and the steps it completed."""

    def __init__(self, section: str, cap_s: float, clock: Callable[[], float] = time.perf_counter):
        if cap_s <= 0:
            raise ValueError(f"section {section!r}: the time cap must be > 0 s, got {cap_s}")
        self.section, self.cap_s, self.clock = section, float(cap_s), clock
        self.start = clock()
        self.result: Dict[str, Any] = {}
        self.completed: List[str] = []

    def elapsed(self) -> float:
        return self.clock() - self.start

    def remaining(self) -> float:
        return max(0.0, self.cap_s - self.elapsed())

    def check(self, step: str) -> None:
        """Raise :class:`CapReached` if the cap has passed (call it before ``step``)."""
        if self.elapsed() >= self.cap_s:
            raise CapReached(self.section, step, self.elapsed(), self.cap_s)

    def done(self, step: str) -> None:
        self.completed.append(step)


def run_section(name: str, fn: Callable[[Budget], Optional[dict]], cap_s: float,
                clock: Callable[[], float] = time.perf_counter) -> dict:
    """Run ``fn(budget)`` under a cap of ``cap_s`` seconds and return its record:
    ``status`` (``"ok"``, ``"cap_reached"`` or ``"failed"``), ``seconds``, ``cap_s``, ``completed``
    steps, the results (``budget.result``, updated with what ``fn`` returns) and, unless ok,
    ``stopped_before`` / ``error`` (``"<ExceptionType>: <message>"``) and ``traceback``."""
    budget = Budget(name, cap_s, clock)
    record: Dict[str, Any] = {}
    try:
        out = fn(budget)
        budget.result.update(out or {})
        record["status"] = "ok"
    except CapReached as e:
        record.update(status="cap_reached", stopped_before=e.step, error=str(e))
    except Exception as e:  # noqa: BLE001 -- every failure is a recorded result
        record.update(status="failed", error=f"{type(e).__name__}: {e}",
                      traceback=traceback.format_exc(limit=8)[-4000:])
        free_memory()
    record.update(seconds=round(budget.elapsed(), 2), cap_s=cap_s, completed=list(budget.completed))
    return {**record, **budget.result}


def is_oom(exc: BaseException) -> bool:
    """Whether ``exc`` is an out-of-memory error (CUDA's ``OutOfMemoryError`` or one whose message
    says so, as some kernels raise a plain ``RuntimeError``)."""
    return isinstance(exc, torch.cuda.OutOfMemoryError) or "out of memory" in str(exc).lower()


def free_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def attempt(fn: Callable[[], dict]) -> dict:
    """``{"ok": True, **fn()}``, or ``{"ok": False, "oom": True, "error": ...}`` if ``fn`` ran out
    of memory (the memory is freed); other exceptions propagate."""
    try:
        return {"ok": True, **fn()}
    except Exception as e:  # noqa: BLE001 -- filtered below
        if not is_oom(e):
            raise
        msg = f"{type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}"
    free_memory()  # outside the except block: the traceback no longer holds the tensors
    return {"ok": False, "oom": True, "error": msg}
