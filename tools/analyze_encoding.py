#!/usr/bin/env python
"""Contrast ratio of centroid encodings (paper_v1 Sec. 4 / Fig. 3; ICML Sec. 4).

For each encoding (``rgb`` = direct regression with L1, ``peL`` = sine-cosine PE with L
harmonics), the distance from the right-most grid position (last cell center, ``u = 1 - 1/grid``)
to every other position of a ``--grid``-cell axis and to the void code, and the contrast ratio
max / min over the positions (paper: ~79 for direct regression, ~5 for L = 4; this tool gives
79.0 and 4.91 on 80 cells). See :mod:`pe_panoptic.studies.analysis` for the exact definitions.

    python tools/analyze_encoding.py --encodings rgb pe2 pe3 pe4 pe5 --grid 80 --output out/enc

Writes ``<output>/encoding_contrast.png`` (distance vs. u, one curve per encoding, dashed line =
void distance) and ``<output>/encoding_contrast.json``; prints a table; the last printed line is
a JSON object ``{"grid", "reference_u", "encodings": {name: {contrast_ratio, ...}}, "plot"}``.
"""
from __future__ import annotations

import argparse
import json
import os
from typing import List, Optional, Sequence


from pe_panoptic.studies.analysis import EncodingContrast, encoding_contrast  # noqa: E402


def format_table(results: Sequence[EncodingContrast]) -> str:
    from pe_panoptic.studies.tables import format_table as markdown_table

    rows = [
        [r.name, r.min_distance, r.max_distance, r.contrast_ratio, r.void_distance, r.closer_than_void]
        for r in results
    ]
    headers = ["encoding", "min dist", "max dist", "contrast (max/min)", "void dist", "# closer than void"]
    return markdown_table(headers, [[v.item() if hasattr(v, "item") else v for v in row] for row in rows],
                        floatfmt=".4f", align="l" + "r" * (len(headers) - 1))


def plot(results: Sequence[EncodingContrast], path: str) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=110)
    for i, r in enumerate(results):
        color = f"C{i}"
        ax.plot(r.positions.numpy(), r.distances.numpy(), color=color,
                label=f"{r.name} (contrast {r.contrast_ratio:.1f})")
        ax.axhline(r.void_distance, color=color, linestyle="--", linewidth=0.9)
    ax.set_xlabel(f"u (cell centers of a {results[0].grid}-cell axis)")
    ax.set_ylabel(f"distance to u = {results[0].reference:.4f}")
    ax.set_title("Distance to the right-most centroid position (dashed: to the void code)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def get_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--encodings", nargs="+", default=["rgb", "pe2", "pe3", "pe4", "pe5"],
                    help="encodings: 'rgb' (direct regression, L1) and/or 'peL' (PE with L harmonics)")
    ap.add_argument("--grid", type=int, default=80, help="cells of the decoding grid along the axis")
    ap.add_argument("--output", default="output/analyze_encoding", help="folder for the PNG and JSON")
    return ap


def main(argv: Optional[List[str]] = None) -> dict:
    args = get_parser().parse_args(argv)
    results = [encoding_contrast(spec, args.grid) for spec in args.encodings]
    os.makedirs(args.output, exist_ok=True)
    png = plot(results, os.path.join(args.output, "encoding_contrast.png"))
    summary = {
        "grid": args.grid,
        "reference_u": results[0].reference,
        "encodings": {r.name: {k: v for k, v in r.summary().items() if k not in ("grid", "reference_u")}
                      for r in results},
        "plot": png,
    }
    with open(os.path.join(args.output, "encoding_contrast.json"), "w") as f:
        json.dump(summary, f, indent=2)
    print(format_table(results))
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
