#!/usr/bin/env python
"""Run the controlled instance-learning experiments of ``configs/synthetic/learning_experiments.py``.

Each variant trains ``tools/train_net.py`` on the base config plus its overrides (one at a time,
sequentially: on a small CPU, parallel trainings distort each other), with the learning curve on
and an evaluation every ``EVAL_PERIOD`` iterations, and is scored on the synthetic val split.

    python tools/learning_experiments.py [--only NAME ...] [--iters N] [--output DIR] [--opts key=value ...]

Overrides (applied to every variant): ``--opts key=value ...``, or ``key=value`` tokens anywhere on
the line (:mod:`pe_panoptic.engine.cli`).

Writes ``<output>/<variant>/`` (log, checkpoints, ``learning_curve.{json,png}``, metrics) and
``<output>/results.json``; prints the Markdown table that docs/experiments.md shows. Variants already
finished in ``<output>`` (their ``metrics_final.json`` exists) are reused unless ``--rerun``. A
variant that is (re)trained replaces whatever its folder holds (a run without results, or one
being re-run with ``--rerun``): the tool owns ``<output>/<variant>/`` and passes ``--overwrite`` to
``tools/train_net.py``.
"""
import argparse
import json
import os
import runpy
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_SPEC = os.path.join(ROOT, "configs/synthetic/learning_experiments.py")
COLUMNS = ("PQ", "PQ_th", "PQ_st", "mIoU")
DIAG = ("diag/inst/norm", "diag/inst/cos_u0", "diag/inst/cos_u3", "loss_inst", "loss_inst_dice")


def load_spec(path: str) -> dict:
    spec = runpy.run_path(path)
    missing = {"BASE", "ITERS", "EVAL_PERIOD", "EXPERIMENTS"} - set(spec)
    if missing:
        raise SystemExit(f"{path}: missing {sorted(missing)}")
    return spec


def variant_overrides(name, entry, args) -> list:
    """The overrides of one ``EXPERIMENTS`` entry: a list of ``key=value``, or a dict with
    ``overrides`` and ``init_from`` (another variant of the same output folder, which must come
    earlier: this one starts from its ``model_final.pth``, as the paper's stages start from the
    previous stage's weights)."""
    if isinstance(entry, dict):
        unknown = set(entry) - {"overrides", "init_from"}
        if unknown:
            raise SystemExit(f"experiment {name!r}: unknown keys {sorted(unknown)} (overrides, init_from)")
        overrides = list(entry.get("overrides", []))
        if entry.get("init_from"):
            ckpt = os.path.join(args.output, entry["init_from"], "model_final.pth")
            if not os.path.isfile(ckpt):
                raise SystemExit(f"experiment {name!r} starts from {entry['init_from']!r}, which has no {ckpt}: "
                                 f"run it first (list it before {name!r})")
            overrides.append(f"train.init_checkpoint={ckpt}")
        return overrides
    return list(entry)


def run_variant(name, overrides, spec, args) -> dict:
    out = os.path.join(args.output, name)
    metrics_path = os.path.join(out, "metrics_final.json")
    if os.path.isfile(metrics_path) and not args.rerun:
        with open(metrics_path) as f:
            return json.load(f)
    os.makedirs(out, exist_ok=True)
    iters = args.iters or spec["ITERS"]
    cmd = [sys.executable, os.path.join(ROOT, "tools/train_net.py"), "--config-file", os.path.join(ROOT, spec["BASE"]),
           "--overwrite", "--metrics-json", os.path.join(out, "eval.json"),
           f"train.output_dir={out}", f"train.max_iter={iters}", f"train.eval_period={args.eval_period or spec['EVAL_PERIOD']}",
           "train.learning_curve=True", "train.checkpointer.period=100000"] + list(overrides) + list(args.opts)
    print(f"[experiments] {name}: " + " ".join(cmd[2:]), flush=True)
    t0 = time.time()
    with open(os.path.join(out, "log.txt"), "w") as log:
        r = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    if r.returncode:
        raise SystemExit(f"[experiments] {name} failed (rc {r.returncode}); see {os.path.join(out, 'log.txt')}")
    with open(os.path.join(out, "eval.json")) as f:
        ev = json.load(f)
    with open(os.path.join(out, "learning_curve.json")) as f:
        curves = json.load(f)
    res = {"overrides": list(overrides), "iters": iters, "wall_s": round(time.time() - t0, 1)}
    res.update({k: ev.get("panoptic_seg", {}).get(k) for k in COLUMNS[:3]})
    res["mIoU"] = ev.get("sem_seg", {}).get("mIoU")
    for k in DIAG:
        if curves.get(k):
            res[k] = curves[k][-1][1]
    res["val_curve"] = {k: curves.get(f"val {k}", []) for k in ("PQ", "PQ_th", "PQ_st")}
    res["postprocess"] = score_postprocess(out, overrides, spec, args)
    with open(metrics_path, "w") as f:
        json.dump(res, f, indent=2)
    return res


def score_postprocess(out, overrides, spec, args) -> dict:
    """PQ_th of the final checkpoint under the spec's ``POSTPROCESS`` variants
    ({label: [overrides]}, each scored with ``tools/eval_postprocess.py`` for every decoder in
    ``POSTPROCESS_DECODERS`` with the instance head's void): ``{"<decoder> <label>": PQ_th}``."""
    variants = spec.get("POSTPROCESS") or {}
    decoders = list(spec.get("POSTPROCESS_DECODERS", ["nn", "vote"]))
    scores = {}
    for label, pp in variants.items():
        path = os.path.join(out, f"postprocess_{label}.json")
        cmd = [sys.executable, os.path.join(ROOT, "tools/eval_postprocess.py"), "--config-file",
               os.path.join(ROOT, spec["BASE"]), "--checkpoint", os.path.join(out, "model_final.pth"),
               "--decoders"] + decoders + ["--void-sources", "instance",
               # a single-valued option just before the overrides: nargs options would swallow them
               "--metrics-json", path] + list(overrides) + list(args.opts) + list(pp)
        with open(os.path.join(out, f"postprocess_{label}.log"), "w") as log:
            r = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
        if r.returncode:
            raise SystemExit(f"[experiments] post-processing {label} failed (rc {r.returncode}); see {out}")
        with open(path) as f:
            for name, ev in json.load(f).items():
                decoder = name.split(",")[0].split("=")[-1]
                scores[f"{decoder} {label}"] = ev.get("panoptic_seg", {}).get("PQ_th")
    return scores


def table(results: dict) -> str:
    pp = list(dict.fromkeys(k for r in results.values() for k in (r.get("postprocess") or {})))
    from pe_panoptic.studies.tables import format_table

    header = (["variant", "overrides", *COLUMNS] + [f"PQ_th {k}" for k in pp]
              + ["thing-code norm", "cos l=0", "cos l=3", "loss_inst", "DICE", "min"])
    rows = []
    for name, r in results.items():
        post = r.get("postprocess") or {}
        ov = ", ".join(f"`{o}`" for o in r["overrides"]) or "(base recipe)"
        rows.append([name, ov] + [_float(r.get(k)) for k in COLUMNS] + [_float(post.get(k)) for k in pp]
                    + [_float(r.get(k)) for k in DIAG] + [f"{r['wall_s'] / 60:.0f}"])
    fmts = [None, None] + [".1f"] * (len(COLUMNS) + len(pp)) + [".2f"] * len(DIAG) + [None]
    return format_table(header, rows, floatfmt=fmts)


def _float(v):
    return None if v is None else float(v)


def get_parser() -> argparse.ArgumentParser:
    from pe_panoptic.engine.cli import with_opts  # here: importing pe_panoptic loads torch

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--spec", default=DEFAULT_SPEC, help="experiment list (BASE, ITERS, EVAL_PERIOD, EXPERIMENTS)")
    ap.add_argument("--only", nargs="+", default=None, help="variants to run (default: all)")
    ap.add_argument("--iters", type=int, default=None)
    ap.add_argument("--eval-period", type=int, default=None)
    ap.add_argument("--output", default=os.path.join(ROOT, "output/learning_experiments"))
    ap.add_argument("--rerun", action="store_true", help="retrain variants that already have results")
    return with_opts(ap)


def parse_args(argv=None) -> argparse.Namespace:
    """The command line, with every ``key=value`` override (``--opts`` or positional) in ``opts``."""
    from pe_panoptic.engine.cli import parse_tool_args

    return parse_tool_args(get_parser(), argv)


def main(argv=None):
    args = parse_args(argv)
    spec = load_spec(args.spec)
    names = args.only or list(spec["EXPERIMENTS"])
    unknown = [n for n in names if n not in spec["EXPERIMENTS"]]
    if unknown:
        raise SystemExit(f"unknown variants {unknown}; {args.spec} has {list(spec['EXPERIMENTS'])}")
    os.environ.setdefault("DETECTRON2_DATASETS", os.path.join(ROOT, "datasets"))
    results = {}
    for n in names:  # in order: a variant may start from an earlier one's weights (init_from)
        results[n] = run_variant(n, variant_overrides(n, spec["EXPERIMENTS"][n], args), spec, args)
    os.makedirs(args.output, exist_ok=True)
    path = os.path.join(args.output, "results.json")
    old = {}
    if os.path.isfile(path):
        with open(path) as f:
            old = json.load(f)
    old.update(results)
    with open(path, "w") as f:
        json.dump(old, f, indent=2)
    print(table(results))
    return results


if __name__ == "__main__":
    main()
