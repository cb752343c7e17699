"""Devices, dtypes and timing of ``tools/benchmark.py``: contenders interleaved round by round in
one process (:func:`interleaved_times`), so a slow spell of a shared machine hits all of them;
the matmul peak (:func:`matmul_fn`) the achieved FLOP/s are compared with."""
from __future__ import annotations

import statistics
import time
from typing import Any, Callable, Dict, List, Mapping, Sequence, Tuple

import torch

from pe_panoptic.engine.device import resolve_device as _resolve_device_name

__all__ = ["DTYPES", "resolve_device", "resolve_dtype", "synchronize", "interleaved_times", "summarize", "matmul_fn"]

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_device(name: str = "auto") -> torch.device:
    """:func:`pe_panoptic.engine.device.resolve_device` as a ``torch.device``."""
    return torch.device(_resolve_device_name(name))


def resolve_dtype(name: str) -> torch.dtype:
    if name not in DTYPES:
        raise ValueError(f"--dtype {name!r}: choose one of {sorted(DTYPES)}")
    return DTYPES[name]


def synchronize(device: torch.device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def interleaved_times(
    fns: Mapping[str, Callable[[], Any]], *, rounds: int, warmup: int = 1, device="cpu"
) -> Dict[str, List[float]]:
    """Seconds per call of every function of ``fns``, measured interleaved in one process.

    Each function is first called ``warmup`` times; then ``rounds`` rounds call every function
    once, in an order rotated by one each round (no function always runs right after another).
    The device is synchronized around every call, so CUDA work is timed in full.
    """
    if rounds < 1 or warmup < 0:
        raise ValueError(f"rounds must be >= 1 and warmup >= 0, got rounds={rounds}, warmup={warmup}")
    if not fns:
        raise ValueError("interleaved_times: nothing to time")
    names = list(fns)
    for name in names:
        for _ in range(warmup):
            fns[name]()
    synchronize(device)
    times: Dict[str, List[float]] = {n: [] for n in names}
    for r in range(rounds):
        for j in range(len(names)):
            name = names[(r + j) % len(names)]
            synchronize(device)
            t0 = time.perf_counter()
            fns[name]()
            synchronize(device)
            times[name].append(time.perf_counter() - t0)
    return times


def summarize(times: Sequence[float]) -> Dict[str, float]:
    """median / min / mean / std (seconds) of repeated timings."""
    if not times:
        raise ValueError("summarize: no timings")
    return {
        "median_s": float(statistics.median(times)),
        "min_s": float(min(times)),
        "mean_s": float(statistics.fmean(times)),
        "std_s": float(statistics.pstdev(times)) if len(times) > 1 else 0.0,
        "n": len(times),
    }


def matmul_fn(n: int, device, dtype: torch.dtype, repeats: int = 1) -> Tuple[Callable[[], Any], float]:
    """A function doing ``repeats`` ``[n, n] @ [n, n]`` matmuls in ``dtype`` and its FLOPs
    (``2 n^3`` per matmul): the peak the model's achieved FLOP/s are compared with."""
    if n < 1 or repeats < 1:
        raise ValueError(f"matmul size and repeats must be >= 1, got n={n}, repeats={repeats}")
    g = torch.Generator().manual_seed(0)
    a = torch.randn(n, n, generator=g).to(device=device, dtype=dtype)
    b = torch.randn(n, n, generator=g).to(device=device, dtype=dtype)
    out = torch.empty(n, n, device=device, dtype=dtype)

    def run():
        for _ in range(repeats):
            torch.matmul(a, b, out=out)
        return out

    return run, 2.0 * n**3 * repeats

