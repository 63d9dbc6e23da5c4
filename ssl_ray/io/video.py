"""Video frames: sampling plan, decoding, and single-frame extraction (OpenCV, which
Ultralytics already depends on). S3 videos are copied to a local temp file first, since
decoders seek in files.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator

import numpy as np


def frame_step(native_fps: float, every_n: int, target_fps: float | None) -> int:
    """Keep every `step`-th frame: from a target rate when given, else every Nth."""
    if target_fps and native_fps > 0:
        return max(1, round(native_fps / target_fps))
    return max(1, every_n)


@contextlib.contextmanager
def local_copy(uri: str, read_bytes) -> Iterator[str]:
    """A local path for `uri`: itself when local, else a temp file removed afterwards."""
    if not uri.startswith("s3://"):
        yield uri
        return
    suffix = os.path.splitext(uri)[1][:8]
    fd, path = tempfile.mkstemp(suffix=suffix, prefix="ssl_ray-video-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(read_bytes(uri))
        yield path
    finally:
        with contextlib.suppress(OSError):
            os.remove(path)


def iter_frames(path: str, every_n: int, target_fps: float | None) -> Iterator[tuple[int, float, np.ndarray]]:
    """Yield (frame_index, timestamp_s, RGB frame) for the sampled frames of a local video.

    Raises ValueError when the file cannot be opened or yields no frame at all.
    """
    import cv2

    cap = cv2.VideoCapture(path)
    try:
        if not cap.isOpened():
            raise ValueError("cannot open video (unknown container or codec)")
        fps = cap.get(cv2.CAP_PROP_FPS) or 0.0
        step = frame_step(fps, every_n, target_fps)
        index = decoded = 0
        while True:
            if index % step == 0:
                ok, frame = cap.read()
                if not ok:
                    break
                decoded += 1
                yield index, (index / fps if fps > 0 else 0.0), cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
            elif not cap.grab():
                break
            index += 1
        if decoded == 0:
            raise ValueError("no decodable frame")
    finally:
        cap.release()


THUMB = 16  # side of the grey thumbnail frames are compared by


def thumbnail(rgb: np.ndarray) -> np.ndarray:
    """A frame as a THUMB x THUMB grey thumbnail, each cell the mean of its pixels (uint8)."""
    import cv2

    return cv2.resize(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY), (THUMB, THUMB), interpolation=cv2.INTER_AREA)


def largest_change(a: np.ndarray, b: np.ndarray) -> int:
    """The largest grey-level difference of any cell between two thumbnails: sensor noise and
    compression move a cell a few levels; an object entering it, tens."""
    return int(np.abs(a.astype(np.int16) - b.astype(np.int16)).max())


def read_frame_jpeg(path: str, frame_index: int, uri: str | None = None) -> bytes:
    """One frame of a local video, JPEG-encoded (for YOLO trees and review exports); `uri`
    names the video in errors."""
    import cv2

    cap = cv2.VideoCapture(path)
    try:
        cap.set(cv2.CAP_PROP_POS_FRAMES, frame_index)
        ok, frame = cap.read()
    finally:
        cap.release()
    if not ok:
        raise ValueError(f"{uri or path}: frame {frame_index} cannot be decoded")
    ok, buf = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, 95])
    return buf.tobytes()
