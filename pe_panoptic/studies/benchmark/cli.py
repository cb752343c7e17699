"""Argument checks and output shared by the subcommands of ``tools/benchmark.py``."""
from __future__ import annotations

import json
from typing import List, Optional

import torch

from pe_panoptic.studies import benchmark as B


def _json_arg(text: Optional[str], name: str) -> dict:
    if not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise SystemExit(f"{name}: not valid JSON ({e}): {text!r}")
    if not isinstance(value, dict):
        raise SystemExit(f"{name}: expected a JSON object, got {text!r}")
    return value


def _set_threads(n: Optional[int]) -> int:
    if n is not None:
        if n < 1:
            raise SystemExit(f"--threads must be >= 1, got {n}")
        torch.set_num_threads(n)
    return torch.get_num_threads()


def _check_size(size: int, name: str = "--size", div: int = 14) -> int:
    if size < div or size % div:
        raise SystemExit(f"{name} {size}: must be a positive multiple of the patch size {div}")
    return size


def _model_from_args(args, prefix: str = "") -> torch.nn.Module:
    """The benchmarked model from ``--{prefix}config-file`` (+ overrides) or ``--{prefix}backbone``."""
    kwargs_flag = f"--{prefix.replace('_', '-')}model-kwargs"
    return B.build_benchmark_model(
        config_file=getattr(args, prefix + "config_file"),
        overrides=getattr(args, prefix + "opts", None) or (),
        backbone=getattr(args, prefix + "backbone"),
        model_kwargs=_json_arg(getattr(args, prefix + "model_kwargs"), kwargs_flag),
        decoder_width=args.decoder_width,
        num_classes=args.num_classes,
        num_things=args.num_things,
        depth=args.depth,
    )


def _config_input_size(config_file: Optional[str], opts) -> Optional[int]:
    """``dataloader.train.mapper.input_size`` of a LazyConfig (an int or ``(H, W)`` with H == W)."""
    if not config_file:
        return None
    from pe_panoptic.engine.config_overrides import load_config

    cfg = load_config(config_file, opts or [])
    try:
        size = cfg.dataloader.train.mapper.input_size
    except (AttributeError, KeyError):
        return None
    if isinstance(size, int):
        return size
    try:
        h, w = size
    except (TypeError, ValueError):
        return None
    return int(h) if h == w else None


def _model_name(args, prefix: str = "") -> str:
    cfg = getattr(args, prefix + "config_file")
    return cfg if cfg else getattr(args, prefix + "backbone")


def _run_fields(subcommand: str, args, size, device, threads) -> dict:
    """The settings every model / train result reports."""
    return {"subcommand": subcommand, "model": _model_name(args), "size": size, "batch": args.batch,
            "dtype": args.dtype, "device": str(device), "threads": threads}


def _emit(title: str, rows: List[dict], columns: List[str], result: dict) -> dict:
    print(title)
    print(B.format_table(rows, columns))
    print(json.dumps(result, sort_keys=True), flush=True)
    return result
