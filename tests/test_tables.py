"""pe_panoptic.studies.tables.format_table: the one table printer of the tools and studies."""
import math

import pytest

from pe_panoptic.studies.tables import format_cell, format_table


def test_markdown_table_hand_values():
    text = format_table(["model", "PQ", "n"], [["ours", 41.25, 3], ["fpn", None, 10], ["x", math.nan, True]],
                        floatfmt=".1f", align="lrr")
    assert text.splitlines() == ["| model | PQ | n |", "|---|---:|---:|", "| ours | 41.2 | 3 |", "| fpn | - | 10 |",
                                 "| x | - | True |"]
    # one float format per column; ints and strings as they are
    text = format_table(["a", "b"], [[1.23456, 2.5]], floatfmt=[".2f", None], missing="n/a")
    assert text.splitlines()[2] == "| 1.23 | 2.5 |"
    assert format_table(["a"], []).splitlines() == ["| a |", "|---|"]


def test_plain_table_hand_values():
    text = format_table(["a", "b"], [[1.23456, "x"], [10, "long"], [None, ""]], floatfmt=".4g", missing="",
                        style="plain")
    assert text.splitlines() == ["a      b   ", "-----  ----", "1.235  x   ", "10     long", " " * 11]


def test_format_cell():
    assert format_cell(None) == "-" and format_cell(float("nan"), missing="n/a") == "n/a"
    assert format_cell(0.5, ".0%") == "50%" and format_cell(3, ".1f") == "3" and format_cell("s", ".1f") == "s"


def test_refusals_name_the_problem():
    with pytest.raises(ValueError, match="row 1 has 1 cells, the header 2"):
        format_table(["a", "b"], [[1, 2], [3]])
    with pytest.raises(ValueError, match="2 columns need 2 float formats and 2 alignments"):
        format_table(["a", "b"], [], align="lcr")
    with pytest.raises(ValueError, match="2 columns need"):
        format_table(["a", "b"], [], floatfmt=[".1f"])
    with pytest.raises(ValueError, match="style must be one of"):
        format_table(["a"], [], style="html")


def test_tools_print_with_it(tmp_path):
    """The tools' tables are this printer's output (same header, separator and cells)."""
    import importlib.util
    import pathlib

    root = pathlib.Path(__file__).resolve().parents[1]
    spec = importlib.util.spec_from_file_location("eval_postprocess_tool", root / "tools" / "eval_postprocess.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    res = {"decoder=nn": {"panoptic_seg": {"PQ": 41.25, "PQ_th": 30, "PQ_st": 50.0, "SQ": 70.0, "RQ": 60.0},
                          "sem_seg": {}, "postprocess_ms_per_image": 1.25}}
    assert tool.table(res).splitlines() == [
        "| variant | PQ | PQ_th | PQ_st | SQ | RQ | mIoU | post ms/img |",
        "|---|---|---|---|---|---|---|---|",
        "| decoder=nn | 41.2 | 30.0 | 50.0 | 70.0 | 60.0 | - | 1.2 |",
    ]
