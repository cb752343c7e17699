"""Modules of pe_panoptic as they were before a refactor, loaded from git, for bit-identity tests.

``load_legacy("pe_panoptic/postprocess.py", "pe_panoptic")`` writes ``git show
LEGACY_COMMIT:pe_panoptic/postprocess.py`` to a temporary file and imports it as
``pe_panoptic._legacy_postprocess`` with ``__package__ = "pe_panoptic"``, so its relative imports
(``from .encoding import ...``) resolve to today's sibling modules. Only the module under test is
old; everything it imports is current. The test is skipped when git or the commit is missing (a
source tarball, a shallow clone); a path that the commit does not hold is an error.
"""
import importlib.util
import pathlib
import shutil
import subprocess
import sys
import tempfile

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
#: the last commit before ``postprocess.py``, ``losses.py`` and ``data/synthetic.py`` became packages
LEGACY_COMMIT = "e173ad8"

_TMP = pathlib.Path(tempfile.mkdtemp(prefix="pe_panoptic_legacy_"))


def _git(*args) -> subprocess.CompletedProcess:
    return subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True)


def legacy_source(path: str, commit: str = LEGACY_COMMIT) -> str:
    if shutil.which("git") is None:
        pytest.skip("git is not available: cannot load the pre-refactor module")
    if _git("rev-parse", "--is-inside-work-tree").returncode != 0:
        pytest.skip(f"{ROOT} is not a git checkout: cannot load the pre-refactor module")
    if _git("rev-parse", "--verify", "--quiet", f"{commit}^{{commit}}").returncode != 0:
        pytest.skip(f"commit {commit} is not in this clone (shallow?): cannot load the pre-refactor module")
    res = _git("show", f"{commit}:{path}")
    if res.returncode != 0:
        raise FileNotFoundError(f"git show {commit}:{path} failed: {res.stderr.strip()}")
    return res.stdout


def load_legacy(path: str, package: str, commit: str = LEGACY_COMMIT):
    """The module ``path`` (repository-relative) at ``commit``, imported inside ``package``."""
    name = f"{package}._legacy_{pathlib.PurePosixPath(path).stem}"
    if name in sys.modules:
        return sys.modules[name]
    file = _TMP / f"{commit}_{path.replace('/', '_')}"
    file.write_text(legacy_source(path, commit))
    spec = importlib.util.spec_from_file_location(name, file, submodule_search_locations=None)
    module = importlib.util.module_from_spec(spec)
    module.__package__ = package
    sys.modules[name] = module  # dataclasses resolve string annotations through sys.modules
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def public_names(module) -> list:
    """Public names of ``module``: its ``__all__`` plus every module-level name without a leading
    ``_`` that it defines itself (functions and classes whose ``__module__`` is the module,
    constants); names it imports (modules, typing helpers, other modules' functions) are left out."""
    import types

    out = set(getattr(module, "__all__", ()))
    for k, v in vars(module).items():
        if k.startswith("_") or k == "annotations" or isinstance(v, types.ModuleType):
            continue
        if callable(v) or isinstance(v, type):
            if getattr(v, "__module__", None) == module.__name__:
                out.add(k)
        else:
            out.add(k)
    return sorted(out)
