"""Peak memory of ``tools/benchmark.py``: of a device (:func:`peak_memory_gb`) and the peak RSS
that post-processing adds at a large original size, measured in a fresh process
(:func:`postprocess_peak_memory`: peak RSS is per process)."""
from __future__ import annotations

import os
import resource
import sys
import textwrap
from typing import Tuple

import torch

__all__ = ["reset_peak_memory", "peak_memory_gb", "POSTPROCESS_MEMORY_PROBE", "postprocess_peak_memory"]


def reset_peak_memory(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_gb(device) -> Tuple[float, str]:
    """Peak memory and what it measures: CUDA ``max_memory_allocated`` (since the last
    :func:`reset_peak_memory`), on CPU the process's peak resident set size (``ru_maxrss``,
    whole process lifetime: model, data and Python included)."""
    if torch.device(device).type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30, "cuda_max_memory_allocated"
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, "cpu_peak_rss"


#: argv: repository root, H, W, decode_at, number of classes; prints the peak RSS (bytes) above
#: the random network outputs (a 96 x 144 output map, PE L = 4, a 40 x 40 grid, half the classes things)
POSTPROCESS_MEMORY_PROBE = textwrap.dedent("""
    import sys, types
    # only torch is needed: skip the package __init__ (detectron2, timm) to keep the probe cheap
    pkg = types.ModuleType("pe_panoptic"); pkg.__path__ = [sys.argv[1] + "/pe_panoptic"]
    sys.modules["pe_panoptic"] = pkg
    import torch
    torch.set_num_threads(1)
    from pe_panoptic.encoding import build_encoding
    from pe_panoptic.postprocess import PostProcessConfig, batch_results
    H, W, decode_at, N = int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], int(sys.argv[5])
    h, w = 96, 144  # the output map of a 168 x 252 input
    g = torch.Generator().manual_seed(0)
    enc = build_encoding("pe", num_harmonics=4)
    outputs = {"sem_logits": 3 * torch.randn(1, N, h, w, generator=g),
               "inst": 0.5 * torch.randn(1, enc.num_channels, h, w, generator=g),
               "depth": torch.rand(1, 1, h, w, generator=g)}
    def status(key):  # /proc/self/status in bytes (VmHWM, unlike ru_maxrss, restarts at exec)
        with open("/proc/self/status") as f:
            return next(int(l.split()[1]) * 1024 for l in f if l.startswith(key + ":"))
    try:  # restart the high-water mark here ("5": reset peak RSS, Linux >= 4.0)
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        base = status("VmRSS")
    except OSError:
        base = status("VmHWM")
    (res,) = batch_results(outputs, [(168, 252)], [(H, W)], enc, list(range(N // 2)),
                           PostProcessConfig(grid=(40, 40)), decode_at=decode_at, chunk_bytes=64 << 20)
    assert res["panoptic_seg"][0].shape == res["sem_seg"].shape == res["depth"].shape == (H, W)
    print(status("VmHWM") - base)
""")


def postprocess_peak_memory(height: int, width: int, decode_at: str = "output", num_classes: int = 133,
                            timeout: float = 900) -> int:
    """Peak RSS in bytes that ``batch_results`` adds, in a fresh process, to post-process one image
    of ``height x width`` (Linux: ``/proc/self/status``)."""
    import subprocess

    # the folder holding the pe_panoptic package (this file is pe_panoptic/studies/benchmark/memory.py)
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    res = subprocess.run([sys.executable, "-c", POSTPROCESS_MEMORY_PROBE, root, str(int(height)), str(int(width)),
                          decode_at, str(int(num_classes))], capture_output=True, text=True, timeout=timeout)
    if res.returncode:
        raise RuntimeError(f"post-processing memory probe failed (rc {res.returncode}):\n{res.stderr[-3000:]}")
    return int(res.stdout.strip().splitlines()[-1])
