"""A training data loader whose stream is a pure function of (seed, position): resumable and
independent of the number of processes and data-loader workers.

detectron2 v0.6's ``build_detection_train_loader`` restarts its ``TrainingSampler`` from the seed
when a run is resumed (the images after ``--resume`` are the first images of the run again) and
draws augmentations from per-worker RNGs, so neither a resumed run nor a run on another number
of GPUs sees the same data as the original one. Here:

* the global stream is ``position 0, 1, 2, ...``; position ``p`` reads image
  ``perm_e[p mod N]`` where ``perm_e`` is a random permutation of the ``N`` images drawn from
  ``(seed, e)`` for epoch ``e = p // N`` (every image once per epoch, like ``TrainingSampler``),
  and the mapper (augmentations) runs with ``random`` / ``numpy.random`` / ``torch`` seeded from
  ``(seed, p)``;
* accumulation step ("micro-batch") ``g`` is positions ``[g T, (g + 1) T)`` with
  ``T = total_batch_size``; process ``r`` of ``R`` takes its ``T / R`` consecutive positions, and
  data-loader worker ``k`` of ``K`` builds micro-batches ``g = k (mod K)`` (PyTorch's
  ``DataLoader`` returns worker outputs round-robin, so the order is ``g = 0, 1, 2, ...``);
* :meth:`ResumableTrainLoader.set_start` skips the first micro-batches, so a run resumed at
  iteration ``i`` with ``accumulate_steps = A`` continues at micro-batch ``i A`` with exactly the
  images and augmentations of an uninterrupted run.

Consequences: 2 processes x batch 1 see the same images as 1 process x batch 2 and as 1 process
x batch 1 x 2 accumulation steps. Aspect-ratio grouping is not supported (the mapper pads every
image to a fixed ``input_size``).

Use it as a drop-in replacement of ``build_detection_train_loader`` in a LazyConfig::

    dataloader.train._target_ = "pe_panoptic.data.resumable.build_resumable_train_loader"
    dataloader.train.seed = "${train.seed}"   # optional; None: a seed shared by all processes

One task per optimizer step (paper_v1): ``task_probs={task: probability}`` tags every mapped dict
of a step with ``tasks = (drawn task,)`` (:mod:`pe_panoptic.data.task_draw`); give
``effective_batch_size`` (images per optimizer step over all processes and accumulation
micro-batches) so that the micro-batches of one step share its task.
"""
from __future__ import annotations

import contextlib
import copy
import itertools
import logging
import random
from abc import ABC, abstractmethod
from typing import Callable, Dict, Iterator, List, Optional

import numpy as np
import torch
import torch.utils.data as torchdata

from detectron2.data.common import DatasetFromList
from detectron2.utils import comm

from pe_panoptic.data.task_draw import StepTaskDraw, check_task_probs

__all__ = ["SampleStream", "ResumableTrainLoader", "build_resumable_train_loader", "seeded_rng"]

logger = logging.getLogger(__name__)

_PERM_SALT = 0x5045_5045  # separates permutation seeds from per-sample seeds
_SAMPLE_SALT = 0x4155_4735


def _mix(*words: int) -> int:
    """A 32-bit seed from integers (numpy's SeedSequence hashing; well spread even for (s, 0), (s, 1))."""
    return int(np.random.SeedSequence([int(w) % (2**63) for w in words]).generate_state(1)[0])


@contextlib.contextmanager
def seeded_rng(seed: int):
    """Run a block with ``random``, ``numpy.random`` and torch's CPU RNG seeded with ``seed``; the
    previous global states are restored afterwards (so the caller's RNG streams are untouched)."""
    py_state, np_state = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        random.seed(seed)
        np.random.seed(seed % (2**32))
        torch.manual_seed(seed)
        try:
            yield
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)


class SampleStream:
    """Infinite, seekable stream of dataset indices: position ``p`` -> image index and the seed of
    its augmentations (see module docstring)."""

    def __init__(self, size: int, seed: int, shuffle: bool = True):
        if int(size) < 1:
            raise ValueError(f"SampleStream: the dataset is empty (size={size})")
        self.size = int(size)
        self.seed = int(seed)
        self.shuffle = bool(shuffle)
        self._epoch, self._perm = None, None

    def permutation(self, epoch: int) -> np.ndarray:
        if self._epoch != epoch:
            if self.shuffle:
                g = torch.Generator().manual_seed(_mix(self.seed, _PERM_SALT, epoch))
                self._perm = torch.randperm(self.size, generator=g).numpy()
            else:
                self._perm = np.arange(self.size)
            self._epoch = epoch
        return self._perm

    def index(self, position: int) -> int:
        if position < 0:
            raise ValueError(f"SampleStream: negative position {position}")
        epoch, offset = divmod(int(position), self.size)
        return int(self.permutation(epoch)[offset])

    def sample_seed(self, position: int, attempt: int = 0) -> int:
        return _mix(self.seed, _SAMPLE_SALT, position, attempt)


class _RankBatches(torchdata.IterableDataset):
    """This process's share of every micro-batch from ``start_batch`` on, split over workers."""

    def __init__(self, dataset, mapper: Callable, stream: SampleStream, *, total_batch_size: int,
                 rank: int, world_size: int, start_batch: int, max_retries: int,
                 task_draw: Optional[StepTaskDraw] = None):
        self.dataset = dataset
        self.mapper = mapper
        self.stream = stream
        self.total = int(total_batch_size)
        self.per_rank = self.total // int(world_size)
        self.rank = int(rank)
        self.start_batch = int(start_batch)
        self.max_retries = int(max_retries)
        self.task_draw = task_draw

    def positions(self, batch: int) -> range:
        first = batch * self.total + self.rank * self.per_rank
        return range(first, first + self.per_rank)

    def load(self, position: int):
        """Mapped sample at ``position``; if the mapper returns ``None`` (unusable sample), retry
        with other images drawn deterministically from ``(seed, position, attempt)``."""
        idx = self.stream.index(position)
        for attempt in range(self.max_retries + 1):
            seed = self.stream.sample_seed(position, attempt)
            with seeded_rng(seed):
                out = self.mapper(self.dataset[idx])
            if out is not None:
                return out
            failed = idx
            idx = int(np.random.default_rng(seed).integers(self.stream.size))
            logger.warning(f"mapper returned None for dataset index {failed} (position {position}); trying index {idx}")
        raise RuntimeError(f"ResumableTrainLoader: the mapper rejected {self.max_retries + 1} images in a row "
                           f"at stream position {position}; is the dataset usable?")

    def __iter__(self) -> Iterator[List[dict]]:
        info = torchdata.get_worker_info()
        worker, num_workers = (0, 1) if info is None else (info.id, info.num_workers)
        for batch in itertools.count(self.start_batch + worker, num_workers):
            out = [self.load(p) for p in self.positions(batch)]
            if self.task_draw is not None:  # the task of this micro-batch's optimizer step
                tasks = self.task_draw.tasks(batch)
                for x in out:
                    x["tasks"] = tasks
            yield out


def _identity(x):
    return x


def batches_per_step(effective_batch_size: Optional[int], total_batch_size: int) -> int:
    """Micro-batches of ``total_batch_size`` images per optimizer step of ``effective_batch_size``
    images (``None``: 1), or a ``ValueError`` when it is not a multiple."""
    if effective_batch_size is None:
        return 1
    eff, total = int(effective_batch_size), int(total_batch_size)
    if eff < total or eff % total:
        raise ValueError(f"effective_batch_size={effective_batch_size} must be a multiple of "
                         f"total_batch_size={total} (one task / dataset is drawn per optimizer step)")
    return eff // total


class LazyStartLoader(ABC):
    """Base of the resumable loaders: :meth:`set_start` (micro-batches to skip) before the first
    ``next()``, which starts the workers (``_torch_loader``, defined by the subclass)."""

    start_batch = 0
    _started = False

    def set_start(self, consumed_batches: int) -> None:
        """Continue after ``consumed_batches`` micro-batches (= iterations x accumulate_steps)."""
        if int(consumed_batches) < 0:
            raise ValueError(f"consumed_batches must be >= 0, got {consumed_batches}")
        if self._started:
            raise RuntimeError(f"{type(self).__name__}.set_start: iteration has already started")
        self.start_batch = int(consumed_batches)

    @abstractmethod
    def _torch_loader(self) -> torchdata.DataLoader:
        """The torch ``DataLoader`` of this process's batches from ``start_batch`` on; sets ``_started``."""

    def __iter__(self) -> Iterator[List[dict]]:
        return _LazyIterator(self)


class ResumableTrainLoader(LazyStartLoader):
    """Iterable of per-process batches (lists of mapped dicts), resumable with :meth:`set_start`.

    Iteration starts lazily: ``iter(loader)`` returns at once and the worker processes start at
    the first ``next()``, so :meth:`set_start` may be called after the trainer has taken its
    iterator (detectron2's ``SimpleTrainer`` calls ``iter()`` in its constructor, before the
    checkpoint that holds the iteration to resume from is loaded).
    """

    def __init__(self, dataset, mapper: Callable, *, total_batch_size: int, num_workers: int = 0,
                 seed: Optional[int] = None, shuffle: bool = True, max_retries: int = 10,
                 task_probs: Optional[Dict[str, float]] = None, effective_batch_size: Optional[int] = None):
        world, rank = comm.get_world_size(), comm.get_rank()
        if int(total_batch_size) < 1 or int(total_batch_size) % world:
            raise ValueError(f"total_batch_size={total_batch_size} must be a positive multiple of the "
                             f"number of processes ({world})")
        if int(num_workers) < 0:
            raise ValueError(f"num_workers must be >= 0, got {num_workers}")
        if seed is None or int(seed) < 0:
            seed = comm.shared_random_seed()
        if isinstance(dataset, list):
            dataset = DatasetFromList(dataset, copy=True)
        self.dataset = dataset
        self.mapper = mapper
        self.total_batch_size = int(total_batch_size)
        self.batch_size = self.total_batch_size // world
        self.num_workers = int(num_workers)
        self.rank, self.world_size = rank, world
        self.stream = SampleStream(len(dataset), int(seed), shuffle)
        self.max_retries = int(max_retries)
        self.batches_per_step = batches_per_step(effective_batch_size, self.total_batch_size)
        self.task_probs = check_task_probs(task_probs, "dataloader.train.task_probs")
        self.task_draw = (None if self.task_probs is None
                          else StepTaskDraw(self.task_probs, self.stream.seed, self.batches_per_step))
        self.start_batch = 0
        self._started = False

    @property
    def seed(self) -> int:
        return self.stream.seed

    def _torch_loader(self) -> torchdata.DataLoader:
        self._started = True
        batches = _RankBatches(
            self.dataset, self.mapper, copy.copy(self.stream), total_batch_size=self.total_batch_size,
            rank=self.rank, world_size=self.world_size, start_batch=self.start_batch, max_retries=self.max_retries,
            task_draw=self.task_draw,
        )
        return torchdata.DataLoader(batches, batch_size=None, num_workers=self.num_workers, collate_fn=_identity,
                                    persistent_workers=False)


class _LazyIterator:
    """Starts the loader's workers at the first ``next()`` (so that ``set_start`` may follow the
    trainer's ``iter()``)."""

    def __init__(self, loader: LazyStartLoader):
        self._loader = loader
        self._it = None

    def __iter__(self):
        return self

    def __next__(self):
        if self._it is None:
            self._it = iter(self._loader._torch_loader())
        return next(self._it)


def build_resumable_train_loader(dataset, *, mapper: Callable, total_batch_size: int, num_workers: int = 0,
                                 seed: Optional[int] = None, shuffle: bool = True, sampler=None,
                                 aspect_ratio_grouping: bool = False, collate_fn=None,
                                 task_probs: Optional[Dict[str, float]] = None,
                                 effective_batch_size: Optional[int] = None) -> ResumableTrainLoader:
    """Drop-in replacement of detectron2's ``build_detection_train_loader`` (same arguments) that
    returns a :class:`ResumableTrainLoader`. ``sampler``, ``aspect_ratio_grouping`` and
    ``collate_fn`` are not supported (the stream defines the order; batches are lists).
    ``task_probs`` / ``effective_batch_size``: one task per optimizer step (module docstring)."""
    if sampler is not None:
        raise ValueError("build_resumable_train_loader: a custom sampler is not supported (the stream is the sampler)")
    if aspect_ratio_grouping:
        raise ValueError("build_resumable_train_loader: aspect_ratio_grouping is not supported")
    if collate_fn is not None:
        raise ValueError("build_resumable_train_loader: collate_fn is not supported (batches are lists)")
    if isinstance(dataset, torchdata.IterableDataset):
        raise ValueError("build_resumable_train_loader: needs a map-style dataset (a list of dicts)")
    return ResumableTrainLoader(dataset, mapper, total_batch_size=total_batch_size, num_workers=num_workers,
                                seed=seed, shuffle=shuffle, task_probs=task_probs,
                                effective_batch_size=effective_batch_size)
