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
  match exactly.

:func:`load_weights` loads a model's weights from one file with these rules.
"""
from __future__ import annotations

import os
import pickle
from collections import OrderedDict
from typing import Any, Dict, Iterable, Mapping, Sequence

import numpy as np
import torch
from detectron2.checkpoint import DetectionCheckpointer

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
        self._file = "<checkpoint>"
        self._resuming = False

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
        incompatible = super()._load_model(checkpoint)
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


def load_weights(model: torch.nn.Module, path: str, *, trust_pickle: bool = False,
                 allow_mismatch: Iterable[str] = ()) -> Dict[str, Any]:
    """Load the weights of checkpoint ``path`` into ``model`` with :class:`StrictCheckpointer`'s
    rules; returns the checkpoint's other entries (``iteration``, ...)."""
    if not path:
        raise ValueError("load_weights: no checkpoint path given")
    return StrictCheckpointer(model, trust_pickle=trust_pickle, allow_mismatch=allow_mismatch).load(path)

