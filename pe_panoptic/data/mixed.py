"""A resumable training loader over several datasets, ONE dataset per batch (multi-task training
on COCO panoptic + NYUv2 depth, ICML stage 3 with depth).

Each *effective* batch (one optimizer step: ``effective_batch_size`` images over all processes
and accumulation micro-batches) comes from one dataset, drawn with probabilities ``weights``
from ``(seed, step)`` alone, so every process and every micro-batch of a step agree, a resumed
run draws the same datasets, and the draws do not depend on the number of GPUs. The paper gives
no proportions for its datasets; ``weights=None`` makes them proportional to the dataset sizes,
i.e. every image is used about equally often, as when sampling from the concatenation.

Inside a dataset the images follow that dataset's own stream, exactly as in
:mod:`pe_panoptic.data.resumable`: dataset ``d`` has a :class:`~pe_panoptic.data.resumable.SampleStream`
(an epoch-wise permutation from ``(seed, d)``); the ``k``-th micro-batch drawn from ``d`` reads
its positions ``[k T, (k + 1) T)`` (``T = total_batch_size``), split over the processes, and
the augmentations are seeded from ``(seed, d, position)``. Micro-batch ``g`` is step
``g // A`` (``A = effective_batch_size / T``); ``k`` counts the earlier micro-batches of ``d``,
computed from the draws of the earlier steps (vectorised and cached: ~0.1 s for 10^6 steps,
once per worker after a resume).

Every mapped dict is tagged with ``dataset`` (the dataset's name) and, when ``tasks`` are given,
``tasks`` (the tasks its labels supervise): :class:`pe_panoptic.modeling.meta_arch.PixelCentroidHead`
then trains only those tasks on the batch (a COCO batch: semantic + instance; a NYUv2 batch:
depth), where a single-dataset batch has no targets for the other tasks. With ``task_probs``
(one task per optimizer step, :mod:`pe_panoptic.data.task_draw`, drawn from ``(seed, step)``)
``tasks`` is the drawn task, intersected with the dataset's tasks when those are given (empty
when the dataset has no labels for the drawn task: the batch then trains nothing).
"""
from __future__ import annotations

import itertools
import logging
from typing import Callable, Dict, Iterator, List, Optional, Sequence

import numpy as np
import torch.utils.data as torchdata
from omegaconf import DictConfig, ListConfig

from detectron2.data.common import DatasetFromList
from detectron2.utils import comm

from pe_panoptic.data.resumable import LazyStartLoader, SampleStream, _identity, _mix, _RankBatches
from pe_panoptic.data.task_draw import StepTaskDraw, check_task_probs

__all__ = ["DatasetSchedule", "MixedTrainLoader", "build_mixed_train_loader", "dataset_dicts_per_name"]

logger = logging.getLogger(__name__)

_DRAW_SALT = 0x4D49_5844  # dataset draws
_STREAM_SALT = 0x5354_524D  # per-dataset streams
_CHUNK = 4096
_M64 = (1 << 64) - 1


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """The splitmix64 finaliser on uint64 arrays (wrapping arithmetic)."""
    x = x.astype(np.uint64)
    with np.errstate(over="ignore"):
        x = x + np.uint64(0x9E3779B97F4A7C15)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


class DatasetSchedule:
    """Which dataset each optimizer step draws, and how many micro-batches each dataset had
    before a given micro-batch; a pure function of ``(seed, weights, batches_per_step)``."""

    def __init__(self, weights: Sequence[float], seed: int, batches_per_step: int = 1):
        w = np.asarray([float(v) for v in weights], dtype=np.float64)
        if w.ndim != 1 or len(w) < 1 or (w < 0).any() or not np.isfinite(w).all() or w.sum() <= 0:
            raise ValueError(f"DatasetSchedule: weights must be non-negative with a positive sum, got {list(weights)}")
        if int(batches_per_step) < 1:
            raise ValueError(f"DatasetSchedule: batches_per_step must be >= 1, got {batches_per_step}")
        self.probs = w / w.sum()
        self.cum = np.cumsum(self.probs)
        self.cum[-1] = 1.0
        self.key = np.uint64(_mix(seed, _DRAW_SALT) & _M64)
        self.batches_per_step = int(batches_per_step)
        self._prefix: List[np.ndarray] = [np.zeros(len(w), dtype=np.int64)]  # steps per dataset before chunk c
        self._cached = (-1, None)

    def draws(self, first_step: int, count: int) -> np.ndarray:
        """Dataset index of steps ``first_step .. first_step + count - 1``."""
        steps = np.arange(first_step, first_step + count, dtype=np.uint64)
        with np.errstate(over="ignore"):
            h = _splitmix64(steps * np.uint64(0xD1B54A32D192ED03) ^ self.key)
        u = (h >> np.uint64(11)).astype(np.float64) / float(1 << 53)
        return np.minimum(np.searchsorted(self.cum, u, side="right"), len(self.cum) - 1)

    def _chunk(self, c: int) -> np.ndarray:
        """Draws of chunk ``c`` (steps ``[c C, (c + 1) C)``), the last one cached."""
        if self._cached[0] != c:
            self._cached = (c, self.draws(c * _CHUNK, _CHUNK))
        return self._cached[1]

    def dataset_of_step(self, step: int) -> int:
        c, offset = divmod(int(step), _CHUNK)
        return int(self._chunk(c)[offset])

    def _steps_before(self, step: int) -> np.ndarray:
        """Steps per dataset among steps ``0 .. step - 1``."""
        chunk, offset = divmod(int(step), _CHUNK)
        while len(self._prefix) <= chunk:
            c = len(self._prefix) - 1
            self._prefix.append(self._prefix[-1] + np.bincount(self.draws(c * _CHUNK, _CHUNK),
                                                               minlength=len(self.cum)))
        return self._prefix[chunk] + np.bincount(self._chunk(chunk)[:offset], minlength=len(self.cum))

    def locate(self, batch: int) -> tuple:
        """``(dataset, k)``: micro-batch ``batch`` reads dataset ``dataset``'s ``k``-th micro-batch."""
        if batch < 0:
            raise ValueError(f"DatasetSchedule: negative micro-batch {batch}")
        step, within = divmod(int(batch), self.batches_per_step)
        d = self.dataset_of_step(step)
        return d, int(self._steps_before(step)[d]) * self.batches_per_step + within


class _MixedRankBatches(torchdata.IterableDataset):
    def __init__(self, loaders: Sequence[_RankBatches], schedule: DatasetSchedule, names: Sequence[str],
                 tasks: Optional[Sequence[tuple]], start_batch: int, task_draw: Optional[StepTaskDraw] = None):
        self.loaders = list(loaders)
        self.task_draw = task_draw
        self.schedule = schedule
        self.names = list(names)
        self.tasks = tasks
        self.start_batch = int(start_batch)

    def batch(self, g: int) -> List[dict]:
        d, k = self.schedule.locate(g)
        loader = self.loaders[d]
        tasks = None if self.tasks is None else tuple(self.tasks[d])
        if self.task_draw is not None:  # the task of this micro-batch's optimizer step
            drawn = self.task_draw.tasks(g)
            tasks = drawn if tasks is None else tuple(t for t in tasks if t in drawn)
        out = []
        for p in loader.positions(k):
            x = loader.load(p)
            x["dataset"] = self.names[d]
            if tasks is not None:
                x["tasks"] = tasks
            out.append(x)
        return out

    def __iter__(self) -> Iterator[List[dict]]:
        info = torchdata.get_worker_info()
        worker, num_workers = (0, 1) if info is None else (info.id, info.num_workers)
        for g in itertools.count(self.start_batch + worker, num_workers):
            yield self.batch(g)


class MixedTrainLoader(LazyStartLoader):
    """Iterable of per-process batches, each from one dataset (module docstring); resumable with
    :meth:`set_start` like :class:`pe_panoptic.data.resumable.ResumableTrainLoader`."""

    def __init__(self, datasets: Sequence, mappers: Sequence[Callable], *, total_batch_size: int,
                 names: Optional[Sequence[str]] = None, weights: Optional[Sequence[float]] = None,
                 tasks: Optional[Sequence[Sequence[str]]] = None, effective_batch_size: Optional[int] = None,
                 num_workers: int = 0, seed: Optional[int] = None, shuffle: bool = True, max_retries: int = 10,
                 task_probs: Optional[Dict[str, float]] = None):
        n = len(datasets)
        if n < 1 or len(mappers) != n:
            raise ValueError(f"MixedTrainLoader: {n} datasets and {len(mappers)} mappers; give one mapper per dataset")
        names = [f"dataset{i}" for i in range(n)] if names is None else [str(v) for v in names]
        if len(names) != n or len(set(names)) != n:
            raise ValueError(f"MixedTrainLoader: names {names} must be {n} distinct names")
        if tasks is not None:
            tasks = [tuple(t) for t in tasks]
            if len(tasks) != n or any(not t for t in tasks):
                raise ValueError(f"MixedTrainLoader: tasks {tasks} must give a non-empty task tuple per dataset")
        world, rank = comm.get_world_size(), comm.get_rank()
        total = int(total_batch_size)
        if total < 1 or total % world:
            raise ValueError(f"total_batch_size={total_batch_size} must be a positive multiple of the number of "
                             f"processes ({world})")
        per_step = 1
        if effective_batch_size is not None:
            eff = int(effective_batch_size)
            if eff < total or eff % total:
                raise ValueError(f"effective_batch_size={effective_batch_size} must be a multiple of "
                                 f"total_batch_size={total} (one dataset is drawn per effective batch)")
            per_step = eff // total
        if int(num_workers) < 0:
            raise ValueError(f"num_workers must be >= 0, got {num_workers}")
        if seed is None or int(seed) < 0:
            seed = comm.shared_random_seed()
        self.seed = int(seed)
        sizes = [len(d) for d in datasets]
        empty = [nm for nm, s in zip(names, sizes) if s < 1]
        if empty:
            raise ValueError(f"MixedTrainLoader: datasets {empty} are empty")
        self.datasets = [DatasetFromList(d, copy=True) if isinstance(d, list) else d for d in datasets]
        if weights is None:
            weights = sizes
        elif len(weights) != n:
            raise ValueError(f"MixedTrainLoader: {len(weights)} weights for {n} datasets")
        self.names, self.tasks, self.mappers = names, tasks, list(mappers)
        self.total_batch_size, self.batch_size = total, total // world
        self.rank, self.world_size = rank, world
        self.num_workers, self.shuffle, self.max_retries = int(num_workers), bool(shuffle), int(max_retries)
        self.schedule = DatasetSchedule(weights, self.seed, per_step)
        self.batches_per_step = per_step
        self.task_probs = check_task_probs(task_probs, "dataloader.train.task_probs")
        self.task_draw = None if self.task_probs is None else StepTaskDraw(self.task_probs, self.seed, per_step)
        self.streams = [SampleStream(s, _mix(self.seed, _STREAM_SALT, i), self.shuffle) for i, s in enumerate(sizes)]
        self.start_batch = 0
        self._started = False
        logger.info("MixedTrainLoader: " + ", ".join(
            f"{nm} ({s} images, p={p:.4f})" for nm, s, p in zip(names, sizes, self.schedule.probs))
            + f"; one dataset per {per_step} micro-batch(es) of {total} images")

    @property
    def probs(self) -> Dict[str, float]:
        return {nm: float(p) for nm, p in zip(self.names, self.schedule.probs)}

    def _batches(self) -> _MixedRankBatches:
        loaders = [
            _RankBatches(ds, mapper, stream, total_batch_size=self.total_batch_size, rank=self.rank,
                         world_size=self.world_size, start_batch=0, max_retries=self.max_retries)
            for ds, mapper, stream in zip(self.datasets, self.mappers, self.streams)
        ]
        return _MixedRankBatches(loaders, self.schedule, self.names, self.tasks, self.start_batch, self.task_draw)

    def _torch_loader(self) -> torchdata.DataLoader:
        self._started = True
        return torchdata.DataLoader(self._batches(), batch_size=None, num_workers=self.num_workers,
                                    collate_fn=_identity, persistent_workers=False)


def dataset_dicts_per_name(names: Sequence[str], filter_empty: bool = False) -> List[List[dict]]:
    """``[get_detection_dataset_dicts(name) for name in names]``: the ``datasets`` argument of
    :func:`build_mixed_train_loader` in a LazyConfig. (A list of ``L(get_detection_dataset_dicts)``
    nodes would not do: ``instantiate`` turns a list into an OmegaConf ``ListConfig``, converting
    every dataset dict into a ``DictConfig``, slowly and with other semantics.)"""
    from detectron2.data import get_detection_dataset_dicts

    return [get_detection_dataset_dicts(str(n), filter_empty=filter_empty) for n in names]


def build_mixed_train_loader(datasets: Sequence, mappers: Sequence[Callable], *, total_batch_size: int,
                             names: Optional[Sequence[str]] = None, weights: Optional[Sequence[float]] = None,
                             tasks: Optional[Sequence[Sequence[str]]] = None,
                             effective_batch_size: Optional[int] = None, num_workers: int = 0,
                             seed: Optional[int] = None, shuffle: bool = True,
                             task_probs: Optional[Dict[str, float]] = None) -> MixedTrainLoader:
    """LazyConfig entry point of :class:`MixedTrainLoader` (one dataset per effective batch)."""
    for i, d in enumerate(datasets):
        if isinstance(d, (DictConfig, ListConfig)):
            raise TypeError(f"build_mixed_train_loader: dataset {i} is an OmegaConf {type(d).__name__}; in a "
                            "LazyConfig give datasets=L(dataset_dicts_per_name)(names=[...])")
        if isinstance(d, torchdata.IterableDataset):
            raise ValueError(f"build_mixed_train_loader: dataset {i} must be map-style (a list of dicts)")
    return MixedTrainLoader(datasets, mappers, total_batch_size=total_batch_size, names=names, weights=weights,
                            tasks=tasks, effective_batch_size=effective_batch_size, num_workers=num_workers,
                            seed=seed, shuffle=shuffle, task_probs=task_probs)
