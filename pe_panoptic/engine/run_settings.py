"""Settings of a training run checked before anything runs (``tools/train_net.py``).

* :func:`check_train_settings`: ``train.max_iter`` an int >= 1 (``-5`` trained nothing and
  evaluated a random model, ``0`` divided by zero), ``train.amp.dtype`` one of the supported
  dtypes (``fp8`` passed the override check, then ``KeyError``), ``train.output_dir`` not empty
  (a raw ``FileNotFoundError``), no empty prefix in ``train.init_checkpoint_allow_mismatch``
  (``''`` allowed every key).
* :func:`resume_schedule_changes`: on ``--resume``, the optimizer / ``lr_multiplier`` /
  ``train.max_iter`` values that differ from the run's ``config.yaml``. A resumed run restores the
  optimizer's learning rates from its checkpoint, so a changed ``optimizer.lr`` was silently
  ignored while ``config.yaml`` recorded it; :func:`check_resume_schedule` refuses such changes,
  naming each ``key: old -> new`` (never a recorded value that was not used).
"""
from __future__ import annotations

import os
from typing import Any, Dict, List, Optional, Sequence

__all__ = ["SettingsError", "SCHEDULE_KEYS", "check_train_settings", "resume_schedule_changes",
           "check_resume_schedule"]

#: config keys (and key prefixes) that define the optimization schedule of a run
SCHEDULE_KEYS = ("optimizer.", "lr_multiplier.", "train.max_iter")
_NOT_COMPARED = ("optimizer.params.model",)  # the model, set at run time


class SettingsError(ValueError):
    """A setting of the run cannot be used; the message names the key, the value and the way out."""


def check_train_settings(cfg, *, eval_only: bool = False) -> None:
    """Raise :class:`SettingsError` for the settings listed in the module docstring."""
    from pe_panoptic.engine.trainer import _DTYPES

    train = cfg.train
    out = train.get("output_dir", None)
    if not isinstance(out, str) or not out.strip():
        raise SettingsError(f"train.output_dir={out!r}: give the folder the run writes to "
                            "(train.output_dir=<folder>)")
    if not eval_only:
        it = train.get("max_iter", None)
        if isinstance(it, bool) or not isinstance(it, int) or it < 1:
            raise SettingsError(f"train.max_iter={it!r}: the number of iterations must be an int >= 1 "
                                "(to only evaluate a checkpoint, use --eval-only train.init_checkpoint=<file>)")
    amp = train.get("amp", None) or {}
    dtype = amp.get("dtype", "bf16")
    if dtype not in _DTYPES:
        raise SettingsError(f"train.amp.dtype={dtype!r} is not supported: use one of {sorted(_DTYPES)}")
    prefixes = train.get("init_checkpoint_allow_mismatch", None) or []
    prefixes = [prefixes] if isinstance(prefixes, str) else list(prefixes)
    empty = [p for p in prefixes if not isinstance(p, str) or not p.strip()]
    if empty:
        raise SettingsError(f"train.init_checkpoint_allow_mismatch={prefixes!r}: an empty prefix would allow every "
                            "key to be missing or of another shape; give key prefixes such as 'heads.sem.'")


def _flat(node: Any, prefix: str, out: Dict[str, Any]) -> Dict[str, Any]:
    from omegaconf import DictConfig, ListConfig, OmegaConf

    if isinstance(node, DictConfig):
        node = OmegaConf.to_container(node, resolve=False)
    elif isinstance(node, ListConfig):
        node = OmegaConf.to_container(node, resolve=False)
    if isinstance(node, dict):
        for k, v in node.items():
            _flat(v, f"{prefix}.{k}" if prefix else str(k), out)
    else:
        out[prefix] = node
    return out


def _comparable(key: str, value: Any) -> Any:
    if key.endswith("._target_"):
        if isinstance(value, str):
            from detectron2.utils.registry import locate

            try:
                value = locate(value)
            except Exception:  # noqa: BLE001  (an old name that no longer exists: compare as text)
                return value
        return f"{getattr(value, '__module__', '')}.{getattr(value, '__qualname__', value)}"
    if isinstance(value, tuple):
        return list(value)
    return value


def resume_schedule_changes(old_cfg, new_cfg, keys: Sequence[str] = SCHEDULE_KEYS) -> List[str]:
    """``"key: old -> new"`` for every schedule key whose value differs between the configs."""
    def pick(cfg):
        flat = {}
        for top in ("optimizer", "lr_multiplier", "train"):
            if top in cfg:
                _flat(cfg[top], top, flat)
        return {k: _comparable(k, v) for k, v in flat.items()
                if any(k == p.rstrip(".") or k.startswith(p) for p in keys)
                and not any(k == n or k.startswith(n + ".") for n in _NOT_COMPARED)}

    old, new = pick(old_cfg), pick(new_cfg)
    absent = "<not set>"
    return [f"{k}: {old.get(k, absent)!r} -> {new.get(k, absent)!r}"
            for k in sorted(set(old) | set(new)) if old.get(k, absent) != new.get(k, absent)]


def check_resume_schedule(output_dir: str, cfg) -> None:
    """Compare ``cfg`` with ``<output_dir>/config.yaml`` (if the run has one) and raise
    :class:`SettingsError` naming every changed optimizer / schedule value: a resumed run continues
    with the values its checkpoint restores, so a changed value would be recorded but not used."""
    path = os.path.join(output_dir, "config.yaml")
    if not os.path.isfile(path):
        return
    from pe_panoptic.engine.config_overrides import load_config

    changes = resume_schedule_changes(load_config(path), cfg)
    if changes:
        raise SettingsError(
            f"--resume of {output_dir} with optimizer / schedule values other than the run's ({path}):\n  "
            + "\n  ".join(changes)
            + "\nThe resumed run would continue with its own values (restored from its checkpoint). Resume without "
            "these overrides, or train into a new folder (train.init_checkpoint=<its model_final.pth> starts "
            "from its weights with the new values).")

