"""One override syntax for every tool: ``--opts KEY=VALUE ...``.

Positional ``KEY=VALUE`` overrides placed after an option that takes several values
(``--decoders vote nn "model.postprocess.grid=[16,16]"``) used to be swallowed by that option
(argparse: "invalid choice"), ``--`` was taken as an override, and detectron2's positional
``opts`` (``argparse.REMAINDER``) swallowed every option after the first override
(``train_net.py ... a=b --resume``: ``--resume`` became an override).

:func:`parse_tool_args` is what every tool's ``parse_args`` calls: it gives the parser (or each of
its subcommands that takes overrides) ``--opts``, takes the ``KEY=VALUE`` tokens out of the command
line wherever they are (:func:`split_overrides`; not the value of a single-value option such as
``--output-dir a=b``, nor the values of options named ``verbatim`` such as ``--entries
name=config.py``), drops a bare ``--``, parses the rest and sets ``args.opts`` to the overrides in
command-line order. So ``--opts a=b`` and a positional ``a=b`` mean the same, anywhere on the line.
"""
from __future__ import annotations

import argparse
import re
import sys
from typing import Dict, Iterable, List, Optional, Sequence, Set, Tuple

__all__ = ["parse_entry_opts", "OVERRIDE_TOKEN", "OPTS_HELP", "add_opts_argument", "with_opts", "value_options",
           "split_overrides", "parse_tool_args"]

#: a config override: ``key=value`` / ``+key=value`` with a dotted key (``model.postprocess.grid=[16,16]``)
OVERRIDE_TOKEN = re.compile(r"^\+?[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z0-9_]+)*=")

OPTS_HELP = ("config overrides KEY=VALUE (checked against the config); KEY=VALUE tokens anywhere on the "
             "command line are overrides too, in command-line order")


def add_opts_argument(parser) -> None:
    parser.add_argument("--opts", nargs="*", default=[], metavar="KEY=VALUE", help=OPTS_HELP)


def _subcommands(parser) -> dict:
    """``{name: subparser}`` of the parser's subcommands (``{}`` without)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _remove_positional_opts(parser) -> None:
    """Remove a positional ``opts`` (detectron2's ``argparse.REMAINDER``), also from ``--help``."""
    for action in [a for a in parser._actions if a.dest == "opts" and not a.option_strings]:
        parser._remove_action(action)
        for group in parser._action_groups:
            if action in group._group_actions:
                group._group_actions.remove(action)


def _takes_overrides(parser) -> bool:
    return any(a.dest == "opts" for a in parser._actions)


def with_opts(parser):
    """The parser with ``--opts`` (``nargs="*"``) in place of a positional ``opts``. With
    subcommands, only the subcommands that already take overrides (an ``opts`` destination) get it;
    the others refuse overrides (:func:`parse_tool_args`). Idempotent; returns the parser."""
    subs = _subcommands(parser)
    targets = [p for p in subs.values() if _takes_overrides(p)] if subs else [parser]
    for p in targets:
        _remove_positional_opts(p)
        if "--opts" not in p._option_string_actions:
            add_opts_argument(p)
    return parser


def _long_prefixes(option: str, all_options: Sequence[str]) -> Set[str]:
    """``option`` and its abbreviations argparse accepts (prefixes matching no other option)."""
    out = {option}
    for k in range(3, len(option)):
        prefix = option[:k]
        if [o for o in all_options if o.startswith(prefix)] == [option]:
            out.add(prefix)
    return out


def _options_of(parsers, wanted) -> Set[str]:
    out: Set[str] = set()
    for p in parsers:
        strings = list(p._option_string_actions)
        for action in p._actions:
            for s in action.option_strings:
                if wanted(action, s):
                    out |= _long_prefixes(s, strings) if s.startswith("--") and p.allow_abbrev else {s}
    return out


def _all_parsers(parser) -> list:
    return [parser, *(p for sub in _subcommands(parser).values() for p in _all_parsers(sub))]


def value_options(parser) -> Set[str]:
    """Option strings (with their accepted abbreviations) of every option of the parser and its
    subcommands that takes exactly one value: a ``KEY=VALUE``-looking token after them is their value."""
    return _options_of(_all_parsers(parser), lambda a, s: a.nargs in (None, "?", 1) and s != "--opts")


def split_overrides(argv: Sequence[str], value_options: Iterable[str],
                    verbatim: Iterable[str] = ()) -> Tuple[List[str], List[str]]:
    """``(argv without the overrides, overrides)``: a token is an override when it matches
    :data:`OVERRIDE_TOKEN`, is not the value of one of ``value_options`` (options taking one value)
    and does not follow one of ``verbatim`` (options whose several values may look like ``KEY=VALUE``,
    up to the next option). ``--opts`` and a bare ``--`` are dropped; ``--opts=KEY=VALUE`` is an
    override. A token after ``--opts`` that is not ``KEY=VALUE`` is a ``ValueError``."""
    value_options, verbatim = set(value_options), set(verbatim)
    rest: List[str] = []
    overrides: List[str] = []
    prev, in_opts, in_verbatim = None, False, False
    for tok in argv:
        is_option = tok.startswith("-") and tok != "-"
        if is_option:
            in_opts, in_verbatim = tok == "--opts", tok in verbatim
        if tok in ("--", "--opts"):
            pass
        elif tok.startswith("--opts="):
            overrides.append(tok[len("--opts="):])
        elif is_option or in_verbatim or prev in value_options or not OVERRIDE_TOKEN.match(tok):
            if in_opts:
                raise ValueError(f"--opts takes KEY=VALUE config overrides, got {tok!r}")
            rest.append(tok)
        else:
            overrides.append(tok)
        prev = tok
    return rest, overrides


def _chosen_subcommand(parser, args) -> Tuple[Optional[str], Optional[argparse.ArgumentParser]]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            name = getattr(args, action.dest, None) if action.dest != argparse.SUPPRESS else None
            return name, action.choices.get(name)
    return None, None


def parse_tool_args(parser, argv: Optional[Sequence[str]] = None, *,
                    verbatim: Iterable[str] = ()) -> argparse.Namespace:
    """Parse a tool's command line (``sys.argv[1:]`` by default) with every ``KEY=VALUE`` override
    (``--opts`` or positional, anywhere) in ``args.opts``, in command-line order. ``verbatim``:
    options taking several values that may look like ``KEY=VALUE`` (``--entries name=config.py``)."""
    with_opts(parser)
    argv = sys.argv[1:] if argv is None else list(argv)
    verbatim = set(verbatim)
    verbatim = _options_of(_all_parsers(parser), lambda a, s: s in verbatim)
    try:
        rest, overrides = split_overrides(argv, value_options(parser), verbatim)
    except ValueError as e:
        parser.error(str(e))
    args = parser.parse_args(rest)
    if getattr(args, "opts", None):  # an abbreviation of --opts followed by something else
        parser.error(f"--opts takes KEY=VALUE config overrides, got {' '.join(args.opts)}")
    name, sub = _chosen_subcommand(parser, args)
    if sub is not None and not _takes_overrides(sub) and overrides:
        sub.error(f"the {name!r} subcommand takes no config overrides, got {' '.join(overrides)}")
    args.opts = overrides
    return args


def parse_entry_opts(specs: Sequence[str], names: Sequence[str]) -> Dict[str, List[str]]:
    """``["name:key=value", ...]`` -> ``{name: [key=value, ...]}`` (every name must be an entry)."""
    out: Dict[str, List[str]] = {n: [] for n in names}
    for spec in specs:
        name, sep, override = spec.partition(":")
        if not sep or "=" not in override:
            raise ValueError(f"--entry-opts: expected name:key=value, got {spec!r}")
        if name not in out:
            raise ValueError(f"--entry-opts {spec!r}: {name!r} is not one of the entries {list(names)}")
        out[name].append(override)
    return out
