#!/usr/bin/env python
"""Train / evaluate pe_panoptic (and detectron2 model-zoo LazyConfig baselines) from a LazyConfig.

Follows detectron2's ``tools/lazyconfig_train_net.py``:

    python tools/train_net.py --config-file configs/synthetic/pe_tiny.py [--opts key=value ...]
    python tools/train_net.py --config-file ... --eval-only train.init_checkpoint=model_final.pth
    python tools/train_net.py --config-file ... --resume
    python tools/train_net.py --config-file ... --num-gpus 8        # DDP, one process per GPU
    python tools/train_net.py --config-file ... --num-gpus 2 --num-machines 2 --machine-rank 0 \\
        --dist-url tcp://<host>:<port>

Overrides: ``--opts key=value ...``; positional ``key=value`` tokens anywhere on the line are the same
overrides, and options after them stay options (``... a=b --resume``; :mod:`pe_panoptic.engine.cli`).

Additions over the detectron2 script: ``train.device="auto"`` picks CUDA when available, AMP in
fp16 or bf16 (``train.amp.enabled``, ``train.amp.dtype``) on CUDA or CPU, gradient accumulation
(``train.accumulate_steps``, an int or ``"auto"`` = ``train.effective_batch_size`` /
``dataloader.train.total_batch_size``, see :mod:`pe_panoptic.engine.recipes`), gradient clipping
(``train.clip_grad_norm``), optional ``torch.compile`` of the network (``train.compile``: False,
True or a dict of ``torch.compile`` arguments), CPU multi-process training with gloo
(``--num-gpus N`` without CUDA), exact resumption (the RNGs are reseeded from the iteration
before every step, and a :class:`pe_panoptic.data.resumable.ResumableTrainLoader` continues its
data stream at the resumed iteration), ``--metrics-json`` to write the final evaluation
results, and ``train.hooks``: a list of LazyCall'd detectron2 hooks the config adds (EoMT's mask
annealing, :class:`pe_panoptic.baselines.eomt_annealing.MaskAnnealingHook`).

What it refuses (docs/refusals.md): overrides of keys the config does not have
or of the wrong type (:mod:`pe_panoptic.engine.config_overrides`); checkpoints that do not fit the model
exactly, hold NaN / inf, or are pickles, unless ``--trust-pickle`` (and, when training starts from
``train.init_checkpoint``, key prefixes in ``train.init_checkpoint_allow_mismatch``;
:mod:`pe_panoptic.engine.checkpoint_io`); ``--eval-only`` without a checkpoint; a new run into an
``output_dir`` holding another run unless ``--resume`` or ``--overwrite``, or used by another
training at the same time (a lock, :mod:`pe_panoptic.engine.run_dir`); invalid ``train.max_iter`` /
``train.amp.dtype`` / ``train.output_dir`` / empty mismatch prefixes, and ``--resume`` with changed
optimizer / schedule values, naming them (:mod:`pe_panoptic.engine.run_settings`).
``--eval-only`` writes into its own ``<output_dir>/eval_<time>/``; a resumed run's ``config.yaml`` is
replaced only once the resume has loaded.
"""
import json
import logging
import os



import pe_panoptic  # noqa: E402,F401  (registers everything)
from detectron2.config import instantiate  # noqa: E402
from detectron2.engine import default_argument_parser, default_setup, default_writers, hooks  # noqa: E402
from detectron2.engine.defaults import create_ddp_model  # noqa: E402
from detectron2.evaluation import inference_on_dataset, print_csv_format  # noqa: E402
from detectron2.utils import comm  # noqa: E402
from pe_panoptic.engine.checkpoint_io import TRUST_PICKLE_HELP, StrictCheckpointer  # noqa: E402
from pe_panoptic.engine.cli import parse_tool_args, with_opts  # noqa: E402
from pe_panoptic.engine.config_overrides import load_config  # noqa: E402
from pe_panoptic.engine.device import resolve_device as resolve_device_name  # noqa: E402
from pe_panoptic.engine.trainer import (  # noqa: E402
    IterationSeedHook,
    PETrainer,
    ddp_kwargs,
    jsonable,
    maybe_compile,
)
from pe_panoptic.engine.launch import launch  # noqa: E402
from pe_panoptic.engine.learning_curve import LearningCurveHook, TrainingClockHook  # noqa: E402
from pe_panoptic.engine.recipes import resolve_accumulate_steps  # noqa: E402
from pe_panoptic.engine.run_dir import (  # noqa: E402
    ConfigYamlGuard,
    OutputDirInUseError,
    check_output_dir,
    clear_run_markers,
    eval_output_dir,
    existing_run,
    lock_run_dir,
    unlock_run_dir,
)
from pe_panoptic.engine.run_settings import (  # noqa: E402
    check_resume_schedule,
    check_train_settings,
)
from pe_panoptic.evaluation.build import check_evaluator_dataset  # noqa: E402

logger = logging.getLogger("detectron2")


def resolve_device(cfg) -> str:
    try:
        device = resolve_device_name(cfg.train.get("device", "auto"), "train.device")
    except ValueError as e:
        raise RuntimeError(str(e)) from None
    if device.startswith("cuda") and comm.get_world_size() > 1:
        device = f"cuda:{comm.get_local_rank()}"
    cfg.train.device = device
    return device


_LAST_RESULTS = {}


def do_test(cfg, model):
    if "evaluator" not in cfg.dataloader:
        return {}
    ret = inference_on_dataset(model, instantiate(cfg.dataloader.test), instantiate(cfg.dataloader.evaluator))
    if comm.is_main_process():
        print_csv_format(ret)
    _LAST_RESULTS.clear()
    _LAST_RESULTS.update(ret or {})
    return ret


def do_train(args, cfg, config_guard=None):
    device = resolve_device(cfg)
    if cfg.train.get("learning_curve", False) and "diagnostics" in cfg.model:
        cfg.model.diagnostics = True  # the instance-code diagnostics of the learning curve (PETrainer logs them)
    model = instantiate(cfg.model)
    logger.info("Model:\n{}".format(model))
    model.to(device)

    cfg.optimizer.params.model = model
    optim = instantiate(cfg.optimizer)
    train_loader = instantiate(cfg.dataloader.train)
    accumulate_steps = resolve_accumulate_steps(cfg.train, cfg.dataloader.train.total_batch_size)
    maybe_compile(model, cfg.train.get("compile", False))

    ddp = dict(cfg.train.get("ddp", {}))
    model = create_ddp_model(model, **ddp_kwargs(device, **ddp))
    amp = cfg.train.get("amp", {})
    seed = cfg.train.get("seed", -1)
    # the same on every process: detectron2's shared_random_seed() is drawn on rank 0 and broadcast
    seed = seed if seed is not None and seed >= 0 else comm.shared_random_seed()
    trainer = PETrainer(
        model, train_loader, optim,
        amp=bool(amp.get("enabled", False)), amp_dtype=amp.get("dtype", "bf16"),
        accumulate_steps=accumulate_steps,
        clip_grad_norm=cfg.train.get("clip_grad_norm", None), device=device,
        seed=seed,  # one task per optimizer step (dataloader.train.task_probs), identical on all processes
    )
    checkpointer = StrictCheckpointer(model, cfg.train.output_dir, trainer=trainer, trust_pickle=args.trust_pickle,
                                      allow_mismatch=cfg.train.get("init_checkpoint_allow_mismatch", None) or ())
    trainer.register_hooks(
        [
            IterationSeedHook(seed),
            hooks.IterationTimer(),
            # training seconds without the evaluations, for curves on a time axis (before EvalHook)
            TrainingClockHook() if cfg.train.get("learning_curve", False) else None,
            hooks.LRScheduler(scheduler=instantiate(cfg.lr_multiplier)),
            hooks.PeriodicCheckpointer(checkpointer, **cfg.train.checkpointer) if comm.is_main_process() else None,
            # the config's own hooks (e.g. EoMT's MaskAnnealingHook), before the evaluation hook
            *[instantiate(h) for h in (cfg.train.get("hooks", None) or [])],
            hooks.EvalHook(cfg.train.eval_period, lambda: do_test(cfg, model)),
            LearningCurveHook(cfg.train.output_dir, cfg.train.eval_period or cfg.train.max_iter,
                              sample_period=cfg.train.log_period, title=os.path.basename(args.config_file))
            if comm.is_main_process() and cfg.train.get("learning_curve", False)
            else None,
            hooks.PeriodicWriter(default_writers(cfg.train.output_dir, cfg.train.max_iter), period=cfg.train.log_period)
            if comm.is_main_process()
            else None,
        ]
    )
    checkpointer.resume_or_load(cfg.train.init_checkpoint, resume=args.resume)
    if args.resume and checkpointer.has_checkpoint():
        # the checkpoint stores the iteration that just finished: continue with the next one
        start_iter = trainer.iter + 1
    else:
        start_iter = 0
    if config_guard is not None:  # loaded: the new config.yaml is the one used
        config_guard.commit()
    if hasattr(train_loader, "set_start"):  # continue the data stream where the checkpoint left it
        train_loader.set_start(start_iter * accumulate_steps)
    trainer.train(start_iter, cfg.train.max_iter)
    return model


def prepare_output_dir(args, cfg) -> list:
    """Lock the output_dir (another training into it fails); refuse (on every process, as the main
    process decides) a new run into an output_dir that holds another run, unless --resume or
    --overwrite, and a --resume with changed optimizer / schedule values (naming them); with
    --overwrite remove the old run's markers (model_final.pth, last_checkpoint, metrics.json)."""
    out, state = cfg.train.output_dir, (None, None)
    if comm.is_main_process():
        try:
            lock_run_dir(out)
            if args.resume:
                check_resume_schedule(out, cfg)
            state = (None, existing_run(out))
        except (OutputDirInUseError, ValueError) as e:  # ValueError: SettingsError
            state = (e, None)
    error, found = comm.all_gather(state)[0]
    if error is not None:
        raise error
    if found:
        check_output_dir(out, resume=args.resume, overwrite=args.overwrite, found=found)
    if found and args.overwrite and not args.resume and comm.is_main_process():
        removed = clear_run_markers(out)
        logger.warning(f"--overwrite: replacing {found} in {out} (removed {', '.join(removed)})")
    comm.synchronize()


def main(args):
    cfg = load_config(args.config_file, args.opts)
    if args.eval_only and not cfg.train.get("init_checkpoint"):
        raise SystemExit("--eval-only needs a checkpoint: give train.init_checkpoint=<model.pth> "
                         "(evaluating randomly initialized weights is meaningless)")
    check_train_settings(cfg, eval_only=args.eval_only)
    check_evaluator_dataset(cfg)  # before anything is written or built, not a KeyError after inference
    guard = None
    if not args.eval_only:
        prepare_output_dir(args, cfg)
        guard = ConfigYamlGuard(cfg.train.output_dir) if args.resume and comm.is_main_process() else None
    else:  # its own sub-folder: the run in output_dir (its config.yaml, log) stays as it was
        cfg.train.output_dir = comm.all_gather(eval_output_dir(cfg.train.output_dir) if comm.is_main_process()
                                               else None)[0]
    default_setup(cfg, args)
    if guard is not None:
        guard.hold()  # the run's config.yaml until the resume has loaded
    if args.eval_only:
        device = resolve_device(cfg)
        model = instantiate(cfg.model)
        model.to(device)
        model = create_ddp_model(model, **ddp_kwargs(device))
        StrictCheckpointer(model, trust_pickle=args.trust_pickle).load(cfg.train.init_checkpoint)
        results = do_test(cfg, model)
    else:
        do_train(args, cfg, guard)
        unlock_run_dir(cfg.train.output_dir)
        # detectron2's EvalHook always evaluates after the last iteration
        results = dict(_LAST_RESULTS)
    if comm.is_main_process() and args.metrics_json:
        os.makedirs(os.path.dirname(os.path.abspath(args.metrics_json)), exist_ok=True)
        with open(args.metrics_json, "w") as f:
            json.dump(jsonable(results), f, indent=2)
        logger.info(f"wrote metrics to {args.metrics_json}")
    return results


EPILOG = """Examples:
    train_net.py --config-file configs/synthetic/pe_tiny.py train.max_iter=100 --resume
    train_net.py --config-file cfg.py --eval-only --opts train.init_checkpoint=model_final.pth
    train_net.py --num-gpus 2 --num-machines 2 --machine-rank 0 --dist-url tcp://<host>:<port> --config-file cfg.py
"""


def get_parser():
    parser = default_argument_parser(epilog=EPILOG)
    parser.add_argument("--metrics-json", default="", help="write the final evaluation results to this JSON file")
    parser.add_argument("--trust-pickle", action="store_true", help=TRUST_PICKLE_HELP)
    parser.add_argument("--overwrite", action="store_true",
                        help="train into an output_dir that holds another run, replacing it (its model_final.pth, "
                        "last_checkpoint and metrics.json are removed first)")
    return with_opts(parser)  # --opts in place of detectron2's positional REMAINDER ``opts``


def parse_args(argv=None):
    """The command line, with every ``key=value`` override (``--opts`` or positional) in ``opts``."""
    return parse_tool_args(get_parser(), argv)


if __name__ == "__main__":
    args = parse_args()
    launch(
        main,
        args.num_gpus,
        num_machines=args.num_machines,
        machine_rank=args.machine_rank,
        dist_url=args.dist_url,
        args=(args,),
    )
