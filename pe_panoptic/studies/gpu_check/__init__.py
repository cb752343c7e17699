"""The sections of ``tools/gpu_check.py`` (every GPU figure from one prepared script, docs/gpu.md),
one module per job: time caps and OOM recording (:mod:`.runner`), what runs on the GPU and in a
``--dry-run`` (:mod:`.settings`), the ``device`` and ``train`` sections (:mod:`.device_train`),
``memory`` and ``eval`` (:mod:`.memory_eval`), ``learning`` (:mod:`.learning`) and the summary
table (:mod:`.report`). Every timing reuses :mod:`pe_panoptic.studies.benchmark`."""
from pe_panoptic.studies.gpu_check.runner import Budget, CapReached, attempt, free_memory, is_oom, run_section
from pe_panoptic.studies.gpu_check.settings import DEFAULT_CAPS, Settings, make_settings

SECTIONS = ("device", "train", "memory", "eval", "learning")

__all__ = ["SECTIONS", "Budget", "CapReached", "attempt", "free_memory", "is_oom", "run_section", "DEFAULT_CAPS",
           "Settings", "make_settings"]
