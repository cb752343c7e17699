"""One override syntax for every tool: ``--opts KEY=VALUE ...``.

Positional ``KEY=VALUE`` overrides placed after an option that takes several values
(``--decoders vote nn "model.postprocess.grid=[16,16]"``) used to be swallowed by that option
(argparse: "invalid choice"), and ``--`` was taken as an override. :func:`add_opts_argument` adds
``--opts``; :func:`split_overrides` takes the ``KEY=VALUE`` tokens out of the command line wherever
they are (not as the value of a single-value option such as ``--output-dir a=b``) and drops a bare
``--``, so the positional form keeps working and means the same as ``--opts``.
"""
from __future__ import annotations

import re
from typing import Iterable, List, Sequence, Tuple

__all__ = ["OVERRIDE_TOKEN", "add_opts_argument", "split_overrides"]

#: a config override: ``key=value`` / ``+key=value`` with a dotted key (``model.postprocess.grid=[16,16]``)
OVERRIDE_TOKEN = re.compile(r"^\+?[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z0-9_]+)*=")


def add_opts_argument(parser) -> None:
    parser.add_argument("--opts", nargs="*", default=[], metavar="KEY=VALUE",
                        help="config overrides (checked against the config); positional KEY=VALUE also works")


def split_overrides(argv: Sequence[str], value_options: Iterable[str]) -> Tuple[List[str], List[str]]:
    """``(argv without the overrides, overrides)``: a token is an override when it matches
    :data:`OVERRIDE_TOKEN` and is not the value of one of ``value_options`` (options taking one
    value). Tokens after ``--opts`` go to the overrides up to the next ``--option``."""
    value_options = set(value_options)
    rest: List[str] = []
    overrides: List[str] = []
    in_opts = False
    prev = None
    for tok in argv:
        if tok == "--":
            in_opts = False
        elif tok == "--opts":
            in_opts = True
        elif tok.startswith("--"):
            in_opts = False
            rest.append(tok)
        elif in_opts or (OVERRIDE_TOKEN.match(tok) and prev not in value_options):
            overrides.append(tok)
        else:
            rest.append(tok)
        prev = tok
    return rest, overrides
