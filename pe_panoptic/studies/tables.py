"""The one table printer of the tools and studies: rows of cells -> Markdown (or plain text).

    >>> print(format_table(["model", "PQ"], [["ours", 41.23], ["fpn", None]], floatfmt=".1f", align="lr"))
    | model | PQ |
    |---|---:|
    | ours | 41.2 |
    | fpn | - |

Cells: ``None`` and NaN print as ``missing``; floats (not ints, not bools) with ``floatfmt``
(one format for every column, or one per column, ``None`` for ``str``); anything else with
``str``. ``style="markdown"`` (default) writes a GitHub pipe table, one row per line, cells not
padded; ``style="plain"`` writes left-aligned columns padded to their width, separated by two
spaces, under a line of dashes (terminal output of ``tools/benchmark.py``).
"""
from __future__ import annotations

import math
from typing import Any, Optional, Sequence, Union

__all__ = ["format_table", "format_cell"]

STYLES = ("markdown", "plain")


def format_cell(value: Any, floatfmt: Optional[str] = None, missing: str = "-") -> str:
    """One cell as text (see the module docstring)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return missing
    if isinstance(value, float) and floatfmt:
        return format(value, floatfmt)
    return str(value)


def format_table(header: Sequence[str], rows: Sequence[Sequence[Any]], *,
                 floatfmt: Union[None, str, Sequence[Optional[str]]] = None, align: Optional[str] = None,
                 missing: str = "-", style: str = "markdown") -> str:
    """``header`` and ``rows`` (each as long as the header) as a table.

    Args:
        floatfmt: format spec of float cells (``".1f"``), or one per column.
        align: one letter per column, ``"l"`` or ``"r"`` (Markdown separator ``---`` / ``---:``);
            default all ``"l"``.
        missing: text of ``None`` / NaN cells.
        style: ``"markdown"`` or ``"plain"``.
    """
    n = len(header)
    if style not in STYLES:
        raise ValueError(f"format_table: style must be one of {STYLES}, got {style!r}")
    fmts = [floatfmt] * n if floatfmt is None or isinstance(floatfmt, str) else list(floatfmt)
    align = align or "l" * n
    if len(fmts) != n or len(align) != n or set(align) - {"l", "r"}:
        raise ValueError(f"format_table: {n} columns need {n} float formats and {n} alignments ('l' / 'r'), "
                         f"got {len(fmts)} and {align!r}")
    cells = []
    for i, row in enumerate(rows):
        if len(row) != n:
            raise ValueError(f"format_table: row {i} has {len(row)} cells, the header {n}: {list(row)!r}")
        cells.append([format_cell(v, f, missing) for v, f in zip(row, fmts)])
    head = [str(h) for h in header]
    if style == "plain":
        widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(head)]
        lines = [head, ["-" * w for w in widths]] + cells
        return "\n".join("  ".join(c.ljust(w) for c, w in zip(line, widths)) for line in lines)
    sep = "|" + "".join("---:|" if a == "r" else "---|" for a in align)
    return "\n".join(["| " + " | ".join(head) + " |", sep] + ["| " + " | ".join(r) + " |" for r in cells])
