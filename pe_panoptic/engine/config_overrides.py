"""Checked ``key=value`` overrides of a LazyConfig, shared by every tool.

detectron2's ``LazyConfig.apply_overrides`` accepts any key (a typo such as
``train.max_itr=3`` silently adds a key nobody reads) and any value (``train.max_iter=abc``
fails much later with an unrelated error). :func:`apply_overrides` checks every override first
and then lets detectron2 apply them (same hydra grammar):

* **the key must exist** in the loaded config, or be a parameter of the callable of the
  ``LazyCall`` node it lands in (e.g. ``model.backbone.grad_checkpointing`` when the config does
  not set it). Otherwise the error names the override and suggests the nearest existing key
  (``difflib``). ``+key=value`` adds a new key on purpose (hydra's syntax), without checks.
* **the value must have the type of the value it replaces**: a bool for a bool, an int for an
  int, a number (int or float) for a float, a string (or a list / dict) for a string. ``null``
  is accepted everywhere; lists, dicts, ``None`` and interpolations (``${...}``) are not checked.
  Where a parameter accepts several types the declared alternatives are accepted too: the type
  hint of the ``LazyCall`` target's parameter (e.g. the mapper's ``input_size: int | (h, w)``)
  and, for the plain ``train`` dict, :data:`TRAIN_KEY_TYPES`, the optional keys that
  ``tools/train_net.py`` reads with a default (valid even where a config does not set them).

All problems are reported together in one :class:`ConfigOverrideError`.
"""
from __future__ import annotations

import collections.abc
import difflib
import inspect
import os
import typing
from typing import Any, Dict, List, Literal, Optional, Sequence, Tuple, Union

__all__ = ["ConfigOverrideError", "TRAIN_KEY_TYPES", "apply_overrides", "check_overrides", "load_config"]

#: optional keys of the plain ``train`` dict that tools/train_net.py reads with a default, and
#: their types (several for some): valid overrides even where a config does not set them
TRAIN_KEY_TYPES: Dict[str, Any] = {
    "train.device": str,
    "train.amp": Dict[str, Any],
    "train.amp.enabled": bool,
    "train.amp.dtype": Literal["bf16", "bfloat16", "fp16", "float16"],
    "train.ddp": Dict[str, Any],
    "train.accumulate_steps": Union[int, Literal["auto"]],
    "train.effective_batch_size": Optional[int],
    "train.clip_grad_norm": Optional[float],
    "train.compile": Union[bool, Dict[str, Any]],
    "train.seed": int,
    "train.learning_curve": bool,
    "train.init_checkpoint_allow_mismatch": List[str],
}

_MISSING = object()


class ConfigOverrideError(ValueError):
    """One or more ``key=value`` overrides do not fit the loaded config; the message names each."""


def load_config(config_file: str, overrides: Sequence[str] = ()):
    """``LazyConfig.load(config_file)`` with :func:`apply_overrides` applied. A saved run's
    ``config.yaml`` that names modules from before the package reorganization is read with
    today's names (:mod:`pe_panoptic.engine.moved_modules`), and its mappers' former arguments as
    target builders (:mod:`pe_panoptic.engine.legacy_mapper`)."""
    from detectron2.config import LazyConfig

    from pe_panoptic.engine.legacy_mapper import upgrade_mapper_args
    from pe_panoptic.engine.moved_modules import upgrade_config

    if not os.path.isfile(config_file):
        raise FileNotFoundError(f"config file {config_file!r} not found")
    cfg = LazyConfig.load(config_file)
    if config_file.endswith((".yaml", ".yml")):  # a saved run's config may name pre-reorganization modules
        upgrade_config(cfg, source=config_file)
        upgrade_mapper_args(cfg, source=config_file)
    return apply_overrides(cfg, overrides, source=config_file)


def apply_overrides(cfg, overrides: Sequence[str], source: str = "the config"):
    """Check ``overrides`` against ``cfg`` (:func:`check_overrides`), then apply them in place
    with detectron2's ``LazyConfig.apply_overrides``. Returns ``cfg``."""
    from detectron2.config import LazyConfig

    overrides = list(overrides or [])
    check_overrides(cfg, overrides, source)
    return LazyConfig.apply_overrides(cfg, overrides)


def check_overrides(cfg, overrides: Sequence[str], source: str = "the config") -> None:
    """Raise :class:`ConfigOverrideError` listing every override whose key is not in ``cfg`` or
    whose value has the wrong type (see the module docstring)."""
    problems = []
    for text, key, value, adds in _parse(overrides):
        if adds:
            continue
        why = _check_one(cfg, key, value)
        if why:
            problems.append(f"{text!r}: {why}")
    if problems:
        raise ConfigOverrideError(f"invalid override{'s' if len(problems) > 1 else ''} of {source}:\n  "
                                  + "\n  ".join(problems))


# ------------------------------------------------------------------------------------------------
def _parse(overrides: Sequence[str]) -> List[Tuple[str, str, Any, bool]]:
    """``[(text, key, value, adds_new_key)]`` with hydra's override grammar (as detectron2)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    parser = OverridesParser.create()
    out = []
    for text in overrides:
        if not isinstance(text, str) or "=" not in text:
            raise ConfigOverrideError(f"override {text!r}: expected key=value")
        try:
            o = parser.parse_override(text)
            value = o.value()
        except HydraException as e:
            raise ConfigOverrideError(f"override {text!r}: cannot parse it: {e}") from None
        if o.is_delete():
            raise ConfigOverrideError(f"override {text!r}: deleting keys is not supported")
        out.append((text, o.key_or_group, value, o.is_add() or o.is_force_add()))
    return out


def _check_one(cfg, key: str, value) -> Optional[str]:
    from omegaconf import OmegaConf

    parts = key.split(".")
    node = cfg
    for i, part in enumerate(parts):
        here = ".".join(parts[: i + 1])
        last = i == len(parts) - 1
        if OmegaConf.is_list(node):
            if not (part.lstrip("-").isdigit() and -len(node) <= int(part) < len(node)):
                return f"{'.'.join(parts[:i])} is a list of {len(node)} items: no index {part}"
            child = node[int(part)]
            hint = _MISSING
        elif OmegaConf.is_dict(node):
            hint = _param_hint(node, part)
            if hint is _MISSING and ".".join(parts[: i + 1]) in TRAIN_KEY_TYPES:
                hint = TRAIN_KEY_TYPES[".".join(parts[: i + 1])]
            if part not in node.keys():
                if hint is not _MISSING:  # a parameter of the LazyCall target / train_net option, not set
                    if last and hint is not None and not _matches(value, hint, unknown=True):
                        return f"{here} expects {_hint_str(hint)}, got {_value_str(value)}"
                    return None
                return f"{here} is not a key of the config{_suggestion(cfg, parts, i)}"
            if last and OmegaConf.is_interpolation(node, part):
                return None  # the type of an interpolation is only known when it is resolved
            try:
                child = node[part]
            except Exception:  # noqa: BLE001  (an interpolation that cannot be resolved here)
                return None
        else:
            return f"{'.'.join(parts[:i])} is {_value_str(node)}, not a config: it has no key {part!r}"
        if last:
            if hint not in (_MISSING, None) and _matches(value, hint, unknown=False):
                return None
            return _type_problem(here, child, value)
        node = child
    return None


def _type_problem(key: str, old, new) -> Optional[str]:
    """Message if ``new`` cannot replace the scalar ``old`` (None if it can)."""
    if new is None or old is None:
        return None
    if isinstance(old, bool):
        ok, want = isinstance(new, bool), "a bool (True / False)"
    elif isinstance(old, int):
        ok, want = isinstance(new, int) and not isinstance(new, bool), "an int"
    elif isinstance(old, float):
        ok, want = isinstance(new, (int, float)) and not isinstance(new, bool), "a number"
    elif isinstance(old, str):
        ok, want = not isinstance(new, (bool, int, float)), "a string"
    else:
        return None  # lists, dicts and objects are not checked
    if ok:
        return None
    return f"{key} expects {want} (the config has {old!r}), got {_value_str(new)}"


def _value_str(value) -> str:
    kind = {bool: "bool", int: "int", float: "float", str: "string"}.get(type(value), type(value).__name__)
    return f"the {kind} {value!r}"


# ------------------------------------------------------------------------------------------------
# LazyCall targets: parameters and their type hints
# ------------------------------------------------------------------------------------------------
def _target(node):
    from omegaconf import OmegaConf

    if not OmegaConf.is_dict(node) or "_target_" not in node.keys():
        return None
    target = node["_target_"]
    if isinstance(target, str):
        from detectron2.utils.registry import locate

        try:
            target = locate(target)
        except Exception:  # noqa: BLE001
            return None
    return target if callable(target) else None


def _signature_params(target) -> Dict[str, inspect.Parameter]:
    try:
        sig = inspect.signature(target)
    except (TypeError, ValueError):
        return {}
    return {n: p for n, p in sig.parameters.items() if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}


def _param_hint(node, name: str):
    """Type hint of parameter ``name`` of the node's LazyCall target: ``_MISSING`` when the node
    is not a LazyCall or the target has no such parameter; ``None`` when it has no hint."""
    target = _target(node)
    if target is None:
        return _MISSING
    params = _signature_params(target)
    if name not in params:
        return _MISSING
    try:
        fn = target.__init__ if inspect.isclass(target) else target
        hints = typing.get_type_hints(fn)
    except Exception:  # noqa: BLE001  (unresolvable forward references)
        hints = {}
    return hints.get(name)


def _matches(value, hint, unknown: bool) -> bool:
    """Whether ``value`` (parsed from the command line) fits the type hint; hints that a command
    line value cannot be checked against (classes such as ``torch.Tensor``, callables) give
    ``unknown``."""
    if hint is Any or hint is None:
        return True
    if hint is type(None):
        return value is None
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Union:
        return any(_matches(value, a, unknown) for a in args)
    if origin is Literal:
        return value in args
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    base = origin or hint
    if base in (list, tuple):
        return isinstance(value, (list, tuple))
    if base in (dict, collections.abc.Mapping):
        return isinstance(value, dict)
    if base in (collections.abc.Sequence, collections.abc.Iterable):
        return isinstance(value, (list, tuple, str))
    return unknown


def _hint_str(hint) -> str:
    return hint.__name__ if isinstance(hint, type) else str(hint).replace("typing.", "")


# ------------------------------------------------------------------------------------------------
# suggestions
# ------------------------------------------------------------------------------------------------
def _keys_of(node, path: str) -> List[str]:
    """Valid keys under ``node`` (at dotted ``path``): its own, its LazyCall target's parameters
    and the optional train_net keys of :data:`TRAIN_KEY_TYPES`."""
    from omegaconf import OmegaConf

    if not OmegaConf.is_dict(node):
        return []
    keys = [str(k) for k in node.keys()]
    target = _target(node)
    if target is not None:
        keys += [k for k in _signature_params(target) if k not in keys]
    prefix = path + "." if path else ""
    keys += [k[len(prefix):] for k in TRAIN_KEY_TYPES
             if k.startswith(prefix) and "." not in k[len(prefix):] and k[len(prefix):] not in keys]
    return keys


def _all_paths(node, prefix: str = "", depth: int = 0) -> List[str]:
    from omegaconf import OmegaConf

    out = []
    for k in _keys_of(node, prefix.rstrip(".")):
        path = f"{prefix}{k}"
        out.append(path)
        if depth < 8 and k in node.keys() and not OmegaConf.is_interpolation(node, k):
            try:
                child = node[k]
            except Exception:  # noqa: BLE001
                continue
            out += _all_paths(child, path + ".", depth + 1)
    return out


def _suggestion(cfg, parts: List[str], i: int) -> str:
    """`` (did you mean 'x.y'?)``: a sibling with a close name, else the closest full key."""
    parent = cfg
    for p in parts[:i]:
        parent = parent[int(p)] if p.lstrip("-").isdigit() else parent[p]
    prefix = ".".join(parts[:i]) + "." if i else ""
    keys = _keys_of(parent, ".".join(parts[:i]))
    close = difflib.get_close_matches(parts[i], keys, n=1, cutoff=0.6)
    if close:
        guess = prefix + close[0] + ("." + ".".join(parts[i + 1:]) if i + 1 < len(parts) else "")
    else:
        matches = difflib.get_close_matches(".".join(parts), _all_paths(cfg), n=1, cutoff=0.6)
        if not matches:
            more = " ..." if len(keys) > 20 else ""
            return f" ({prefix.rstrip('.') or 'the config'} has {', '.join(keys[:20])}{more})"
        guess = matches[0]
    return f" (did you mean {guess!r}? To add a new key on purpose, write +{'.'.join(parts)}=...)"
