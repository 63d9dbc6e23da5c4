"""Video frames with PyAV (FFmpeg's libraries): probing, chunk plans, streamed decoding of a
chunk's sampled frames, single-frame extraction.

A frame's index is its presentation time times the stream's average frame rate; for
constant-rate video that is its position in decode order. Because it comes from the
timestamp, a chunk that seeks to its first frame numbers its frames exactly as a decode of
the whole video does, so a long video is split into chunks (`plan_chunks`) that run in
separate tasks, each with memory bounded by its length, and every sampled frame is in
exactly one chunk. A video whose frames carry no timestamps is one chunk, decoded in order.

Skipped frames are decoded (later frames depend on them) but never converted to RGB; kept
frames are converted and, when the source is at least twice the canvas, resized in the same
pass (`resize`). `keyframes` asks the decoder for key frames only, which skips the rest
without decoding them. `source` is a local path or a seekable binary file (an S3 object
opened for ranged reads), so a chunk of an S3 video reads only its own part of the file.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import numpy as np

TO_END = -1  # a chunk's `stop` when it runs to the end of the video


@dataclass(frozen=True, slots=True)
class VideoInfo:
    frames: int  # the container's frame count; 0 when it does not say
    fps: float
    width: int
    height: int
    timestamps: bool  # frames carry presentation times: chunks can seek


def frame_step(native_fps: float, every_n: int, target_fps: float | None) -> int:
    """Keep every `step`-th frame: from a target rate when given, else every Nth."""
    if target_fps and native_fps > 0:
        return max(1, round(native_fps / target_fps))
    return max(1, every_n)


def plan_chunks(info: VideoInfo | None, step: int, samples_per_chunk: int) -> list[tuple[int, int]]:
    """[start, stop) frame ranges that cover a video, each holding `samples_per_chunk`
    sampled frames (every `step`-th); the last runs to the end (`TO_END`), so a frame count
    that is short loses nothing and one that is long adds only empty ranges. One range when
    the video cannot seek or its length is unknown."""
    if info is None or not info.timestamps or info.frames <= 0:
        return [(0, TO_END)]
    length = step * max(1, samples_per_chunk)
    n = max(1, math.ceil(info.frames / length))
    return [(i * length, (i + 1) * length if i < n - 1 else TO_END) for i in range(n)]


def _open(source: Any):
    import av

    if not isinstance(source, str):
        source.seek(0)  # a file that an earlier container (a probe) left anywhere
    try:
        container = av.open(source, mode="r")
    except (av.FFmpegError, OSError, UnicodeDecodeError) as e:
        raise ValueError(f"cannot open video ({_reason(e)})") from None
    if not container.streams.video:
        container.close()
        raise ValueError("no video stream")
    return container


def _reason(e: Exception) -> str:
    return str(getattr(e, "strerror", None) or e).strip() or type(e).__name__


def probe(source: Any) -> VideoInfo:
    """Frame count, rate and size from the container's header and its first frame.
    Raises ValueError when the file cannot be opened or its first frame not decoded."""
    import av

    container = _open(source)
    try:
        stream = container.streams.video[0]
        try:
            first = next(container.decode(stream), None)
        except av.FFmpegError as e:
            raise ValueError(f"no decodable frame ({_reason(e)})") from None
        if first is None:
            raise ValueError("no decodable frame")
        rate = stream.average_rate or stream.guessed_rate
        return VideoInfo(
            frames=int(stream.frames or 0),
            fps=float(rate or 0.0),
            width=first.width,
            height=first.height,
            timestamps=first.pts is not None and bool(rate) and stream.time_base is not None,
        )
    finally:
        container.close()


def iter_frames(
    source: Any,
    every_n: int,
    target_fps: float | None,
    start: int = 0,
    stop: int = TO_END,
    *,
    keyframes: bool = False,
    resize: tuple[int, int] | None = None,
) -> Iterator[tuple[int, float, np.ndarray]]:
    """Yield (frame_index, timestamp_s, RGB frame) for the sampled frames of frames
    [start, stop): every `frame_step`-th index, or every key frame with `keyframes`. `resize`
    (width, height) is applied while converting.

    Raises ValueError when the file cannot be opened, or when the range starts at the video's
    beginning and not one frame can be decoded."""
    import av

    container = _open(source)
    try:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        if keyframes:
            stream.codec_context.skip_frame = "NONKEY"
        rate = stream.average_rate or stream.guessed_rate
        fps = float(rate or 0.0)
        step = 1 if keyframes else frame_step(fps, every_n, target_fps)
        convert = {"format": "rgb24"}
        if resize is not None:
            convert.update(width=resize[0], height=resize[1], interpolation="AREA")
        seen, last = 0, -1
        try:
            for index, frame in _indexed(container, stream, rate, start):
                seen += 1
                if index <= last or index < start:
                    continue  # before the range, or a second frame in the same time slot
                if stop != TO_END and index >= stop:
                    break
                last = index
                if keyframes or index % step == 0:
                    yield index, (index / fps if fps > 0 else 0.0), frame.to_ndarray(**convert)
        except av.FFmpegError as e:
            if seen == 0 and start == 0:
                raise ValueError(f"no decodable frame ({_reason(e)})") from None
            # a broken tail: the frames before it were yielded, the rest cannot be read
        if seen == 0 and start == 0:
            raise ValueError("no decodable frame")
    finally:
        container.close()


def _indexed(container, stream, rate, start: int) -> Iterator[tuple[int, Any]]:
    """(index, frame) in decode order, from the key frame at or before `start`: a seek by
    timestamp, or the beginning when the video has no timestamps or the seek overshot."""
    origin = stream.start_time or 0

    def decode():
        for n, frame in enumerate(container.decode(stream)):
            yield (n if frame.pts is None or not rate else round((frame.pts - origin) * stream.time_base * rate)), frame

    frames = decode()
    if start > 0 and rate:
        container.seek(origin + int(Fraction(start) / rate / stream.time_base), stream=stream, backward=True)
        frames = decode()
        first = next(frames, None)
        if first is not None and (first[1].pts is None or first[0] > start):
            container.seek(origin, stream=stream, backward=True)
            frames = decode()
        elif first is not None:
            yield first
    yield from frames


THUMB = 16  # side of the grey thumbnail frames are compared by


def thumbnail(rgb: np.ndarray) -> np.ndarray:
    """A frame as a THUMB x THUMB grey thumbnail, each cell the mean of its pixels (uint8)."""
    import cv2

    return cv2.resize(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY), (THUMB, THUMB), interpolation=cv2.INTER_AREA)


def largest_change(a: np.ndarray, b: np.ndarray) -> int:
    """The largest grey-level difference of any cell between two thumbnails: sensor noise and
    compression move a cell a few levels; an object entering it, tens."""
    return int(np.abs(a.astype(np.int16) - b.astype(np.int16)).max())


def read_frame_jpeg(source: Any, frame_index: int, uri: str | None = None) -> bytes:
    """One frame of a video, numbered as `iter_frames` numbers them, JPEG-encoded (for YOLO
    trees and review exports); `uri` names the video in errors."""
    import cv2

    frame = None
    try:
        for index, _, rgb in iter_frames(source, 1, None, frame_index, frame_index + 1):
            frame = rgb if index == frame_index else None
    except ValueError:
        frame = None
    if frame is None:
        raise ValueError(f"{uri or source}: frame {frame_index} cannot be decoded")
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(frame, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 95])
    return buf.tobytes()
