"""NYU Depth v2 *raw* dump -> the pe_panoptic NYUv2 layout (:mod:`pe_panoptic.data.nyu`).

The paper trains depth on "a 47K split" of NYUv2 (ICML Sec. 5), i.e. frames of the raw video
dump of the training scenes, not the 795 labelled images. The raw dump, as the official site
ships it (one folder per scene, e.g. ``bedroom_0001/``), holds the Kinect's unsynchronised
streams as files named after their timestamps::

    <scene>/INDEX.txt                          list of the scene's files (not needed here)
    <scene>/r-<timestamp>-<counter>.ppm        RGB frame, binary PPM (P6), 640 x 480, 8-bit
    <scene>/d-<timestamp>-<counter>.pgm        depth frame, binary PGM (P5), 640 x 480, 16-bit
    <scene>/a-<timestamp>-<counter>.dump       accelerometer record (not used)

Preparation (what the official toolbox and BTS's ``sync_project_frames_multi_threads.m``, the
origin of the common ~24K-50K-frame "sync" training sets, do):

1. scenes: the lines of a train-scene list (e.g. BTS's ``train_scenes.txt``, the scenes of the
   official labelled training split); a listed scene whose folder is missing is an error (or,
   with ``allow_missing_scenes``, skipped and counted);
2. synchronisation, ``get_synched_frames.m``: the scene's files sorted by name; every depth
   frame is kept, matched with the RGB frame of nearest timestamp, found by a pointer that only
   moves forward while the time difference does not grow (ties move on);
3. every ``sample_step``-th synchronised frame from the first (BTS: 7);
4. depth: the PGM's 16-bit samples are little-endian although PGM specifies big-endian (the
   toolbox reads them with ``swapbytes(imread(...))``); :func:`pe_panoptic.data.kinect.project_depth_map`
   converts them to metres registered to the (undistorted) RGB frame;
5. written as ``train/rgb/<stem>.jpg`` (the undistorted RGB) and ``train/depth/<stem>.png``
   (uint16 millimetres, 0 = no depth), stem ``<scene>__<depth frame number:05d>``, and the
   stems to ``splits/train.txt`` (replacing it), so that ``nyuv2_depth_train`` reads them.

Bad frames (unreadable or truncated files, wrong size, no valid depth pixel after projection,
the frame BTS's script excludes as faulty, optionally an RGB/depth time difference above
``max_time_diff``) are skipped with a warning
naming the file and the problem, and counted in the returned statistics (``strict=True`` raises
instead). The test split stays the official 654 labelled images (``datasets/prepare_nyuv2.py``).
"""
from __future__ import annotations

import logging
import os
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image

from pe_panoptic.data.errors import InvalidSampleError
from kinect import project_depth_map  # datasets/kinect.py, beside this file

__all__ = [
    "FRAME_HW",
    "KNOWN_FAULTY_FRAMES",
    "RawFrame",
    "SyncedFrame",
    "PrepareStats",
    "parse_frame_name",
    "read_netpbm",
    "read_raw_depth",
    "read_raw_rgb",
    "scene_frames",
    "synchronise_frames",
    "read_scene_list",
    "metric_depth_to_png",
    "prepare_nyuv2_raw",
    "stats_dict",
]

logger = logging.getLogger(__name__)

#: (H, W) of the dump's frames (the calibration of :mod:`.kinect` is for this size)
FRAME_HW = (480, 640)
#: depth frames left out as faulty by BTS's sync_project_frames_multi_threads.m (the one it names)
KNOWN_FAULTY_FRAMES = frozenset({"d-1315166703.129542-2466101449.pgm"})
_FRAME_RE = re.compile(r"^([rda])-(\d+(?:\.\d+)?)-(\d+)\.(ppm|pgm|dump)$")
_KIND_EXT = {"r": "ppm", "d": "pgm", "a": "dump"}
_HEADER_TOKEN = re.compile(rb"\s*(#[^\n]*\n\s*)*(\S+)")


@dataclass(frozen=True)
class RawFrame:
    """One file of the dump: ``kind`` ``"r"`` (RGB), ``"d"`` (depth) or ``"a"`` (accelerometer)."""

    name: str
    kind: str
    timestamp: float
    counter: int


@dataclass(frozen=True)
class SyncedFrame:
    """A depth frame and its RGB frame (``get_synched_frames.m``'s ``frameList(ii)``)."""

    index: int  # 0-based position of the depth frame in the scene's sorted depth frames
    depth: str
    rgb: str
    time_diff: float


@dataclass
class PrepareStats:
    """What :func:`prepare_nyuv2_raw` did: frames written and skipped, by reason."""

    scenes: int = 0
    synced_frames: int = 0
    sampled_frames: int = 0
    written: int = 0
    missing_scenes: List[str] = field(default_factory=list)
    skipped: Counter = field(default_factory=Counter)
    ignored_files: int = 0

    def summary(self) -> str:
        skipped = ", ".join(f"{k}: {v}" for k, v in sorted(self.skipped.items())) or "none"
        return (f"{self.scenes} scenes ({len(self.missing_scenes)} missing), {self.synced_frames} synchronised "
                f"frames, {self.sampled_frames} sampled, {self.written} written; skipped frames: {skipped}; "
                f"{self.ignored_files} files with unrecognised names ignored")


def parse_frame_name(name: str) -> Optional[RawFrame]:
    """``r-1294439283.377657-2381571548.ppm`` -> ``RawFrame``; ``None`` for other names
    (``INDEX.txt``, stray files). A known prefix with the wrong extension is an error."""
    m = _FRAME_RE.match(name)
    if m is None:
        if re.match(r"^[rda]-\d", name):
            raise InvalidSampleError(f"raw frame {name!r}: expected '<r|d|a>-<timestamp>-<counter>.<ppm|pgm|dump>'")
        return None
    kind, ts, counter, ext = m.groups()
    if _KIND_EXT[kind] != ext:
        raise InvalidSampleError(f"raw frame {name!r}: a '{kind}-' file must end in .{_KIND_EXT[kind]}")
    return RawFrame(name, kind, float(ts), int(counter))


def read_netpbm(path: str, little_endian_16bit: bool = False) -> np.ndarray:
    """A binary PGM (P5, ``[H, W]``) or PPM (P6, ``[H, W, 3]``) as uint8 / uint16.

    16-bit samples are big-endian by the format's definition; ``little_endian_16bit=True``
    reads them little-endian (the NYUv2 depth dump; see module docstring). Raises
    :class:`InvalidSampleError` naming the file for a bad header or truncated data.
    """
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise InvalidSampleError(f"cannot read {path}: {e}") from e
    pos, tokens = 0, []
    for _ in range(4):  # magic, width, height, maxval (comments allowed between them)
        m = _HEADER_TOKEN.match(data, pos)
        if m is None:
            raise InvalidSampleError(f"{path}: truncated PGM/PPM header")
        tokens.append(m.group(2))
        pos = m.end()
    magic = tokens[0]
    if magic not in (b"P5", b"P6"):
        raise InvalidSampleError(f"{path}: not a binary PGM/PPM (magic {magic[:8]!r}, expected b'P5' or b'P6')")
    try:
        width, height, maxval = (int(t) for t in tokens[1:])
    except ValueError:
        raise InvalidSampleError(f"{path}: bad PGM/PPM header {b' '.join(tokens)!r}") from None
    if width < 1 or height < 1 or not 0 < maxval < 65536:
        raise InvalidSampleError(f"{path}: bad size {width}x{height} or maxval {maxval}")
    pos += 1  # exactly one whitespace byte separates the header from the samples
    channels = 3 if magic == b"P6" else 1
    dtype = np.dtype(np.uint8) if maxval < 256 else np.dtype("<u2" if little_endian_16bit else ">u2")
    count = width * height * channels
    if len(data) - pos < count * dtype.itemsize:
        raise InvalidSampleError(
            f"{path}: truncated: {len(data) - pos} bytes of samples, {count * dtype.itemsize} needed for "
            f"{width}x{height}x{channels} at maxval {maxval}")
    arr = np.frombuffer(data, dtype=dtype, count=count, offset=pos).astype(dtype.newbyteorder("="))
    return arr.reshape(height, width, channels) if channels == 3 else arr.reshape(height, width)


def read_raw_depth(path: str) -> np.ndarray:
    """The raw Kinect values ``[H, W]`` uint16 of a dump depth frame (a 16-bit P5, little-endian)."""
    arr = read_netpbm(path, little_endian_16bit=True)
    if arr.ndim != 2 or arr.dtype != np.uint16:
        raise InvalidSampleError(
            f"{path}: expected a 16-bit single-channel PGM depth frame, got {arr.dtype} {arr.shape}")
    return arr


def read_raw_rgb(path: str) -> np.ndarray:
    """The ``[H, W, 3]`` uint8 pixels of a dump RGB frame (an 8-bit P6)."""
    arr = read_netpbm(path)
    if arr.ndim != 3 or arr.dtype != np.uint8:
        raise InvalidSampleError(f"{path}: expected an 8-bit RGB PPM frame, got {arr.dtype} {arr.shape}")
    return arr


def scene_frames(scene_dir: str) -> Tuple[List[RawFrame], List[RawFrame], int]:
    """``(depth frames, RGB frames, number of other files)`` of a scene folder, each list sorted by
    file name as ``get_synched_frames.m`` sorts them (equal-length timestamps sort by time)."""
    if not os.path.isdir(scene_dir):
        raise FileNotFoundError(f"NYUv2 raw scene folder not found: {scene_dir}")
    depth, rgb, other = [], [], 0
    for name in sorted(os.listdir(scene_dir)):
        fr = parse_frame_name(name)
        if fr is None:
            other += name != "INDEX.txt"
        elif fr.kind == "d":
            depth.append(fr)
        elif fr.kind == "r":
            rgb.append(fr)
    return depth, rgb, other


def synchronise_frames(depth: Sequence[RawFrame], rgb: Sequence[RawFrame]) -> List[SyncedFrame]:
    """``get_synched_frames.m``: every depth frame with the RGB frame of nearest timestamp, found
    by a forward-only pointer that advances while the difference does not grow."""
    if not depth:
        return []
    if not rgb:
        raise InvalidSampleError(f"{len(depth)} depth frames but no RGB frame (first: {depth[0].name})")
    out, j = [], 0
    for i, d in enumerate(depth):
        diff = abs(d.timestamp - rgb[j].timestamp)
        while j < len(rgb) - 1:
            nxt = abs(d.timestamp - rgb[j + 1].timestamp)
            if nxt > diff:
                break
            diff, j = nxt, j + 1
        out.append(SyncedFrame(i, d.name, rgb[j].name, diff))
    return out


def read_scene_list(path: str) -> List[str]:
    """Scene names of a train-scene list, one per line (``#`` comments and blank lines skipped).
    Raises ``FileNotFoundError`` / ``ValueError`` naming the file and the bad line."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"NYUv2 scene list not found: {path}")
    scenes, seen = [], set()
    with open(path) as f:
        for n, line in enumerate(f, 1):
            name = line.strip()
            if not name or name.startswith("#"):
                continue
            if "/" in name or "\\" in name or " " in name or name in (".", ".."):
                raise ValueError(f"{path}:{n}: {name!r} is not a scene folder name")
            if name in seen:
                raise ValueError(f"{path}:{n}: duplicate scene {name!r}")
            seen.add(name)
            scenes.append(name)
    if not scenes:
        raise ValueError(f"NYUv2 scene list {path} is empty")
    return scenes


def metric_depth_to_png(depth_m: np.ndarray, scale: float = 1000.0) -> np.ndarray:
    """Metres -> uint16 ``round(depth * scale)`` (millimetres); 0 where not finite, ``<= 0`` or
    beyond the 16-bit range (the layout's convention, :mod:`pe_panoptic.data.nyu`)."""
    d = np.asarray(depth_m, dtype=np.float64) * scale
    ok = np.isfinite(d) & (d > 0) & (d <= 65535)
    return np.where(ok, np.rint(np.where(ok, d, 0)), 0).astype(np.uint16)


def _convert_frame(scene_dir: str, fr: SyncedFrame, undistort_images: bool) -> Tuple[np.ndarray, np.ndarray]:
    depth_path, rgb_path = os.path.join(scene_dir, fr.depth), os.path.join(scene_dir, fr.rgb)
    raw, rgb = read_raw_depth(depth_path), read_raw_rgb(rgb_path)
    if raw.shape != FRAME_HW:
        raise InvalidSampleError(f"{depth_path}: {raw.shape[1]}x{raw.shape[0]} depth frame; the Kinect calibration "
                                 f"of the toolbox is for {FRAME_HW[1]}x{FRAME_HW[0]} frames")
    if raw.shape != rgb.shape[:2]:
        raise InvalidSampleError(f"{depth_path} is {raw.shape[1]}x{raw.shape[0]} but its RGB frame {rgb_path} is "
                                 f"{rgb.shape[1]}x{rgb.shape[0]}")
    depth_m, rgb_ud = project_depth_map(raw, rgb, undistort_images=undistort_images)
    if not (depth_m > 0).any():
        raise InvalidSampleError(f"{depth_path}: no valid depth pixel after projection onto {rgb_path}")
    return depth_m, rgb_ud


def prepare_nyuv2_raw(raw_root: str, scene_list: str, out_root: str, *, sample_step: int = 7,
                      max_time_diff: Optional[float] = None, allow_missing_scenes: bool = False,
                      strict: bool = False, undistort_images: bool = True, jpeg_quality: int = 95,
                      split: str = "train") -> PrepareStats:
    """Convert the scenes of ``scene_list`` under ``raw_root`` into ``<out_root>/<split>`` and
    write ``<out_root>/splits/<split>.txt`` (module docstring). Returns :class:`PrepareStats`
    (also logged). Raises ``FileNotFoundError`` for missing scenes (unless
    ``allow_missing_scenes``) and ``ValueError`` when nothing could be written."""
    if int(sample_step) < 1:
        raise ValueError(f"sample_step must be >= 1, got {sample_step}")
    scenes = read_scene_list(scene_list)
    stats = PrepareStats(scenes=len(scenes))
    stats.missing_scenes = [s for s in scenes if not os.path.isdir(os.path.join(raw_root, s))]
    if stats.missing_scenes and not allow_missing_scenes:
        raise FileNotFoundError(
            f"{len(stats.missing_scenes)} of the {len(scenes)} scenes of {scene_list} have no folder under {raw_root} "
            f"(first: {stats.missing_scenes[:5]}); download them or pass allow_missing_scenes / --allow-missing-scenes")
    for sub in ("rgb", "depth"):
        os.makedirs(os.path.join(out_root, split, sub), exist_ok=True)
    stems: List[str] = []
    for scene in scenes:
        if scene in stats.missing_scenes:
            logger.warning(f"NYUv2 raw: scene {scene} listed in {scene_list} is missing under {raw_root}: skipped")
            continue
        scene_dir = os.path.join(raw_root, scene)
        depth, rgb, other = scene_frames(scene_dir)
        stats.ignored_files += other
        try:
            synced = synchronise_frames(depth, rgb)
        except InvalidSampleError as e:
            if strict:
                raise InvalidSampleError(f"scene {scene_dir}: {e}") from e
            logger.warning(f"NYUv2 raw: scene {scene_dir}: {e}; its {len(depth)} depth frames are skipped")
            stats.skipped["no RGB frame in the scene"] += len(depth)
            continue
        stats.synced_frames += len(synced)
        for fr in synced[::int(sample_step)]:
            stats.sampled_frames += 1
            if fr.depth in KNOWN_FAULTY_FRAMES:
                stats.skipped["known faulty frame"] += 1
                logger.warning(
                    f"NYUv2 raw: skipped {os.path.join(scene_dir, fr.depth)}: known faulty (BTS excludes it)")
                continue
            if max_time_diff is not None and fr.time_diff > max_time_diff:
                msg = (f"{os.path.join(scene_dir, fr.depth)}: nearest RGB frame {fr.rgb} is {fr.time_diff:.4f} s "
                       f"away (max_time_diff {max_time_diff} s)")
                if strict:
                    raise InvalidSampleError(msg)
                stats.skipped["RGB too far in time"] += 1
                logger.warning(f"NYUv2 raw: skipped: {msg}")
                continue
            try:
                depth_m, rgb_ud = _convert_frame(scene_dir, fr, undistort_images)
            except InvalidSampleError as e:
                if strict:
                    raise
                stats.skipped["unreadable or empty frame"] += 1
                logger.warning(f"NYUv2 raw: skipped: {e}")
                continue
            stem = f"{scene}__{fr.index:05d}"
            Image.fromarray(rgb_ud).save(os.path.join(out_root, split, "rgb", stem + ".jpg"), quality=jpeg_quality)
            Image.fromarray(metric_depth_to_png(depth_m)).save(os.path.join(out_root, split, "depth", stem + ".png"))
            stems.append(stem)
            stats.written += 1
    if not stems:
        raise ValueError(f"NYUv2 raw: no frame written from {raw_root} ({stats.summary()})")
    os.makedirs(os.path.join(out_root, "splits"), exist_ok=True)
    with open(os.path.join(out_root, "splits", f"{split}.txt"), "w") as f:
        f.write("".join(s + "\n" for s in stems))
    logger.info(f"NYUv2 raw -> {out_root}/{split}: {stats.summary()}")
    return stats


def stats_dict(stats: PrepareStats) -> Dict[str, object]:
    """:class:`PrepareStats` as plain values (for a JSON report)."""
    return dict(scenes=stats.scenes, missing_scenes=list(stats.missing_scenes), synced_frames=stats.synced_frames,
                sampled_frames=stats.sampled_frames, written=stats.written, skipped=dict(stats.skipped),
                ignored_files=stats.ignored_files)
