"""Every result row of both papers' tables, the config that reproduces it, and a check of the
settings that define the row against the config (``tests/test_paper_rows.py``, docs/fidelity.md "Fidelity").

Each paper version has its own decoder (:data:`DECODER_UPSAMPLINGS`):

* paper_v1 Sec. 3.1 / 5.1: "a lightweight decoder consisting of four transpose convolutional
  layers [...] to upscale the encoder image representation to the original image size": 4 2x
  upsamplings of the stride-14 patch grid, output 16/14 of the input;
* ICML Sec. 5.1: "We upscale these 8 times, resulting in final output of size 8H/14 x 8W/14"
  and "3 transposed convolutional layers and one convolutional layer": 3 upsamplings.

Checks read the LazyConfig values only (no model is built): :func:`check_row` returns one message
per setting that differs, naming the config file and the key.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Mapping, Optional, Tuple

from pe_panoptic.engine.recipes import LAYER_DECAY, MIN_LR

__all__ = ["UNCHECKED", "DECODER_UPSAMPLINGS", "BACKBONES", "V1_TASK_PROBS", "PaperRow", "PAPER_ROWS", "STAGES",
           "check_row", "load_row_config"]

#: a row field whose value the check leaves alone (set by the row's config; see its header)
UNCHECKED = "unchecked"
#: 2x upsamplings of each paper version's decoder
DECODER_UPSAMPLINGS = {"paper_v1": 4, "ICML": 3}
#: backbone -> (timm name, block outputs (0-indexed), embedding width); both papers: "layers 3, 6,
#: 9 and 12 when using DinoV2-Base, and layers 5, 12, 18 and 24 when using DinoV2-Large"
BACKBONES = {
    "ViT-B": ("vit_base_patch14_dinov2", (2, 5, 8, 11), 768),
    "ViT-L": ("vit_large_patch14_dinov2", (4, 11, 17, 23), 1024),
}
#: paper_v1 Sec. 5.1: "Each batch contains only sampling from one of the tasks, with the instance
#: segmentation being twice more likely"
V1_TASK_PROBS = {"inst": 2 / 3, "sem": 1 / 3}


@dataclass(frozen=True)
class PaperRow:
    """One table row (or, in :data:`STAGES`, one training stage a row is built on)."""

    paper: str  # "paper_v1" | "ICML"
    table: str  # "Table 1", ...; "Sec. 5.1" for stages
    row: str  # the row as the table labels it
    result: Mapping[str, float]  # the paper's numbers, e.g. {"PQ": 52.5}
    config: str  # path from the repository root
    backbone: str  # key of BACKBONES
    input_size: object  # int (square) or [H, W]
    encoding: Tuple = ("pe", 4)  # (name, L) with L only for "pe"
    eds: bool = True
    include_void: bool = True
    task_probs: Optional[Mapping[str, float]] = None  # None: summed losses of every task; or UNCHECKED
    tasks: Tuple[str, ...] = ("sem", "inst")  # or UNCHECKED
    epochs: Optional[float] = None  # None: not checked (not stated)
    effective_batch: Optional[int] = None
    grid: Tuple[int, int] = (80, 80)
    init_from: Optional[str] = None  # config whose model_final.pth this one starts from
    reference: bool = False  # the config's train.reference names this row
    depth: bool = False  # has the depth head
    differences: Tuple[str, ...] = field(default=())  # known differences (docs/fidelity.md "Fidelity")

    @property
    def num_upsample(self) -> int:
        return DECODER_UPSAMPLINGS[self.paper]

    @property
    def label(self) -> str:
        return f"{self.paper} {self.table}, {self.row}"


_V1 = dict(paper="paper_v1", task_probs=V1_TASK_PROBS, epochs=200, effective_batch=256)
_V1_B = dict(_V1, backbone="ViT-B", input_size=420, reference=True)
_ICML_T4 = dict(paper="ICML", table="Table 4", backbone="ViT-B", input_size=420, task_probs=V1_TASK_PROBS,
                epochs=200, effective_batch=256, reference=True,
                differences=("ICML Sec. 5.3 gives only 'a single stage of 200 epoch on smaller images of size "
                             "420 x 420': batch 256, warmup and one task per step are paper_v1's. Its PQ values "
                             "equal paper_v1 Tables 2/3, which suggests paper_v1's runs (4 upsamplings); the "
                             "v1_t* configs are that reading",))
_NO_EDS = ("'without EDS' read as paper_v1's baseline: no EDS and void excluded (44.86 here, 44.91 in "
           "paper_v1 Table 2)",)
_CS = "configs/cityscapes/vitl_finetune.py"

PAPER_ROWS: Tuple[PaperRow, ...] = (
    # ---------------------------------------------------------------- paper_v1 Table 1
    PaperRow(table="Table 1", row="Ours ViT-Base 420x420", result={"PQ": 48.6},
             config="configs/coco/vitb_ablation_420_v1_decoder.py", **_V1_B,
             differences=("the same setting as Table 2's full method (48.61)",)),
    PaperRow(table="Table 1", row="Ours ViT-Large 420x420", result={"PQ": 51.6}, config="configs/coco/vitl_420.py",
             backbone="ViT-L", input_size=420, reference=True, **_V1,
             differences=("batch split 8 GPUs x 16 x 2 accumulation steps (not stated)",)),
    PaperRow(table="Table 1", row="Ours ViT-Large 518x518", result={"PQ": 52.5}, config="configs/coco/vitl_518.py",
             backbone="ViT-L", input_size=518, reference=True, **_V1,
             differences=("batch split 8 GPUs x 16 x 2 accumulation steps (not stated)",)),
    # ---------------------------------------------------------------- paper_v1 Table 2
    PaperRow(table="Table 2", row="EDS no, include void no", result={"PQ": 44.91},
             config="configs/coco/ablations/v1_t2_no_eds_no_void.py", eds=False, include_void=False, **_V1_B),
    PaperRow(table="Table 2", row="EDS no, include void yes", result={"PQ": 46.74},
             config="configs/coco/ablations/v1_t2_no_eds_void.py", eds=False, **_V1_B),
    PaperRow(table="Table 2", row="EDS yes, include void no", result={"PQ": 46.04},
             config="configs/coco/ablations/v1_t2_eds_no_void.py", include_void=False, **_V1_B),
    PaperRow(table="Table 2", row="EDS yes, include void yes", result={"PQ": 48.61},
             config="configs/coco/ablations/v1_t2_eds_void.py", **_V1_B),
    # ---------------------------------------------------------------- paper_v1 Table 3
    PaperRow(table="Table 3", row="Direct centroid regression", result={"PQ": 41.61},
             config="configs/coco/ablations/v1_t3_direct_regression.py", encoding=("rgb",), **_V1_B),
    PaperRow(table="Table 3", row="Cross Entropy", result={"PQ": 39.87},
             config="configs/coco/ablations/v1_t3_cross_entropy.py", encoding=("bins",), **_V1_B),
    PaperRow(table="Table 3", row="Pos Embeds (L = 2)", result={"PQ": 46.58},
             config="configs/coco/ablations/v1_t3_pe_l2.py", encoding=("pe", 2), **_V1_B),
    PaperRow(table="Table 3", row="Pos Embeds (L = 3)", result={"PQ": 47.38},
             config="configs/coco/ablations/v1_t3_pe_l3.py", encoding=("pe", 3), **_V1_B),
    PaperRow(table="Table 3", row="Pos Embeds (L = 4)", result={"PQ": 48.28},
             config="configs/coco/ablations/v1_t3_pe_l4.py", encoding=("pe", 4), **_V1_B,
             differences=("the same setting as Table 2's full method, which the paper reports as 48.61",)),
    PaperRow(table="Table 3", row="Pos Embeds (L = 5)", result={"PQ": 48.12},
             config="configs/coco/ablations/v1_t3_pe_l5.py", encoding=("pe", 5), **_V1_B),
    # ---------------------------------------------------------------- ICML Table 1 / 2 / 3
    PaperRow(paper="ICML", table="Table 1", row="Ours w/o depth", result={"PQ": 55.1},
             config="configs/coco/vitl_stage3.py", backbone="ViT-L", input_size=1008, epochs=50, effective_batch=16,
             init_from="configs/coco/vitl_stage2.py",
             differences=("stage 3 scale jitter 0.8-1.25 for 'less or no cropping'; warmup 1 epoch (not stated)",)),
    PaperRow(paper="ICML", table="Table 1", row="Ours w/ depth", result={"PQ": 54.5},
             config="configs/coco/vitl_stage3_depth.py", backbone="ViT-L", input_size=1008, tasks=UNCHECKED,
             task_probs=UNCHECKED, depth=True, differences=("see the config's header (NYUv2 raw training frames)",)),
    PaperRow(paper="ICML", table="Table 2", row="Ours", result={"RMSE": 0.315, "AbsRel": 0.078, "PQ": 54.5},
             config="configs/coco/vitl_stage3_depth.py", backbone="ViT-L", input_size=1008, tasks=UNCHECKED,
             task_probs=UNCHECKED, depth=True, differences=("'the same model as used for COCO panoptic segmentation in Table 1'",)),
    PaperRow(paper="ICML", table="Table 3", row="Ours", result={"PQ": 64.2}, config=_CS, backbone="ViT-L",
             input_size=[784, 1568], epochs=400, effective_batch=16, grid=(160, 320), reference=True,
             init_from="configs/coco/vitl_stage2.py",
             differences=("effective batch 16, 3 warmup epochs, scale jitter 0.5-2.0 (not stated)",)),
    # ---------------------------------------------------------------- ICML Table 4
    PaperRow(row="no EDS, Direct regression", result={"PQ": 38.01}, eds=False, include_void=False,
             config="configs/coco/ablations/icml_t4_no_eds_direct_regression.py", encoding=("rgb",),
             **dict(_ICML_T4, differences=_ICML_T4["differences"] + _NO_EDS)),
    PaperRow(row="no EDS, PE L=4", result={"PQ": 44.86}, eds=False, include_void=False,
             config="configs/coco/ablations/icml_t4_no_eds_pe_l4.py",
             **dict(_ICML_T4, differences=_ICML_T4["differences"] + _NO_EDS)),
    PaperRow(row="EDS, Direct regression", result={"PQ": 41.61}, encoding=("rgb",),
             config="configs/coco/ablations/icml_t4_direct_regression.py", **_ICML_T4),
    PaperRow(row="EDS, Cross-entropy", result={"PQ": 39.87}, encoding=("bins",),
             config="configs/coco/ablations/icml_t4_cross_entropy.py", **_ICML_T4),
    PaperRow(row="EDS, PE L=3", result={"PQ": 47.38}, encoding=("pe", 3),
             config="configs/coco/ablations/icml_t4_pe_l3.py", **_ICML_T4),
    PaperRow(row="EDS, PE L=4", result={"PQ": 48.61}, encoding=("pe", 4),
             config="configs/coco/ablations/icml_t4_pe_l4.py", **_ICML_T4),
    PaperRow(row="EDS, PE L=5", result={"PQ": 48.12}, encoding=("pe", 5),
             config="configs/coco/ablations/icml_t4_pe_l5.py", **_ICML_T4),
)

#: the ICML training stages the Table 1 / 3 rows start from (ICML Sec. 5.1 "Training setup")
STAGES: Tuple[PaperRow, ...] = (
    PaperRow(paper="ICML", table="Sec. 5.1", row="Stage 1", result={}, config="configs/coco/vitl_stage1.py",
             backbone="ViT-L", input_size=280, tasks=("inst",), epochs=400, effective_batch=1024),
    PaperRow(paper="ICML", table="Sec. 5.1", row="Stage 2", result={}, config="configs/coco/vitl_stage2.py",
             backbone="ViT-L", input_size=336, epochs=200, effective_batch=512,
             init_from="configs/coco/vitl_stage1.py"),
    PaperRow(paper="ICML", table="Sec. 5.1", row="Stage 2 with depth", result={},
             config="configs/coco/vitl_stage2_depth.py", backbone="ViT-L", input_size=336,
             tasks=("sem", "inst", "depth"), depth=True, epochs=200, effective_batch=512,
             init_from="configs/coco/vitl_stage1.py"),
)


def load_row_config(row: PaperRow, root: str):
    """The LazyConfig of ``row`` (``root``: the repository root)."""
    from detectron2.config import LazyConfig

    path = os.path.join(root, row.config)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{row.config}: config of {row.label} not found")
    return LazyConfig.load(path)


_ABSENT = object()


def _get(cfg, dotted: str, default=None):
    node = cfg
    for part in dotted.split("."):
        try:
            node = node[int(part)] if part.isdigit() else node[part]  # list items by index
        except (KeyError, TypeError, AttributeError, IndexError):
            return default
    return node


def _plain(x):
    try:
        from omegaconf import OmegaConf

        return OmegaConf.to_container(x, resolve=True) if OmegaConf.is_config(x) else x
    except ImportError:  # pragma: no cover
        return x


def check_row(row: PaperRow, cfg, root: Optional[str] = None) -> list:
    """Messages ``"<config>: <key> is X, <row> needs Y"`` for every row-defining setting of
    ``cfg`` that differs from ``row`` (empty when the config matches). With ``root``, also the
    ``init_from`` chain (loads that config)."""
    out = []

    def expect(key, want, got=None, *, close=False):
        got = _plain(_get(cfg, key)) if got is None else got
        if isinstance(got, tuple):
            got = list(got)
        want_ = list(want) if isinstance(want, tuple) else want
        ok = (got is not None and math.isclose(float(got), float(want_), rel_tol=1e-6)) if close else got == want_
        if not ok:
            out.append(f"{row.config}: {key} is {got!r}, {row.label} needs {want_!r}")

    # the panoptic mapper: the loader's own, or the first of a mixed loader's (stage 3 with depth:
    # COCO panoptic + NYUv2 depth, pe_panoptic.data.mixed)
    mapper = "dataloader.train.mapper" if _get(cfg, "dataloader.train.mapper") is not None else \
        "dataloader.train.mappers.0"
    name, indices, width = BACKBONES[row.backbone]
    expect("model.backbone.model_name", name)
    expect("model.backbone.out_indices", indices)
    if _get(cfg, "model.decoder.in_channels") is not None:  # set by hand (else derived from the backbone)
        expect("model.decoder.in_channels", 4 * width)
    expect("model.decoder.num_upsample", row.num_upsample)
    expect(f"{mapper}.output_stride", 14 / 2**row.num_upsample, close=True)
    expect(f"{mapper}.input_size", row.input_size)
    enc = _plain(_get(cfg, "model.encoding")) or {}
    expect("model.encoding.name", row.encoding[0], got=enc.get("name"))
    if row.encoding[0] == "pe":
        expect("model.encoding.num_harmonics", row.encoding[1], got=enc.get("num_harmonics", 4))
    expect(f"{mapper}.panoptic.use_eds", row.eds)
    expect(f"{mapper}.panoptic.include_void", row.include_void)
    expect(f"{mapper}.panoptic.eds_D", 20.0, close=True)  # both papers: D = 20
    if _get(cfg, "model.task_probs", _ABSENT) is not _ABSENT:
        out.append(f"{row.config}: sets model.task_probs, which has moved to dataloader.train.task_probs")
    probs = _plain(_get(cfg, "dataloader.train.task_probs"))
    if row.task_probs is None:
        expect("dataloader.train.task_probs", None, got=probs)
    elif row.task_probs == UNCHECKED:
        pass
    elif not probs or set(probs) != set(row.task_probs) or any(
            not math.isclose(probs[k], v, rel_tol=1e-6) for k, v in row.task_probs.items()):
        out.append(f"{row.config}: dataloader.train.task_probs is {probs!r}, {row.label} needs {dict(row.task_probs)!r}")
    if row.tasks != UNCHECKED:
        expect("model.tasks", row.tasks)
    if row.depth:
        expect("model.depth", True)
    if row.epochs is not None:
        expect("train.recipe.epochs", row.epochs, close=True)
    if row.effective_batch is not None:
        expect("train.effective_batch_size", row.effective_batch)
    expect("model.postprocess.grid", row.grid)
    expect("optimizer.lr", 5e-4, close=True)  # both papers: "learning rate of 5 x 10^-4"
    # not in the paper: the same group's follow-up work (pe_panoptic.engine.recipes)
    expect("optimizer.params.layer_decay", LAYER_DECAY, close=True)
    expect("lr_multiplier.min_lr", MIN_LR, close=True)
    loss = _plain(_get(cfg, "model.loss")) or {}
    expect("model.loss.tv_weight", 0.1, got=loss.get("tv_weight", 0.1), close=True)  # "weight 0.1"
    expect("model.loss.dice_weight", 1.0, got=loss.get("dice_weight", 1.0), close=True)  # "weight of 1"
    if row.reference:
        ref = _plain(_get(cfg, "train.reference")) or {}
        got = (ref.get("table"), ref.get("row"), ref.get("pq"))
        want = (f"{row.paper} {row.table}", row.row, row.result["PQ"])
        if got != want:
            out.append(f"{row.config}: train.reference is {got!r}, {row.label} needs {want!r}")
    if row.init_from is not None and root is not None:
        prev = load_row_config(PaperRow(paper=row.paper, table="", row="", result={}, config=row.init_from,
                                        backbone=row.backbone, input_size=0), root)
        expect("train.init_checkpoint", os.path.join(prev.train.output_dir, "model_final.pth"))
    return out
