"""Shared steps of the sdist installers (``tools/install_detectron2.py``,
``tools/install_mask2former.py``): fetch a pinned sdist with pip and check its sha256, apply a
fixed list of literal source edits (each must match exactly its expected number of times), and
``pip install --no-deps --no-build-isolation`` the patched tree.

It runs before ``pip install -e .`` (Makefile), so it uses the standard library only and is
imported by the installers as a sibling module (the directory of a running script is on
``sys.path``).
"""
import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from typing import Callable, Optional, Sequence, Tuple

#: one source edit: (relative path, literal, replacement, expected count, upstream commit / reason)
Patch = Tuple[str, str, str, int, str]


def sha256_of(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def patch_id(*parts) -> str:
    """Identifies a patch set (the ``repr`` of its parts): an install made with other patches is redone."""
    return hashlib.sha256("".join(p if isinstance(p, str) else repr(p) for p in parts).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Sdist:
    """A pinned sdist: pip requirement (``name==version``), file name, sha256, the folder it
    unpacks to, its ``.egg-info`` folder, and the name the messages use (``install_<tool>``)."""

    requirement: str
    file_name: str
    sha256: str
    src_dir: str
    egg_info: str
    tool: str
    what: str  # e.g. "detectron2", "Mask2Former": in "refusing to install an unknown ... source"

    def log(self, msg: str) -> None:
        print(f"[{self.tool}] {msg}", flush=True)

    def fail(self, msg: str) -> "SystemExit":
        return SystemExit(f"[{self.tool}] {msg}")

    def fetch(self, dest_dir: str, sdist: Optional[str] = None) -> str:
        """The sdist (downloaded into ``dest_dir`` by pip, or the local copy ``sdist``), hash-checked."""
        if sdist is None:
            # pip fetches it from the configured index and checks the pinned hash itself
            # (--require-hashes); torch must already be installed since setup.py imports it.
            req = os.path.join(dest_dir, f"requirements-{self.tool}.txt")
            with open(req, "w") as f:
                f.write(f"{self.requirement} --hash=sha256:{self.sha256}\n")
            self.log(f"pip download {self.requirement} (sdist, hash-checked)")
            subprocess.run(
                [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--no-binary", ":all:",
                 "--no-build-isolation", "--require-hashes", "-r", req, "-d", dest_dir],
                check=True,
            )
            sdist = os.path.join(dest_dir, self.file_name)
        digest = sha256_of(sdist)
        if digest != self.sha256:
            raise self.fail(f"{sdist}: sha256 {digest} does not match the pinned {self.sha256}; "
                            f"refusing to install an unknown {self.what} source.")
        self.log(f"sha256 ok: {sdist}")
        return sdist

    def apply(self, src_root: str, patches: Sequence[Patch]) -> None:
        """Apply every literal edit; stop when one does not match its expected count."""
        for rel, old, new, count, why in patches:
            path = os.path.join(src_root, rel)
            with open(path) as f:
                text = f.read()
            found = text.count(old)
            if found != count:
                raise self.fail(f"{rel}: expected {count} occurrence(s) of {old!r}, found {found}; "
                                "the sdist is not the one these patches were written for.")
            with open(path, "w") as f:
                f.write(text.replace(old, new))
            self.log(f"patched {rel} ({why})")

    def install(self, args: argparse.Namespace, patch: Callable[[str], None], installed_ok: Callable[[], Optional[str]],
                note: str = "no C++ extension") -> None:
        """The installer's main: unless already installed (``installed_ok``) or ``--force``, fetch,
        unpack, ``patch(src_root)``, optionally keep the tree, pip install, check the result."""
        if not args.force:
            have = installed_ok()
            if have:
                self.log(f"already installed: {self.what.lower()} {have}")
                return
        work = tempfile.mkdtemp(prefix=f"{self.tool}-build-")
        try:
            sdist = self.fetch(work, args.sdist)
            with tarfile.open(sdist) as tar:
                tar.extractall(work, filter="data")
            src_root = os.path.join(work, self.src_dir)
            shutil.rmtree(os.path.join(src_root, self.egg_info), ignore_errors=True)
            patch(src_root)
            if args.keep_build:
                shutil.copytree(src_root, args.keep_build, dirs_exist_ok=True)
            self.log(f"pip install --no-deps --no-build-isolation ({note})")
            subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                            "--no-cache-dir", src_root], check=True)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        have = installed_ok()
        if not have:
            raise self.fail(f"{self.what.lower()} does not import after installation")
        self.log(f"installed {self.what.lower()} {have}")


def parser(doc: str, file_name: str) -> argparse.ArgumentParser:
    """The installers' command line: ``--sdist``, ``--force``, ``--keep-build``."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sdist", help=f"local copy of {file_name} (checked by sha256)")
    ap.add_argument("--force", action="store_true", help="reinstall even if already installed")
    ap.add_argument("--keep-build", help="directory in which to keep the patched source tree")
    return ap
