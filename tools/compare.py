#!/usr/bin/env python
"""Evaluate several configs / checkpoints on their test sets and print a side-by-side table.

    python tools/compare.py \\
        --entries pe_tiny=configs/synthetic/pe_tiny.py:output/demo/model_final.pth \\
                  panoptic_fpn=configs/baselines/panoptic_fpn_r50_synthetic.py:output/fpn/model_final.pth \\
        [--opts dataloader.test.num_workers=0 ...] [--threads 2] [--max-images N] [--json out.json]

Each entry is ``name=config[:checkpoint]`` (no checkpoint: the freshly initialized model). For each
model, with the config's own test loader and evaluator (``dataloader.test``,
``dataloader.evaluator``; pe_panoptic and Panoptic FPN configs evaluate the same images with the
same PQ / mIoU evaluators):

* PQ, PQ_th, PQ_st (``COCOPanopticEvaluator``) and mIoU (semantic evaluator);
* parameters (millions);
* GFLOPs of one forward pass in inference mode on the first test image, counted by fvcore's
  ``FlopCountAnalysis`` (one fused multiply-add = 1 flop, fvcore's convention), with a handle
  for PyTorch's fused SDPA attention (``B H Lq Lk (D + Dv)``), which fvcore would otherwise skip;
  a model that fvcore cannot trace (data-dependent Python in its forward) is counted by
  ``torch.utils.flop_counter.FlopCounterMode`` instead (no tracing; same convention), marked
  with ``*`` in the table;
* ms per image: median wall time of the model call (pre-processing, network and post-processing;
  not data loading or evaluation) over the test images at batch 1, the first image excluded as
  warm-up. The median is robust to load spikes on a shared machine; use ``--threads`` for
  comparable CPU numbers.

**Equal training budget** (``--train-budget-s SECONDS``, entries without checkpoints): every
config is first trained on this machine by ``tools/train_net.py`` for the number of iterations
that fits the budget (a short calibration run measures its seconds per iteration;
:mod:`pe_panoptic.studies.equal_budget`), into ``--output-dir/<name>``, then evaluated as above. The
table gains the training iterations, training s / iteration (detectron2's ``IterationTimer``),
the training minutes and the peak resident memory of the training process (MiB; on a GPU
machine this is host memory). ``--train-opts`` apply to training only, ``--entry-opts
name:key=value`` to one entry (training and evaluation), ``--opts`` to everything.

    python tools/compare.py --threads 2 --train-budget-s 900 --output-dir output/compare \
        --entries ours=configs/synthetic/pe_vits.py m2f_vits=configs/baselines/mask2former_dinov2_vits_synthetic.py

Prints a markdown table, then the results as one JSON line (last line of stdout). Checkpoints are
loaded strictly (:mod:`pe_panoptic.engine.checkpoint_io`; ``.pkl`` only with ``--trust-pickle``) and
``--opts`` are checked against every entry's config (:mod:`pe_panoptic.engine.config_overrides`).
"""
import argparse
import json
import logging
import os
import statistics
import sys
import time
from typing import Dict, List, Optional, Sequence, Tuple


import torch  # noqa: E402

import pe_panoptic  # noqa: E402,F401  (registers datasets and models)
from detectron2.config import instantiate  # noqa: E402
from detectron2.evaluation import inference_on_dataset  # noqa: E402
from detectron2.utils.logger import setup_logger  # noqa: E402
from pe_panoptic.engine.checkpoint_io import TRUST_PICKLE_HELP  # noqa: E402
from pe_panoptic.evaluation.panoptic import score_only_predicted  # noqa: E402
from pe_panoptic.engine.cli import parse_entry_opts  # noqa: E402,F401  (compare.parse_entry_opts)
from pe_panoptic.engine.config_overrides import load_config  # noqa: E402
from pe_panoptic.engine.predictor import load_model  # noqa: E402
from pe_panoptic.studies.benchmark.flops import SDPA_OP, sdpa_macs  # noqa: E402
from pe_panoptic.studies.tables import format_table as markdown_table  # noqa: E402

logger = logging.getLogger("pe_panoptic.compare")

COLUMNS = (("PQ", "PQ"), ("PQ_th", "PQ_th"), ("PQ_st", "PQ_st"), ("mIoU", "mIoU"),
           ("params_M", "params (M)"), ("gflops", "GFLOPs"), ("ms_per_image", "ms / image"))
#: added when the entries were trained with --train-budget-s
TRAIN_COLUMNS = (("train_iters", "train it"), ("train_s_per_iter", "train s / it"), ("train_min", "train min"),
                 ("peak_rss_mib", "peak train RSS (MiB)"))
_FORMATS = {"PQ": "{:.1f}", "PQ_th": "{:.1f}", "PQ_st": "{:.1f}", "mIoU": "{:.1f}", "ms_per_image": "{:.1f}",
            "train_iters": "{:d}", "train_s_per_iter": "{:.3f}", "train_min": "{:.1f}", "peak_rss_mib": "{:.0f}"}


def parse_entry(spec: str) -> Tuple[str, str, Optional[str]]:
    """``name=config[:checkpoint]`` -> ``(name, config, checkpoint or None)``."""
    name, sep, rest = spec.partition("=")
    if not sep or not name or not rest:
        raise ValueError(f"--entries: expected name=config[:checkpoint], got {spec!r}")
    config, _, ckpt = rest.partition(":")
    if not config.endswith(".py"):
        raise ValueError(f"--entries {spec!r}: the config must be a LazyConfig .py file, got {config!r}")
    if not os.path.isfile(config):
        raise FileNotFoundError(f"--entries {spec!r}: config file {config!r} not found")
    if ckpt and not os.path.isfile(ckpt):
        raise FileNotFoundError(f"--entries {spec!r}: checkpoint {ckpt!r} not found")
    return name, config, ckpt or None


def count_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def flatten_tensors(obj) -> List[torch.Tensor]:
    """All tensors in a (nested) model output: dicts, lists / tuples, detectron2 ``Instances``."""
    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, dict):
        return [t for k in sorted(obj) for t in flatten_tensors(obj[k])]
    if isinstance(obj, (list, tuple)):
        return [t for v in obj for t in flatten_tensors(v)]
    if hasattr(obj, "get_fields"):
        return flatten_tensors(obj.get_fields())
    if hasattr(obj, "tensor") and isinstance(obj.tensor, torch.Tensor):  # Boxes, BitMasks
        return [obj.tensor]
    return []


class _ImageToOutputs(torch.nn.Module):
    """Traceable view of a detectron2 model: one image tensor in, the output's tensors out (the
    other input fields are fixed), like detectron2's ``TracingAdapter`` (not importable in v0.6
    without caffe2)."""

    def __init__(self, model: torch.nn.Module, sample: dict):
        super().__init__()
        self.model = model
        self.fields = {k: v for k, v in sample.items() if k != "image" and not isinstance(v, torch.Tensor)}

    def forward(self, image):
        return tuple(flatten_tensors(self.model([dict(self.fields, image=image)])))


def _fvcore_gflops(module: torch.nn.Module, inputs: tuple) -> float:
    from fvcore.nn import FlopCountAnalysis

    flops = FlopCountAnalysis(module, inputs).set_op_handle(SDPA_OP, sdpa_macs)
    flops.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
    return flops.total() / 1e9


def _torch_gflops(fn, *args) -> float:
    """GFLOPs by PyTorch's dispatch-level ``FlopCounterMode`` (no tracing), halved to fvcore's
    convention (it counts a multiply-add as 2 flops)."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        fn(*args)
    return counter.get_total_flops() / 2e9


def count_gflops(model: torch.nn.Module, sample: dict) -> Tuple[float, str]:
    """(GFLOPs, counter) of one inference forward on the mapped test ``sample``: fvcore on the
    traced model (counter ``"fvcore"``); if the model cannot be traced (data-dependent Python in
    its forward), PyTorch's ``FlopCounterMode`` in fvcore's convention (``"torch"``)."""
    model.eval()
    with torch.no_grad():
        try:
            return _fvcore_gflops(_ImageToOutputs(model, sample), (sample["image"],)), "fvcore"
        except Exception as e:
            logger.warning(f"fvcore cannot trace the model ({type(e).__name__}: {str(e)[:200]}); "
                           "counting with torch.utils.flop_counter instead")
        return _torch_gflops(model, [sample]), "torch"


class TimedModel(torch.nn.Module):
    """Wraps a model; records the wall time of every call (CUDA-synchronized)."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model
        self.times: List[float] = []
        self.images = 0

    def _sync(self):
        if torch.cuda.is_available():
            torch.cuda.synchronize()

    def forward(self, inputs):
        self._sync()
        t0 = time.perf_counter()
        out = self.model(inputs)
        self._sync()
        self.times.append((time.perf_counter() - t0) / max(1, len(inputs)))
        self.images += len(inputs)
        return out

    def ms_per_image(self) -> float:
        times = self.times[1:] if len(self.times) > 1 else self.times
        return 1000.0 * statistics.median(times) if times else float("nan")


def _limited(loader, max_images: Optional[int]):
    if not max_images:
        return loader

    class _Limited:
        def __len__(self):
            return min(len(loader), max_images)

        def __iter__(self):
            for i, batch in enumerate(loader):
                if i >= max_images:
                    return
                yield batch

    return _Limited()


def evaluate_entry(name: str, config: str, checkpoint: Optional[str], opts: Sequence[str] = (),
                   device: str = "auto", max_images: Optional[int] = None,
                   trust_pickle: bool = False) -> Dict[str, float]:
    cfg, model = load_model(config, opts, checkpoint, device, trust_pickle, missing_weights="ignore")
    device = str(next(model.parameters()).device)
    if not checkpoint:
        msg = (f"entry {name!r} has no checkpoint: evaluating RANDOMLY INITIALIZED weights"
               + (f" (train.init_checkpoint {cfg.train.init_checkpoint} holds backbone weights only)"
                  if cfg.get("train", {}).get("init_checkpoint") else "")
               + "; give name=config:checkpoint to evaluate a trained model")
        logger.warning(msg)
        print(f"[compare] WARNING: {msg}", file=sys.stderr)
    loader = instantiate(cfg.dataloader.test)
    first = next(iter(loader))
    gflops, scope = count_gflops(model, first[0])
    timed = TimedModel(model)
    evaluator = instantiate(cfg.dataloader.evaluator)
    if max_images:  # PQ of the images evaluated (panopticapi otherwise wants all of the dataset's)
        score_only_predicted(evaluator)
    results = inference_on_dataset(timed, _limited(loader, max_images), evaluator)
    pan, sem = results.get("panoptic_seg", {}), results.get("sem_seg", {})
    return {
        "name": name, "config": config, "checkpoint": checkpoint or "",
        "PQ": pan.get("PQ", float("nan")), "PQ_th": pan.get("PQ_th", float("nan")),
        "PQ_st": pan.get("PQ_st", float("nan")), "mIoU": sem.get("mIoU", float("nan")),
        "params_M": count_params(model) / 1e6, "gflops": gflops, "flop_counter": scope,
        "ms_per_image": timed.ms_per_image(), "images": timed.images, "device": device,
    }


def format_table(rows: Sequence[Dict]) -> str:
    """Markdown table of :func:`evaluate_entry` results (with the training columns when any row
    has them)."""
    columns = COLUMNS + (TRAIN_COLUMNS if any("train_iters" in r for r in rows) else ())
    note = any(r.get("flop_counter") == "torch" for r in rows)
    cells = []
    for r in rows:
        cells.append([r["name"]])
        for key, _ in columns:
            v = r.get(key, float("nan"))
            cell = "n/a" if v != v else _FORMATS.get(key, "{:.2f}").format(v)
            if key == "gflops" and r.get("flop_counter") == "torch":
                cell += "*"
            cells[-1].append(cell)
    lines = [markdown_table(["model", *(title for _, title in columns)], cells, align="l" + "r" * len(columns))]
    if note:
        lines.append("\n\\* counted with torch.utils.flop_counter (fvcore could not trace the model), "
                     "in fvcore's convention (1 multiply-add = 1 flop)")
    return "\n".join(lines)


def write_curves(runs: Dict[str, Dict], output_dir: str) -> Dict[str, List[Dict]]:
    """The equal-budget runs' validation points on both time axes: ``<output_dir>/curves.json``,
    ``curves.png`` (calibrated seconds), ``curves_measured.png``, and a table on stdout."""
    from pe_panoptic.studies.budget_curves import curve_rows, load_run_points, plot_budget_curves

    points = {n: load_run_points(r["output_dir"], r["calibration_s_per_iter"]) for n, r in runs.items()}
    with open(os.path.join(output_dir, "curves.json"), "w") as f:
        json.dump(points, f, indent=1)
    budget = max(r["budget_s"] for r in runs.values())
    plot_budget_curves(points, os.path.join(output_dir, "curves.png"), "calibrated",
                       title=f"equal training budget of {budget:.0f} s per model")
    plot_budget_curves(points, os.path.join(output_dir, "curves_measured.png"), "measured",
                       title=f"equal training budget of {budget:.0f} s per model (measured clock)")
    print(markdown_table(["model", "iteration", "calibrated s", "measured s", "PQ", "PQ_th", "PQ_st"],
                         curve_rows(points), align="lrrrrrr"))
    return points


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--entries", nargs="+", required=True, help="name=config.py[:checkpoint.pth] ...")
    p.add_argument("--opts", nargs="*", default=[], help="LazyConfig overrides applied to every entry")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--max-images", type=int, default=0, help="evaluate at most this many test images (0: all)")
    p.add_argument("--json", default="", help="also write the results to this JSON file")
    p.add_argument("--trust-pickle", action="store_true", help=TRUST_PICKLE_HELP)
    p.add_argument("--train-budget-s", type=float, default=0.0,
                   help="train every entry (no checkpoints) for the iterations that fit this many seconds first")
    p.add_argument("--output-dir", default="output/compare", help="where --train-budget-s runs go (<dir>/<name>)")
    p.add_argument("--train-opts", nargs="*", default=[], help="overrides for training only")
    p.add_argument("--entry-opts", action="append", default=[], metavar="NAME:KEY=VALUE",
                   help="an override for one entry (training and evaluation); repeat for more")
    p.add_argument("--calibration-iters", type=int, default=8, help="iterations of the timing run (>= 4)")
    p.add_argument("--curve-points", type=int, default=0,
                   help="with --train-budget-s: evaluate this many times during each training run and write the "
                        "learning curves of all entries on one time axis (<output-dir>/curves.{json,png})")
    p.add_argument("--resume", action="store_true",
                   help="with --train-budget-s: reuse the entries already trained into --output-dir with the same "
                        "settings (an interrupted comparison continues with the next entry)")
    return p


def main(argv: Optional[Sequence[str]] = None) -> List[Dict]:
    args = get_parser().parse_args(argv)
    setup_logger(name="pe_panoptic")
    setup_logger(name="detectron2", abbrev_name="d2")
    if args.threads:
        torch.set_num_threads(args.threads)
    entries = [parse_entry(e) for e in args.entries]
    names = [e[0] for e in entries]
    if len(set(names)) != len(names):
        raise ValueError(f"--entries: duplicate names {names}")
    per_entry = parse_entry_opts(args.entry_opts, names)
    for name, config, _ in entries:  # check the overrides against every config before running any
        load_config(config, list(args.opts) + per_entry[name])
        if args.train_budget_s:
            load_config(config, list(args.opts) + list(args.train_opts) + per_entry[name])
    if (args.curve_points or args.resume) and not args.train_budget_s:
        raise ValueError("--curve-points and --resume apply to the training runs of --train-budget-s")
    runs = {}
    if args.train_budget_s:
        from pe_panoptic.studies.equal_budget import calibrate, has_finished_run, train_within_budget

        given = [n for n, _, k in entries if k]
        if given:
            raise ValueError(f"--train-budget-s trains every entry: give no checkpoints (entries {given} have one)")
        train_opts = {n: list(args.opts) + list(args.train_opts) + per_entry[n] for n in names}
        speeds = {}  # every calibration before any training: none of them runs beside a training
        if args.train_budget_s < 0:
            raise ValueError(f"--train-budget-s must be positive, got {args.train_budget_s}")
        done = [n for n in names if has_finished_run(n, args.output_dir)]
        if done and not args.resume:
            raise FileExistsError(f"{args.output_dir} already holds finished equal-budget runs of {done}: continue the "
                                  "comparison with --resume (reuses them), or choose another --output-dir")
        for name, config, _ in entries:
            if name not in done:
                speeds[name] = calibrate(name, config, args.output_dir, train_opts[name],
                                         calibration_iters=args.calibration_iters)
        for name, config, _ in entries:
            runs[name] = train_within_budget(name, config, args.train_budget_s, args.output_dir, train_opts[name],
                                             calibration_iters=args.calibration_iters, s_per_iter=speeds.get(name),
                                             curve_points=args.curve_points, reuse=args.resume)
        entries = [(n, c, runs[n]["checkpoint"]) for n, c, _ in entries]
    rows = []
    for n, c, k in entries:
        opts = list(args.opts) + per_entry[n]
        if n in runs:  # the evaluator's files (predictions.json) go next to the training run
            opts.append(f"train.output_dir={os.path.join(args.output_dir, n, 'eval')}")
        row = evaluate_entry(n, c, k, opts, args.device, args.max_images or None, args.trust_pickle)
        if n in runs:
            from pe_panoptic.studies.equal_budget import budget_columns

            row.update(budget_columns(runs[n]), budget_s=args.train_budget_s)
        rows.append(row)
    print(format_table(rows))
    if args.curve_points:
        write_curves(runs, args.output_dir)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)
    print(json.dumps(rows))
    return rows


if __name__ == "__main__":
    main()
