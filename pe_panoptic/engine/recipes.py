"""Training recipes: the paper's schedules (epochs, effective batch) as iteration counts.

The paper states its schedules in epochs and *effective* batch sizes (paper_v1 Sec. 5:
"effective batch size of 256 ... 200 epochs or 92K steps"; ICML Sec. 5.1, "Training stages":
400 / 200 / 50 epochs at effective batch 1024 / 512 / 16). detectron2 trains for
``train.max_iter`` iterations; here one iteration is one *optimizer step* of
:class:`pe_panoptic.engine.trainer.PETrainer`, which consumes ``accumulate_steps`` batches of
``dataloader.train.total_batch_size`` images (summed over all GPUs), so

    effective batch = per-GPU batch x GPUs x accumulate_steps
    max_iter        = ceil(epochs x dataset size / effective batch)

``max_iter`` therefore depends only on the effective batch, not on how it is split over GPUs:
running the same config on fewer GPUs only changes ``total_batch_size`` and
``accumulate_steps`` (see :func:`resolve_accumulate_steps` and ``train.accumulate_steps="auto"``).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Mapping, Optional

__all__ = [
    "LAYER_DECAY",
    "MIN_LR",
    "WEIGHT_DECAY",
    "DATASET_SIZES",
    "Recipe",
    "epochs_to_iters",
    "iters_to_epochs",
    "split_effective_batch",
    "make_recipe",
    "resolve_accumulate_steps",
    "apply_recipe",
    "set_input_size",
    "set_decoder_upsampling",
    "use_resumable_loader",
    "set_task_probs",
]

# Optimizer values NEITHER paper states. Both say only "layer decay to suppress the learning rate
# for the earlier layers" (paper_v1 Sec. 5.1, ICML Sec. 5.1) and "cosine [...] after a linear warm
# up", without a layer-decay factor or a final learning rate.
#: layer-wise lr decay factor: from the same group's follow-up work, not from the paper
LAYER_DECAY = 0.6
#: final learning rate of the cosine schedule: from the same group's follow-up work, not from the paper
MIN_LR = 1e-6
#: AdamW weight decay: our choice (stated in neither paper nor taken from the follow-up work)
WEIGHT_DECAY = 0.05

#: number of training images (the ``train`` split) of the datasets the paper trains on
DATASET_SIZES = {
    "coco_2017_train_panoptic": 118287,
    "cityscapes_fine_panoptic_train": 2975,
    # NYUv2 labeled training images (pe_panoptic.data.nyu: 795 train / 654 test)
    "nyuv2_depth_train": 795,
}


def _positive_int(value, name: str) -> int:
    if isinstance(value, bool) or int(value) != value or int(value) < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def epochs_to_iters(epochs: float, dataset_size: int, batch_per_gpu: int, num_gpus: int = 1,
                    accumulate: int = 1) -> int:
    """Optimizer steps for ``epochs`` passes over ``dataset_size`` images at an effective batch of
    ``batch_per_gpu * num_gpus * accumulate`` (rounded up: the last partial step counts).

    >>> epochs_to_iters(200, 118287, 32, 8)   # paper_v1: "200 epochs or 92K steps"
    92412
    """
    if not epochs > 0:
        raise ValueError(f"epochs must be > 0, got {epochs!r}")
    dataset_size = _positive_int(dataset_size, "dataset_size")
    eff = (_positive_int(batch_per_gpu, "batch_per_gpu") * _positive_int(num_gpus, "num_gpus")
           * _positive_int(accumulate, "accumulate"))
    return int(math.ceil(epochs * dataset_size / eff - 1e-9))


def iters_to_epochs(iters: int, dataset_size: int, effective_batch: int) -> float:
    """Inverse of :func:`epochs_to_iters` (a fraction of an epoch is allowed)."""
    return _positive_int(iters, "iters") * _positive_int(effective_batch, "effective_batch") / _positive_int(
        dataset_size, "dataset_size")


def split_effective_batch(effective_batch: int, num_gpus: int, max_batch_per_gpu: int):
    """``(batch_per_gpu, accumulate)`` reaching exactly ``effective_batch`` on ``num_gpus`` GPUs
    with at most ``max_batch_per_gpu`` images per GPU and as few accumulation steps as possible.

    Raises ``ValueError`` if ``effective_batch`` is not a multiple of ``num_gpus`` or no split
    fits (e.g. a prime per-GPU share larger than ``max_batch_per_gpu``).
    """
    effective_batch = _positive_int(effective_batch, "effective_batch")
    num_gpus = _positive_int(num_gpus, "num_gpus")
    max_batch_per_gpu = _positive_int(max_batch_per_gpu, "max_batch_per_gpu")
    if effective_batch % num_gpus:
        raise ValueError(f"effective batch {effective_batch} is not divisible by num_gpus={num_gpus}")
    share = effective_batch // num_gpus
    for accumulate in range(1, share + 1):
        if share % accumulate == 0 and share // accumulate <= max_batch_per_gpu:
            return share // accumulate, accumulate
    raise AssertionError("unreachable: accumulate == share always fits")  # pragma: no cover


@dataclass(frozen=True)
class Recipe:
    """A schedule in the paper's terms and its detectron2 equivalents."""

    epochs: float
    dataset_size: int
    effective_batch: int
    num_gpus: int
    batch_per_gpu: int
    accumulate_steps: int
    max_iter: int
    warmup_epochs: float

    @property
    def total_batch_size(self) -> int:
        """``dataloader.train.total_batch_size``: images per accumulation step over all GPUs."""
        return self.batch_per_gpu * self.num_gpus

    @property
    def iters_per_epoch(self) -> float:
        return self.dataset_size / self.effective_batch

    def iters(self, epochs: float) -> int:
        """Optimizer steps in ``epochs`` epochs (at least 1)."""
        return max(1, int(round(epochs * self.iters_per_epoch)))

    @property
    def warmup_length(self) -> float:
        """Warmup as a fraction of training (``lr_multiplier.warmup_length``)."""
        return min(1.0, self.warmup_epochs / self.epochs)

    def as_dict(self) -> dict:
        d = asdict(self)
        d.update(total_batch_size=self.total_batch_size, warmup_length=self.warmup_length)
        return d


def make_recipe(*, epochs: float, effective_batch: int, num_gpus: int, max_batch_per_gpu: int,
                dataset_size: Optional[int] = None, dataset: Optional[str] = None,
                warmup_epochs: float = 3.0) -> Recipe:
    """The :class:`Recipe` of ``epochs`` at ``effective_batch`` on ``num_gpus`` GPUs.

    ``dataset_size`` or a ``dataset`` name from :data:`DATASET_SIZES`. ``warmup_epochs``: linear
    warmup length (paper_v1: 3 epochs).
    """
    if dataset_size is None:
        if dataset not in DATASET_SIZES:
            raise ValueError(f"give dataset_size or a dataset among {sorted(DATASET_SIZES)}, got {dataset!r}")
        dataset_size = DATASET_SIZES[dataset]
    if warmup_epochs < 0:
        raise ValueError(f"warmup_epochs must be >= 0, got {warmup_epochs}")
    per_gpu, acc = split_effective_batch(effective_batch, num_gpus, max_batch_per_gpu)
    return Recipe(
        epochs=epochs, dataset_size=int(dataset_size), effective_batch=int(effective_batch), num_gpus=int(num_gpus),
        batch_per_gpu=per_gpu, accumulate_steps=acc,
        max_iter=epochs_to_iters(epochs, dataset_size, per_gpu, num_gpus, acc), warmup_epochs=float(warmup_epochs),
    )


def resolve_accumulate_steps(train: Mapping, total_batch_size: int) -> int:
    """``train.accumulate_steps`` as an int, given ``dataloader.train.total_batch_size``.

    * an int: used as is; if ``train.effective_batch_size`` is also set, it must equal
      ``total_batch_size * accumulate_steps`` (otherwise the paper's schedule silently changes);
    * ``"auto"``: ``train.effective_batch_size // total_batch_size`` (must divide exactly), so
      that ``dataloader.train.total_batch_size=<per-GPU batch x GPUs>`` alone adapts a config to
      another number of GPUs.
    """
    total_batch_size = _positive_int(total_batch_size, "dataloader.train.total_batch_size")
    acc = train.get("accumulate_steps", 1)
    eff = train.get("effective_batch_size", None)
    if acc == "auto":
        if eff is None:
            raise ValueError("train.accumulate_steps='auto' needs train.effective_batch_size")
        eff = _positive_int(eff, "train.effective_batch_size")
        if eff % total_batch_size:
            raise ValueError(
                f"train.effective_batch_size={eff} is not a multiple of dataloader.train.total_batch_size="
                f"{total_batch_size}: choose a per-GPU batch x GPUs that divides it"
            )
        return eff // total_batch_size
    acc = _positive_int(acc, "train.accumulate_steps")
    if eff is not None and acc * total_batch_size != int(eff):
        raise ValueError(
            f"train.accumulate_steps={acc} x dataloader.train.total_batch_size={total_batch_size} = "
            f"{acc * total_batch_size} differs from train.effective_batch_size={eff}; set "
            "train.accumulate_steps=auto or train.effective_batch_size=null"
        )
    return acc


# ---------------------------------------------------------------------------------------------
# LazyConfig helpers (used inside configs/*.py; they edit the config objects in place)
# ---------------------------------------------------------------------------------------------
def apply_recipe(recipe: Recipe, *, train, dataloader, lr_multiplier=None) -> None:
    """Write ``recipe`` into a LazyConfig: ``train.max_iter``, ``train.effective_batch_size``,
    ``train.accumulate_steps = "auto"`` (resolved by tools/train_net.py as effective batch /
    ``dataloader.train.total_batch_size``), ``dataloader.train.total_batch_size`` (per-GPU batch
    x ``recipe.num_gpus``), the warmup fraction, and ``train.recipe`` (the recipe, for the record)."""
    train["max_iter"] = recipe.max_iter
    train["effective_batch_size"] = recipe.effective_batch
    train["accumulate_steps"] = "auto"
    train["recipe"] = recipe.as_dict()
    dataloader["train"]["total_batch_size"] = recipe.total_batch_size
    if lr_multiplier is not None:
        lr_multiplier["warmup_length"] = recipe.warmup_length


def set_input_size(dataloader, size, test_size=None) -> None:
    """Set the training crop / network input size (int or (H, W), multiples of 14) of a
    :class:`PanopticCentroidDatasetMapper` data config, and the test resize (longest side;
    default ``max(size)``)."""
    hw = (int(size), int(size)) if isinstance(size, int) else tuple(int(v) for v in size)
    if len(hw) != 2 or any(v <= 0 or v % 14 for v in hw):
        raise ValueError(f"set_input_size: size must be positive multiples of 14, got {size!r}")
    value = hw[0] if hw[0] == hw[1] else list(hw)
    mapper = dataloader["train"]["mapper"]
    mapper["input_size"] = value
    mapper["augmentations"]["size"] = value
    dataloader["test"]["mapper"]["augmentations"]["size"] = int(test_size if test_size is not None else max(hw))


def set_decoder_upsampling(model, dataloader, num_upsample: int, patch_size: int = 14) -> None:
    """Set the decoder's number of 2x upsamplings AND the training mapper's ``output_stride``
    (``patch_size / 2**num_upsample``: the size of the targets it builds) together, so the two
    cannot disagree: ICML 3 (output 8/14 of the input), paper_v1 4 (16/14)."""
    n = int(num_upsample)
    if n < 0 or n != num_upsample:
        raise ValueError(f"set_decoder_upsampling: num_upsample must be an int >= 0, got {num_upsample!r}")
    model["decoder"]["num_upsample"] = n
    dataloader["train"]["mapper"]["output_stride"] = patch_size / 2**n


def use_resumable_loader(dataloader, seed="${train.seed}") -> None:
    """Make ``dataloader.train`` a :func:`pe_panoptic.data.resumable.build_resumable_train_loader`
    (same arguments as detectron2's loader; exact ``--resume`` and a data order independent of the
    number of GPUs), seeded from ``train.seed`` by default."""
    from pe_panoptic.data.resumable import build_resumable_train_loader

    train = dataloader["train"]
    train["_target_"] = build_resumable_train_loader
    train["seed"] = seed
    if "aspect_ratio_grouping" in train:
        train["aspect_ratio_grouping"] = False


def set_task_probs(dataloader, task_probs) -> None:
    """One task per optimizer step (paper_v1): ``dataloader.train.task_probs = task_probs`` with
    ``effective_batch_size = ${train.effective_batch_size}``, so the loader tags all micro-batches
    of a step with the step's task (:mod:`pe_panoptic.data.task_draw`). Needs the resumable or
    the mixed train loader (:func:`use_resumable_loader` first)."""
    from pe_panoptic.data.task_draw import check_task_probs

    train = dataloader["train"]
    target = str(getattr(train.get("_target_"), "__name__", train.get("_target_"))).rsplit(".", 1)[-1]
    if target not in ("build_resumable_train_loader", "build_mixed_train_loader"):
        raise ValueError(f"set_task_probs: dataloader.train is {target!r}; one task per step needs "
                         "build_resumable_train_loader (use_resumable_loader) or build_mixed_train_loader")
    train["task_probs"] = check_task_probs(task_probs)
    train["effective_batch_size"] = "${train.effective_batch_size}"
