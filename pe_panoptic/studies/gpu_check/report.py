"""The summary table of ``tools/gpu_check.py``: one row per figure, with its goal (docs/gpu.md)."""
from __future__ import annotations

from typing import Any, Dict, List

from pe_panoptic.studies.tables import format_table

__all__ = ["summary_rows", "summary_table"]

COLUMNS = ["section", "status", "figure", "value", "goal"]


def _get(d: Any, *keys):
    for k in keys:
        if not isinstance(d, dict) or k not in d:
            return None
        d = d[k]
    return d


def summary_rows(report: Dict[str, Any]) -> List[list]:
    rows = []

    def add(section, figure, value, goal=""):
        rows.append([section, _get(report, section, "status"), figure, value, goal])

    add("device", "name", _get(report, "device", "name"))
    add("device", "bf16 matmul TFLOP/s", _get(report, "device", "matmul_bf16_tflops"), "the peak")
    for name, goal in (("vitb_420", ">= 35 on A100-class"), ("vitl_1008", "")):
        t = _get(report, "train", name) or {}
        if t.get("ok") is False:
            add("train", f"{name} img/s", "OOM", goal)
            continue
        add("train", f"{name} img/s (batch {t.get('batch')})", t.get("images_per_s"), goal)
        split = " / ".join(f"{t[k]:.1f}" if isinstance(t.get(k), float) else "-"
                           for k in ("data_ms", "forward_ms", "backward_ms", "optimizer_ms"))
        add("train", f"{name} ms data / fwd / bwd / opt", split)
    mem = report.get("memory") or {}
    for key in sorted(k for k in mem if k.startswith("batch")):
        v = mem[key]
        add("memory", f"{key} peak GiB", v.get("peak_gib") if v.get("ok") else "OOM", "batch 2 fits in 80 GB")
    add("memory", "largest batch (ckpt on)", _get(mem, "largest_batch_ckpt_on", "largest"), ">= 2")
    for name, e in (_get(report, "eval", "pipeline", "entries") or {}).items():
        add("eval", f"{name} pipeline img/s", e.get("images_per_s"))
    for name, v in (_get(report, "eval", "pipeline", "ratios_ours_over") or {}).items():
        add("eval", f"ours / {name}", v)
    fwd = _get(report, "eval", "forward_vitl_1008") or {}
    add("eval", "ViT-L 1008 fwd TFLOP/s", fwd.get("achieved_tflops"))
    add("eval", "fwd % of matmul peak", None if fwd.get("flops_utilization") is None else 100 * fwd["flops_utilization"],
        ">= 60 %")
    for name, v in (report.get("learning") or {}).items():
        if isinstance(v, dict) and "config" in v:
            pts = ", ".join(f"{int(i)}: {p:.1f}" for i, p in v.get("val_PQ_th") or [])
            add("learning", f"{name} val PQ_th", pts or v.get("status"), "void plateau?")
    for section in ("device", "train", "memory", "eval", "learning"):
        err = _get(report, section, "error")
        if err:
            add(section, "error", err[:120])
    return rows


def summary_table(report: Dict[str, Any]) -> str:
    return format_table(COLUMNS, summary_rows(report), floatfmt=".4g", missing="-", style="plain")
