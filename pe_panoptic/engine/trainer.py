"""Training/evaluation plumbing on top of detectron2's engine.

* :class:`PETrainer`: detectron2 ``SimpleTrainer`` with autocast in fp16 or bf16 on any device
  (v0.6's ``AMPTrainer`` is CUDA/fp16 only), a GradScaler only where fp16 needs one, gradient
  accumulation (to reach the paper's effective batch on fewer GPUs) and gradient clipping.
* :func:`default_device`: ``cuda`` when available, else ``cpu``.
* :class:`IterationSeedHook`: reseeds the RNGs before every iteration from (seed, iteration,
  rank), so stochastic layers (drop path) draw the same numbers in a resumed run.
* :func:`ddp_kwargs`: ``DistributedDataParallel`` arguments for CUDA or CPU (gloo) processes.
* :func:`maybe_compile`: optional ``torch.compile`` of the network parts (``train.compile``).
"""
from __future__ import annotations

import contextlib
import logging
import time
from typing import List, Optional

import torch

from detectron2.engine import HookBase, SimpleTrainer
from detectron2.utils import comm

from pe_panoptic.modeling.meta_arch import split_diagnostics

__all__ = [
    "jsonable",
    "PETrainer",
    "default_device",
    "autocast_context",
    "IterationSeedHook",
    "ddp_kwargs",
    "maybe_compile",
]

logger = logging.getLogger(__name__)

_DTYPES = {"fp16": torch.float16, "float16": torch.float16, "bf16": torch.bfloat16, "bfloat16": torch.bfloat16}


def jsonable(x):
    """Evaluation results -> plain JSON types (numpy / torch scalars via ``.item()``, keys as str)."""
    if isinstance(x, dict):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    if hasattr(x, "item"):
        return x.item()
    return x


def default_device() -> str:
    """``cuda`` when available, else ``cpu`` (:func:`pe_panoptic.engine.device.resolve_device`)."""
    from pe_panoptic.engine.device import resolve_device

    return resolve_device("auto")


def autocast_context(device: str, enabled: bool, dtype: str = "bf16"):
    device_type = torch.device(device).type
    if dtype not in _DTYPES:
        raise ValueError(f"amp dtype must be one of {sorted(_DTYPES)}, got {dtype!r}")
    return torch.autocast(device_type=device_type, dtype=_DTYPES[dtype], enabled=enabled)


class PETrainer(SimpleTrainer):
    """SimpleTrainer + mixed precision (fp16/bf16, CUDA or CPU) + gradient accumulation.

    One trainer iteration consumes ``accumulate_steps`` batches from the loader and performs one
    optimizer step, so the effective batch is ``per-GPU batch x GPUs x accumulate_steps`` and
    ``max_iter`` counts optimizer steps.

    The model's training output may hold diagnostics next to the losses (keys prefixed
    ``diag/``, :func:`pe_panoptic.modeling.meta_arch.split_diagnostics`): they are averaged over
    the micro-batches and put into the event storage, never added to the loss. One task per
    optimizer step is the data's business (``dataloader.train.task_probs``): a loader that draws
    one must group ``accumulate_steps`` micro-batches per step (its ``batches_per_step``).
    ``seed`` is kept for callers; the trainer no longer uses it.
    """

    def __init__(self, model, data_loader, optimizer, *, amp: bool = False, amp_dtype: str = "bf16",
                 accumulate_steps: int = 1, clip_grad_norm: Optional[float] = None, device: str = "cpu",
                 seed: int = 0):
        super().__init__(model, data_loader, optimizer)
        if accumulate_steps < 1:
            raise ValueError(f"accumulate_steps must be >= 1, got {accumulate_steps}")
        self.amp = amp
        self.amp_dtype = amp_dtype
        self.device = device
        self.accumulate_steps = int(accumulate_steps)
        self.clip_grad_norm = clip_grad_norm
        self.seed = int(seed)
        per_step = getattr(data_loader, "batches_per_step", None)
        if getattr(data_loader, "task_probs", None) and per_step != self.accumulate_steps:
            raise ValueError(
                f"the train loader draws one task per {per_step} micro-batch(es) (dataloader.train.task_probs with "
                f"effective_batch_size / total_batch_size = {per_step}) but the trainer accumulates "
                f"{self.accumulate_steps} micro-batches per optimizer step: set "
                "dataloader.train.effective_batch_size='${train.effective_batch_size}'")
        use_scaler = amp and _DTYPES[amp_dtype] == torch.float16 and torch.device(device).type == "cuda"
        self.grad_scaler = torch.amp.GradScaler("cuda") if use_scaler else None

    def run_step(self):
        assert self.model.training, "[PETrainer] model was changed to eval mode!"
        self.optimizer.zero_grad(set_to_none=True)
        data_time = 0.0
        total, diagnostics = {}, {}
        for k in range(self.accumulate_steps):
            t0 = time.perf_counter()
            data = next(self._data_loader_iter)
            data_time += time.perf_counter() - t0
            sync = k == self.accumulate_steps - 1 or not hasattr(self.model, "no_sync")
            ctx = self.model.no_sync() if not sync else contextlib.nullcontext()
            with ctx:
                with autocast_context(self.device, self.amp, self.amp_dtype):
                    loss_dict, diag = split_diagnostics(self.model(data))
                loss_dict = {k_: v.float() for k_, v in loss_dict.items()}
                losses = sum(loss_dict.values()) / self.accumulate_steps
                if self.grad_scaler is not None:
                    self.grad_scaler.scale(losses).backward()
                else:
                    losses.backward()
            for k_, v in loss_dict.items():
                total[k_] = total.get(k_, 0.0) + v.detach() / self.accumulate_steps
            for k_, v in diag.items():
                diagnostics.setdefault(k_, []).append(float(v))
        if self.clip_grad_norm:
            if self.grad_scaler is not None:
                self.grad_scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(
                [p for g in self.optimizer.param_groups for p in g["params"]], self.clip_grad_norm
            )
        self._write_metrics(total, data_time)
        if diagnostics:
            self.storage.put_scalars(**{k_: sum(v) / len(v) for k_, v in diagnostics.items()}, smoothing_hint=True)
        if self.grad_scaler is not None:
            self.grad_scaler.step(self.optimizer)
            self.grad_scaler.update()
        else:
            self.optimizer.step()

    def state_dict(self):
        ret = super().state_dict()
        if self.grad_scaler is not None:
            ret["grad_scaler"] = self.grad_scaler.state_dict()
        return ret

    def load_state_dict(self, state_dict):
        super().load_state_dict(state_dict)
        if self.grad_scaler is not None and "grad_scaler" in state_dict:
            self.grad_scaler.load_state_dict(state_dict["grad_scaler"])


# ---------------------------------------------------------------------------------------------
class IterationSeedHook(HookBase):
    """Seed ``random``, ``numpy.random`` and torch (CPU and CUDA) before every iteration with a
    hash of ``(seed, iteration, rank)`` (as fairseq seeds every update).

    The random numbers of iteration ``i`` (drop path, dropout, ...) then depend only on ``i``, not
    on how many iterations this process has run, so a run resumed from a checkpoint continues
    exactly as the uninterrupted run (together with
    :class:`pe_panoptic.data.resumable.ResumableTrainLoader` for the data).
    """

    def __init__(self, seed: int):
        self.seed = int(seed)

    def iteration_seed(self, iteration: int) -> int:
        import numpy as np

        words = [self.seed % (2**63), int(iteration), comm.get_rank()]
        return int(np.random.SeedSequence(words).generate_state(1)[0])

    def before_step(self):
        import random

        import numpy as np

        s = self.iteration_seed(self.trainer.iter)
        random.seed(s)
        np.random.seed(s)
        torch.manual_seed(s)  # all devices


def ddp_kwargs(device: str, **kwargs) -> dict:
    """Keyword arguments for detectron2's ``create_ddp_model``: CPU modules (gloo) need
    ``device_ids=None`` (detectron2 v0.6 always passes the local rank, which is CUDA-only)."""
    out = dict(kwargs)
    if torch.device(device).type != "cuda":
        out.setdefault("device_ids", None)
    return out


def maybe_compile(model: torch.nn.Module, spec=False, modules=("backbone", "decoder", "heads")) -> torch.nn.Module:
    """Compile ``model`` in place with ``torch.compile`` according to ``spec`` (``train.compile``):
    ``False``/``None`` -> nothing; ``True`` -> default options; a dict -> ``torch.compile``
    keyword arguments (``backend``, ``mode``, ``dynamic``, ...) plus an optional ``enabled``.

    Only the submodules named in ``modules`` that exist are compiled (the network; the loss and the
    post-processing have data-dependent control flow), with ``nn.Module.compile`` so parameter
    names (and thus checkpoints) are unchanged. A model with none of them is compiled whole.
    Returns ``model``.
    """
    if not spec:
        return model
    options = {} if spec is True else dict(spec)
    if not options.pop("enabled", True):
        return model
    targets = [getattr(model, n) for n in modules if isinstance(getattr(model, n, None), torch.nn.Module)]
    for m in targets or [model]:
        m.compile(**options)
    logger.info(f"torch.compile {options or '(defaults)'} on {[n for n in modules if hasattr(model, n)] or 'model'}")
    return model
