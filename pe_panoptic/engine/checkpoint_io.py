"""Strict model-checkpoint loading, used by every tool (train_net, demo, export, compare,
eval_postprocess, analyze_sizes, run_demo).

detectron2's ``DetectionCheckpointer`` loads whatever fits and only *warns* about the rest
("Skip loading parameter", missing / unexpected keys), so a checkpoint of another architecture
evaluates a partly random model with exit code 0; it unpickles ``.pkl`` files with
``pickle.load`` (which runs any code the file contains); and a file that is not a checkpoint
fails deep inside ``torch.load``. :class:`StrictCheckpointer` is a ``DetectionCheckpointer``
(same file formats, model-zoo name conversions, DDP handling and ``--resume``) that instead:

* **refuses pickles unless trusted**: ``.pkl`` files (and ``.pth`` files holding Python objects
  other than tensors and plain containers, which ``torch.load(weights_only=True)`` rejects) are
  loaded only with ``trust_pickle=True`` (the tools' ``--trust-pickle`` flag);
* **names a file that is not a checkpoint** (neither a zip nor a pickle, or unreadable);
* **refuses non-finite tensors** (NaN / inf), naming the keys, before anything is loaded;
* **fails on every skipped (shape mismatch), missing or unexpected key**, naming them, except
  keys under one of the ``allow_mismatch`` prefixes (``train.init_checkpoint_allow_mismatch``:
  a new head when fine-tuning from another task). The allowance never applies when resuming
  (:meth:`StrictCheckpointer.resume_or_load` with ``resume=True``): a run's own checkpoint must
  match exactly. Parameters and buffers a module fills in itself when the checkpoint lacks them
  (detectron2's ``FrozenBatchNorm2d`` "upgrade" puts 0 / 1 running statistics in place of a
  GroupNorm checkpoint's missing ones) count as missing too;
* **writes atomically** (:mod:`pe_panoptic.engine.checkpoint_files`): every checkpoint and
  ``last_checkpoint`` goes through a temporary file, fsync and rename, so a killed process never
  leaves a 0-byte or truncated file; a full disk is named (ENOSPC and the file);
* **falls back on resume**: an empty ``last_checkpoint``, or one naming a missing / truncated
  file, resumes from the newest complete ``model_*.pth`` of the folder, with a warning.

:func:`load_weights` loads a model's weights from one file with these rules.
"""
from __future__ import annotations

import contextlib
import os
import pickle
from collections import OrderedDict
from typing import Any, Dict, Iterable, List, Mapping, Sequence

import numpy as np
import torch
from detectron2.checkpoint import DetectionCheckpointer

from pe_panoptic.engine.checkpoint_files import atomic_write, checkpoint_file_problem, newest_valid_checkpoint

__all__ = [
    "CheckpointError",
    "UntrustedCheckpointError",
    "StrictCheckpointer",
    "load_weights",
    "TRUST_PICKLE_HELP",
]

TRUST_PICKLE_HELP = ("load .pkl checkpoints (and .pth files holding Python objects): unpickling runs code "
                     "stored in the file, so only for files you trust, e.g. detectron2 model-zoo weights")

_ZIP_MAGIC = b"PK\x03\x04"  # torch.save's default format
_PICKLE_PROTO = b"\x80"  # legacy torch.save / pickle protocol >= 2
_MAX_NAMED = 12  # keys listed in an error message


class CheckpointError(ValueError):
    """A checkpoint file cannot be used for this model; the message names the file and keys."""


class UntrustedCheckpointError(CheckpointError):
    """Loading the file would unpickle arbitrary Python objects and the caller did not trust it."""


def _names(items: Sequence[str]) -> str:
    items = list(items)
    more = f" ... ({len(items) - _MAX_NAMED} more)" if len(items) > _MAX_NAMED else ""
    return ", ".join(items[:_MAX_NAMED]) + more


class StrictCheckpointer(DetectionCheckpointer):
    """``DetectionCheckpointer`` with the strict rules of this module.

    Args:
        trust_pickle: allow loading files that unpickle Python objects (``.pkl`` model-zoo files).
        allow_mismatch: key prefixes (model / checkpoint parameter names, e.g. ``"heads.sem."``)
            that may be missing, unexpected or of another shape when loading (not resuming).
        Other arguments as ``DetectionCheckpointer``.
    """

    def __init__(self, model, save_dir: str = "", *, trust_pickle: bool = False,
                 allow_mismatch: Iterable[str] = (), **kwargs):
        super().__init__(model, save_dir, **kwargs)
        self.trust_pickle = bool(trust_pickle)
        if isinstance(allow_mismatch, str):
            allow_mismatch = [allow_mismatch]
        self.allow_mismatch = tuple(str(p) for p in (allow_mismatch or ()))
        if any(not p.strip() for p in self.allow_mismatch):
            raise ValueError(f"allow_mismatch={list(self.allow_mismatch)!r}: an empty prefix would allow every key "
                             "(train.init_checkpoint_allow_mismatch takes key prefixes such as 'heads.sem.')")
        self._file = "<checkpoint>"
        self._resuming = False

    # -------------------------------------------------------------------------------- saving
    def save(self, name: str, **kwargs: Any) -> None:
        """``Checkpointer.save`` (same content), written atomically."""
        if not self.save_dir or not self.save_to_disk:
            return
        data = {"model": self.model.state_dict()}
        for key, obj in self.checkpointables.items():
            data[key] = obj.state_dict()
        data.update(kwargs)
        basename = f"{name}.pth"
        save_file = os.path.join(self.save_dir, basename)
        self.logger.info(f"Saving checkpoint to {save_file}")
        atomic_write(save_file, lambda f: torch.save(data, f))
        self.tag_last_checkpoint(basename)

    def tag_last_checkpoint(self, last_filename_basename: str) -> None:
        atomic_write(os.path.join(self.save_dir, "last_checkpoint"),
                     lambda f: f.write(last_filename_basename.encode()))

    def get_checkpoint_file(self) -> str:
        """The file ``last_checkpoint`` names, or, if it is empty or names a missing / truncated
        file, the newest complete ``model_*.pth`` of the folder (with a warning)."""
        tag = os.path.join(self.save_dir, "last_checkpoint")
        try:
            with open(tag) as f:
                named = f.read().strip()
        except OSError:
            named = ""
        path = os.path.join(self.save_dir, named) if named else ""
        why = checkpoint_file_problem(path) if path else f"{tag} is empty"
        if why is None:
            return path
        problems: List[str] = [f"{path}: {why}" if path else why]
        fallback = newest_valid_checkpoint(self.save_dir, problems)
        if fallback is None:
            raise CheckpointError(f"cannot resume from {self.save_dir}: no complete checkpoint "
                                  f"({'; '.join(problems)})")
        self.logger.warning(f"{'; '.join(problems)}: resuming from {fallback}, the newest complete checkpoint "
                            f"in {self.save_dir}")
        return fallback

    # -------------------------------------------------------------------------------- loading
    def load(self, path: str, *args, **kwargs) -> Dict[str, Any]:
        if path:
            self._file = str(path)
            local = self.path_manager.get_local_path(path)
            if not os.path.isfile(local):
                raise FileNotFoundError(f"checkpoint {path} not found")
        return super().load(path, *args, **kwargs)

    def resume_or_load(self, path: str, *, resume: bool = True) -> Dict[str, Any]:
        """Resume from ``last_checkpoint`` (strict, every key must match) or load ``path``
        (weights only; ``allow_mismatch`` applies)."""
        if resume and self.has_checkpoint():
            self._resuming = True
            try:
                return self.load(self.get_checkpoint_file())
            finally:
                self._resuming = False
        return self.load(path, checkpointables=[])

    def _load_file(self, filename: str) -> Dict[str, Any]:
        name = self._file
        if filename.endswith(".pkl"):
            if not self.trust_pickle:
                raise UntrustedCheckpointError(
                    f"refusing to load {name}: .pkl files are Python pickles, and unpickling runs any code "
                    f"stored in them. If you trust this file (e.g. detectron2 model-zoo weights), pass "
                    f"--trust-pickle.")
            try:
                return super()._load_file(filename)
            except (pickle.UnpicklingError, EOFError, ValueError, TypeError, KeyError, AttributeError) as e:
                raise CheckpointError(f"{name} is not a checkpoint: cannot unpickle it "
                                      f"({type(e).__name__}: {e})") from e
        with open(filename, "rb") as f:
            head = f.read(4)
        if not (head.startswith(_ZIP_MAGIC) or head.startswith(_PICKLE_PROTO)):
            raise CheckpointError(f"{name} is not a checkpoint: it is neither a torch.save zip archive nor "
                                  f"a pickle (first bytes {head!r})")
        try:
            loaded = torch.load(filename, map_location="cpu", weights_only=not self.trust_pickle)
        except pickle.UnpicklingError as e:
            if "weights only" in str(e).lower() or "weights_only" in str(e):
                raise UntrustedCheckpointError(
                    f"refusing to load {name}: it holds Python objects other than tensors and plain "
                    f"containers, which only a full unpickling (that can run code) restores. If you trust "
                    f"this file, pass --trust-pickle. ({str(e).splitlines()[-1].strip()[:300]})") from e
            raise CheckpointError(f"{name} is not a checkpoint: {type(e).__name__}: {e}") from e
        except Exception as e:  # noqa: BLE001  (corrupt / truncated archives raise many types)
            raise CheckpointError(f"{name} is not a readable checkpoint: {type(e).__name__}: {e}") from e
        if not isinstance(loaded, Mapping):
            raise CheckpointError(f"{name} is not a checkpoint: it holds a {type(loaded).__name__}, "
                                  "not a state dict")
        loaded = dict(loaded)
        if "model" not in loaded:
            loaded = {"model": loaded}
        return loaded

    def _load_model(self, checkpoint: Dict[str, Any]):
        state = checkpoint.get("model")
        if not isinstance(state, Mapping):
            raise CheckpointError(f"{self._file}: 'model' is a {type(state).__name__}, not a state dict")
        self._check_values(state)
        checkpoint["model"] = self._with_current_versions(state)
        with _self_filled_keys(self.model) as filled:
            incompatible = super()._load_model(checkpoint)
        incompatible.missing_keys.extend(k for k in filled if k not in incompatible.missing_keys)
        self._check_compatible(incompatible)
        return incompatible

    def _with_current_versions(self, state: Mapping) -> Mapping:
        """A state dict without PyTorch's ``_metadata`` (e.g. numpy arrays from a ``.pkl``) loads
        as if written by version 1 of every module, and modules with a ``_version`` rename such
        "old" keys in ``_load_from_state_dict`` (Mask2Former's ``MaskFormerHead`` moves every
        ``sem_seg_head.*`` key under ``pixel_decoder.``). When the keys are exactly the model's
        own, there is nothing to convert: the model's current versions are attached, so the keys
        load unchanged. Any other layout keeps detectron2's behaviour (legacy conversions)."""
        if getattr(state, "_metadata", None) is not None:
            return state
        own = self.model.state_dict()
        if set(state) != set(own):
            return state
        state = OrderedDict(state)
        state._metadata = own._metadata
        return state

    # -------------------------------------------------------------------------------- checks
    def _allowed(self, key: str) -> bool:
        return not self._resuming and any(key.startswith(p) for p in self.allow_mismatch)

    def _check_values(self, state: Mapping) -> None:
        """Every value is a tensor / array; no NaN or inf anywhere."""
        not_tensors = [f"{k} ({type(v).__name__})" for k, v in state.items()
                       if not isinstance(v, (torch.Tensor, np.ndarray))]
        if not_tensors:
            raise CheckpointError(f"{self._file}: the state dict has entries that are not tensors: "
                                  f"{_names(not_tensors)}")
        bad = []
        for k, v in state.items():
            t = torch.as_tensor(v) if isinstance(v, np.ndarray) else v
            if (t.is_floating_point() or t.is_complex()) and t.numel() and not bool(torch.isfinite(t).all()):
                n = int((~torch.isfinite(t)).sum())
                bad.append(f"{k} ({n} of {t.numel()} values)")
        if bad:
            raise CheckpointError(f"{self._file}: non-finite (NaN / inf) weights in {_names(bad)}; "
                                  "refusing to load them (the run that wrote this checkpoint diverged?)")

    def _check_compatible(self, incompatible) -> None:
        from fvcore.common.checkpoint import _filter_reused_missing_keys

        shapes = [(k, a, b) for k, a, b in incompatible.incorrect_shapes if not self._allowed(k)]
        shape_keys = {k for k, _, _ in incompatible.incorrect_shapes}
        missing = sorted(k for k in _filter_reused_missing_keys(self.model, incompatible.missing_keys)
                         if k not in shape_keys and not self._allowed(k))
        unexpected = sorted(k for k in incompatible.unexpected_keys if not self._allowed(k))
        if not (shapes or missing or unexpected):
            return
        lines = [f"{self._file} does not fit the model (wrong architecture or config?):"]
        if shapes:
            lines.append(f"  {len(shapes)} parameters of another shape (checkpoint vs model): "
                         + _names([f"{k} {tuple(a)} vs {tuple(b)}" for k, a, b in shapes]))
        if missing:
            lines.append(f"  {len(missing)} model parameters missing from the checkpoint: {_names(missing)}")
        if unexpected:
            lines.append(f"  {len(unexpected)} checkpoint parameters the model does not have: {_names(unexpected)}")
        if self._resuming:
            lines.append("  (resuming: the run's own checkpoint must match the model exactly)")
        else:
            lines.append("  Keys that may differ on purpose (a new head when fine-tuning) can be allowed by prefix "
                         "with train.init_checkpoint_allow_mismatch=[...] (tools/train_net.py, training only).")
        raise CheckpointError("\n".join(lines))


@contextlib.contextmanager
def _self_filled_keys(model: torch.nn.Module):
    """Collect the parameter / buffer keys that a module's own ``_load_from_state_dict`` filled in
    while loading, although the state dict did not have them (``FrozenBatchNorm2d`` inserts
    running_mean = 0 and running_var = 1 for checkpoints "older than version 2", e.g. a GroupNorm
    model's), so that they count as missing keys. Only modules that override
    ``_load_from_state_dict`` can do that; they are wrapped for the duration of the load."""
    filled: List[str] = []

    def wrap(module, original):
        def load(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs):
            own = [n for n, p in module._parameters.items() if p is not None]
            own += [n for n, b in module._buffers.items()
                    if b is not None and n not in module._non_persistent_buffers_set]
            absent = [prefix + n for n in own if prefix + n not in state_dict]
            original(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs)
            filled.extend(k for k in absent if k not in missing_keys)
        return load

    patched = [m for m in model.modules()
               if type(m)._load_from_state_dict is not torch.nn.Module._load_from_state_dict]
    for m in patched:
        m._load_from_state_dict = wrap(m, m._load_from_state_dict)
    try:
        yield filled
    finally:
        for m in patched:
            m.__dict__.pop("_load_from_state_dict", None)


def load_weights(model: torch.nn.Module, path: str, *, trust_pickle: bool = False,
                 allow_mismatch: Iterable[str] = ()) -> Dict[str, Any]:
    """Load the weights of checkpoint ``path`` into ``model`` with :class:`StrictCheckpointer`'s
    rules; returns the checkpoint's other entries (``iteration``, ...)."""
    if not path:
        raise ValueError("load_weights: no checkpoint path given")
    return StrictCheckpointer(model, trust_pickle=trust_pickle, allow_mismatch=allow_mismatch).load(path)

