"""Pool items: a listed file (`io.pool`), or one chunk of a video, decoded into
inference-ready items (no Ray here).

`load_items` gives zero or more items: an image gives one, a video chunk one per sampled frame,
anything broken one reject with a reason. Items are letterboxed to `imgsz` so inference
batches are plain stacked arrays; with `LoadOptions.device_decode` a JPEG instead travels
encoded, with its placement worked out from its header, and the inference actor decodes it
(`adapters.decode`).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import posixpath
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from ssl_ray.config import PoolConfig
from ssl_ray.core import schema
from ssl_ray.core.geometry import letterbox_params
from ssl_ray.core.schema import REASONS
from ssl_ray.errors import StorageError
from ssl_ray.io.images import BadImage, decode_letterboxed, jpeg_header, letterbox, place
from ssl_ray.io.pool import kind_of
from ssl_ray.io.video import TO_END, iter_frames, largest_change, probe, thumbnail


@dataclass(frozen=True, slots=True)
class LoadOptions:
    imgsz: int
    pool: PoolConfig
    stride: int = 0  # 0: square canvases; else the smallest stride-aligned rectangles (label.canvas: rect)
    device_decode: bool = False  # JPEGs travel encoded, for the inference actor to decode (label.decode)


ENCODED = np.zeros((1, 1, 3), np.uint8)  # the `image` of an item that travels encoded


def item_row(
    *,
    image_id,
    uri,
    width,
    height,
    image,
    lb,
    video_uri=None,
    frame_index=None,
    timestamp_s=None,
    encoded=b"",
    orientation=1,
) -> dict:
    """An item: its canvas `image` placed at `lb`, or (`encoded` non-empty) the placeholder
    `ENCODED`, the JPEG's bytes and its EXIF orientation, for the inference actor to decode."""
    return {
        "image_id": image_id,
        "uri": uri,
        "width": width,
        "height": height,
        "video_uri": video_uri,
        "frame_index": frame_index,
        "timestamp_s": timestamp_s,
        "image": image,
        "ratio": lb.ratio,
        "pad_x": lb.pad_x,
        "pad_y": lb.pad_y,
        "reject_reason": "",
        "reject_detail": "",
        "encoded": encoded,
        "orientation": orientation,
    }


def reject_row(uri: str, reason: str, detail: str, imgsz: int) -> dict:
    """A reject travelling through the pipeline (a tiny placeholder image keeps columns uniform)."""
    assert reason in REASONS, reason
    return {
        "image_id": "",
        "uri": uri,
        "width": 0,
        "height": 0,
        "video_uri": None,
        "frame_index": None,
        "timestamp_s": None,
        "image": np.full((imgsz, imgsz, 3), 114, np.uint8),
        "ratio": 1.0,
        "pad_x": 0.0,
        "pad_y": 0.0,
        "reject_reason": reason,
        "reject_detail": detail[:500],
        "encoded": b"",
        "orientation": 1,
    }


def load_items(
    uri: str,
    size: int,
    opts: LoadOptions,
    read_bytes,
    kind: str | None = None,
    *,
    open_file=None,
    chunk: tuple[int, int] = (0, TO_END),
) -> Iterator[dict]:
    """Items for one listed file (`kind` from the listing; by extension when not given), or
    for frames `chunk` of a video. `open_file(uri)` opens a video for ranged reads (a context
    manager); without it, a local video is opened by path and an S3 one read into memory. Never raises for bad
    content: bad input becomes a reject."""
    kind = kind or kind_of(uri)
    if kind == "image":
        yield _load_image(uri, size, opts, read_bytes)
    elif kind == "video":
        yield from _load_video(uri, size, opts, open_file or _reading(read_bytes), chunk)
    else:
        ext = posixpath.splitext(uri)[1].lower()
        yield reject_row(
            uri, "unsupported_format", f"extension {ext or '(none)'!r} is not an image or video", opts.imgsz
        )


def _reading(read_bytes):
    """`open_file` for readers that only read whole files: a local video by path (FFmpeg
    reads it directly), any other in memory."""

    @contextlib.contextmanager
    def open_file(uri: str):
        yield uri if not uri.startswith("s3://") else io.BytesIO(read_bytes(uri))

    return open_file


def _load_image(uri: str, size: int, opts: LoadOptions, read_bytes) -> dict:
    if size == 0:
        return reject_row(uri, "empty", REASONS["empty"], opts.imgsz)
    try:
        data = read_bytes(uri)
        header = jpeg_header(data, opts.pool.max_pixels) if opts.device_decode else None
        if header is None:
            image, lb, width, height = decode_letterboxed(data, opts.imgsz, opts.stride, opts.pool.max_pixels)
            encoded, orientation = b"", 1
    except BadImage as e:
        return reject_row(uri, e.reason, e.detail, opts.imgsz)
    except (StorageError, OSError) as e:
        return reject_row(uri, "unreadable", str(e), opts.imgsz)
    if header is not None:  # the inference actor decodes it: placed by its header
        width, height, orientation = header
        image, encoded, lb = ENCODED, data, letterbox_params(width, height, opts.imgsz, opts.stride)[2]
    return item_row(
        image_id=schema.image_id_of_bytes(data),
        uri=uri,
        width=width,
        height=height,
        image=image,
        lb=lb,
        encoded=encoded,
        orientation=orientation,
    )


def _load_video(uri: str, size: int, opts: LoadOptions, open_file, chunk: tuple[int, int]) -> Iterator[dict]:
    """The sampled frames of one chunk of a video; a video that cannot be read at all is
    one reject, reported by its first chunk only (the others would repeat it)."""
    start, stop = chunk
    if size == 0:
        yield reject_row(uri, "video_unreadable", "zero-byte video file", opts.imgsz)
        return
    pool = opts.pool
    try:
        with open_file(uri) as source:
            video_id = _video_id(source)
            info = probe(source)
            if info.width * info.height > pool.max_pixels:
                if start == 0:
                    yield reject_row(uri, "too_large", f"video frames of {info.width}x{info.height} pixels", opts.imgsz)
                return
            nw, nh, lb = letterbox_params(info.width, info.height, opts.imgsz, opts.stride)
            resize = (nw, nh) if info.width >= 2 * nw else None  # decoder-side: never convert the full frame
            frames = iter_frames(
                source, pool.video_every_n, pool.video_fps, start, stop, keyframes=pool.video_keyframes, resize=resize
            )
            kept = None  # (index, thumbnail) of the chunk's last kept frame
            for index, ts, rgb in frames:
                if pool.video_min_change is not None:
                    thumb = thumbnail(rgb)
                    if kept is not None and (change := largest_change(thumb, kept[1])) <= pool.video_min_change:
                        detail = f"changed at most {change} grey levels since {uri}#frame={kept[0]}"
                        yield reject_row(f"{uri}#frame={index}", "near_duplicate", detail, opts.imgsz)
                        continue
                    kept = index, thumb
                if resize is None:
                    canvas, frame_lb = letterbox(rgb, opts.imgsz, opts.stride)
                else:
                    canvas, frame_lb = place(rgb, opts.imgsz, lb, opts.stride), lb
                yield item_row(
                    image_id=schema.image_id_of_frame(video_id, index),
                    uri=f"{uri}#frame={index}",
                    width=info.width,
                    height=info.height,
                    image=canvas,
                    lb=frame_lb,
                    video_uri=uri,
                    frame_index=index,
                    timestamp_s=round(ts, 6),
                )
    except ValueError as e:
        if start == 0:
            yield reject_row(uri, "video_unreadable", str(e), opts.imgsz)
    except (StorageError, OSError) as e:
        if start == 0:
            yield reject_row(uri, "unreadable", str(e), opts.imgsz)


VIDEO_ID_WINDOWS = 16  # windows of VIDEO_ID_WINDOW bytes, evenly spaced, hashed into a video's identity
VIDEO_ID_WINDOW = 1 << 16


def _video_id(source) -> str:
    """A video's identity from its size and 16 windows of 64 KiB evenly spaced over it (the
    header, the sample tables, frames throughout): every chunk computes the same one with a
    few ranged reads, where hashing a whole fleet video per chunk would read it again."""
    h = hashlib.blake2b(digest_size=16)
    with contextlib.ExitStack() as stack:
        f = stack.enter_context(open(source, "rb")) if isinstance(source, str) else source
        size = f.seek(0, io.SEEK_END)
        span = max(0, size - VIDEO_ID_WINDOW)
        for k in range(VIDEO_ID_WINDOWS):
            f.seek(span * k // (VIDEO_ID_WINDOWS - 1))
            h.update(f.read(VIDEO_ID_WINDOW))
        f.seek(0)
    return h.hexdigest() + f"-{size}"
