"""What ``tools/gpu_check.py`` runs: the GPU settings and the ``--dry-run`` ones (the same code
paths on CPU at tiny sizes: 1-2 block ViT-S/14 without weights in place of ViT-B / ViT-L, 56-112
px, 2 iterations per section, a few images)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

__all__ = ["Settings", "make_settings", "DEFAULT_CAPS", "TRAIN_CONFIGS", "EVAL_CONFIGS", "LEARNING_VARIANTS",
           "dataset_overrides"]

#: seconds per section on the GPU: 7.5 minutes in all (the lent GPU's 15 minutes include start-up)
DEFAULT_CAPS = {"device": 15.0, "train": 70.0, "memory": 55.0, "eval": 70.0, "learning": 240.0}
#: name -> (config, input size on the GPU)
TRAIN_CONFIGS = {"vitb_420": ("configs/coco/vitb_ablation_420.py", 420), "vitl_1008": ("configs/coco/vitl_stage3.py", 1008)}
#: the eval entries, all on the same synthetic val images: name -> (config, family)
EVAL_CONFIGS = {
    "ours_vitl_1008": ("configs/coco/vitl_stage3.py", "ours"),
    "mask2former_r50": ("configs/baselines/mask2former_r50_coco.py", "mask2former"),
    "eomt_vitl_640": ("configs/baselines/eomt_vitl_coco.py", "eomt"),
}
#: the learning runs: name -> (config, overrides)
LEARNING_VARIANTS = {
    "paper_head_icml_void": ("configs/synthetic/pe_vits.py",
                             ["dataloader.train.mapper.panoptic.include_void=True", "model.postprocess.void_source=semantic"]),
    "paper_head_v1_no_void": ("configs/synthetic/pe_vits.py", []),
    "offset_head": ("configs/synthetic/pe_vits_offset.py", []),
}
_TINY_VIT = ["model.backbone.model_name=vit_small_patch14_dinov2", "model.backbone.out_indices=[0,1]",
             "model.backbone.weights=null"]


@dataclass
class Settings:
    dry_run: bool
    device: str
    caps: Dict[str, float]
    matmul_n: int
    matmul_rounds: int
    train_sizes: Dict[str, int]
    train_batch: Optional[int]  # None: the config's per-GPU batch
    train_warmup: int
    train_iters: int
    backbone_overrides: List[str]
    memory_batches: Tuple[int, ...]
    memory_max_batch: int
    eval_images: int
    eval_rounds: int
    eval_sizes: Dict[str, int]
    flops_iters: int
    synthetic_variant: str
    learning: Dict[str, int] = field(default_factory=dict)  # iters, eval_period, batch, size, workers


def make_settings(dry_run: bool, caps: Optional[Dict[str, float]] = None) -> Settings:
    if dry_run:
        base = Settings(
            dry_run=True, device="cpu", caps={k: 120.0 for k in DEFAULT_CAPS}, matmul_n=256, matmul_rounds=2,
            train_sizes={"vitb_420": 56, "vitl_1008": 112}, train_batch=1, train_warmup=0, train_iters=2,
            backbone_overrides=list(_TINY_VIT), memory_batches=(1, 2), memory_max_batch=4, eval_images=2,
            eval_rounds=1, eval_sizes={"ours": 112, "mask2former": 112, "eomt": 112}, flops_iters=2,
            synthetic_variant="small",
            learning=dict(iters=2, eval_period=2, batch=2, size=56, workers=0, timeout=120),
        )
    else:
        base = Settings(
            dry_run=False, device="cuda", caps=dict(DEFAULT_CAPS), matmul_n=8192, matmul_rounds=10,
            train_sizes={k: size for k, (_, size) in TRAIN_CONFIGS.items()}, train_batch=None, train_warmup=3,
            train_iters=8, backbone_overrides=[], memory_batches=(1, 2), memory_max_batch=32, eval_images=24,
            eval_rounds=2, eval_sizes={"ours": 1008, "mask2former": 800, "eomt": 640}, flops_iters=5,
            synthetic_variant="default",
            learning=dict(iters=600, eval_period=150, batch=32, size=168, workers=4, timeout=80),
        )
    unknown = set(caps or {}) - set(DEFAULT_CAPS)
    if unknown:
        raise ValueError(f"--caps: unknown sections {sorted(unknown)}; choose from {list(DEFAULT_CAPS)}")
    base.caps.update(caps or {})
    return base


def dataset_overrides(family: str, variant: str, num_classes: int) -> List[str]:
    """Overrides that point a COCO config's model, test loader and evaluators at the synthetic
    panoptic dataset (``variant``: ``"default"`` or ``"small"``) and its ``num_classes`` classes."""
    prefix = "synthetic_panoptic" if variant == "default" else f"synthetic_panoptic_{variant}"
    train, val = f"{prefix}_train", f"{prefix}_val"
    common = [f"dataloader.test.dataset.names={val}", f"dataloader.evaluator.dataset_name={val}"]
    if family == "ours":
        return common + [f"model.dataset_name={train}", f"dataloader.test.mapper.panoptic.dataset_name={val}"]
    if family == "mask2former":
        return common + [f"model.sem_seg_head.num_classes={num_classes}", f"model.metadata.name={train}",
                         "model.instance_on=False"]
    if family == "eomt":
        return common + [f"model.num_classes={num_classes}", f"model.metadata.name={train}"]
    if family == "learning":
        return [f"dataloader.train.dataset.names={train}", f"dataloader.train.mapper.panoptic.dataset_name={train}",
                f"model.dataset_name={train}", f"dataloader.test.mapper.panoptic.dataset_name={val}"] + common
    raise ValueError(f"dataset_overrides: unknown family {family!r}")
