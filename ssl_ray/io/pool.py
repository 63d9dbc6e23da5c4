"""The unlabeled pool: streamed listing and decoding into inference-ready items (no Ray here).

`iter_pool` lists sources lazily (S3 pages or one directory at a time) and says what each
file is: an image or a video by its extension, or (a name that says nothing, such as an S3
key without one) by its first bytes. Files that are neither (a dataset root's label files,
YAML, notes) are skipped and counted by extension, never quarantined. `load_items` turns a
listed file into zero or more items: an image gives one, a video one per sampled frame,
anything broken one reject with a reason. Items are letterboxed to `imgsz` so inference
batches are plain stacked arrays.
"""

from __future__ import annotations

import hashlib
import os
import posixpath
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from ssl_ray.config import PoolConfig, StorageConfig
from ssl_ray.core import schema
from ssl_ray.core.schema import REASONS
from ssl_ray.errors import StorageError
from ssl_ray.io.images import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS, BadImage, decode_rgb, letterbox, media_kind
from ssl_ray.io.storage import Store
from ssl_ray.io.video import iter_frames, largest_change, local_copy, thumbnail

# Extensions that are never media: skipped without reading a byte.
NOT_MEDIA = frozenset(
    {
        ".txt",
        ".yaml",
        ".yml",
        ".json",
        ".jsonl",
        ".csv",
        ".tsv",
        ".md",
        ".xml",
        ".html",
        ".log",
        ".parquet",
        ".cache",
        ".py",
        ".sh",
        ".pt",
        ".pth",
        ".onnx",
        ".zip",
        ".tar",
        ".gz",
        ".npy",
    }
)


def kind_of(name: str, header=None) -> str | None:
    """'image', 'video' or None (not media) for a file name; `header()` gives its first bytes
    when the extension is not one the pool knows either way."""
    ext = posixpath.splitext(name)[1].lower()
    if ext in IMAGE_EXTENSIONS:
        return "image"
    if ext in VIDEO_EXTENSIONS:
        return "video"
    if ext in NOT_MEDIA or header is None:
        return None
    return media_kind(header())


def iter_pool(
    sources: list[str], storage: StorageConfig, skipped: dict[str, int] | None = None
) -> Iterator[tuple[str, int, str]]:
    """(uri, size, kind) of every image and video under every source, streamed, in a stable
    order; every other file is counted in `skipped` by its extension."""
    for source in sources:
        store = Store(source, storage)
        if not store.exists():
            raise StorageError(f"pool source {store.uri} does not exist")
        for entry in store.list():
            head = (lambda s=store, e=entry: s.read_head(e.rel, 16)) if entry.size else None
            kind = kind_of(entry.rel, head)
            if kind is None:
                if skipped is not None:
                    ext = posixpath.splitext(entry.rel)[1].lower() or "(none)"
                    skipped[ext] = skipped.get(ext, 0) + 1
                continue
            yield store.uri_of(entry.rel), entry.size, kind


@dataclass(frozen=True, slots=True)
class LoadOptions:
    imgsz: int
    pool: PoolConfig


def item_row(*, image_id, uri, width, height, image, lb, video_uri=None, frame_index=None, timestamp_s=None) -> dict:
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
    }


def load_items(uri: str, size: int, opts: LoadOptions, read_bytes, kind: str | None = None) -> Iterator[dict]:
    """Items for one listed file (`kind` from the listing; by extension when not given).
    Never raises for bad content: bad input becomes a reject."""
    kind = kind or kind_of(uri)
    if kind == "image":
        yield _load_image(uri, size, opts, read_bytes)
    elif kind == "video":
        yield from _load_video(uri, size, opts, read_bytes)
    else:
        ext = posixpath.splitext(uri)[1].lower()
        yield reject_row(
            uri, "unsupported_format", f"extension {ext or '(none)'!r} is not an image or video", opts.imgsz
        )


def _load_image(uri: str, size: int, opts: LoadOptions, read_bytes) -> dict:
    if size == 0:
        return reject_row(uri, "empty", REASONS["empty"], opts.imgsz)
    try:
        data = read_bytes(uri)
        rgb = decode_rgb(data, opts.pool.max_pixels)
    except BadImage as e:
        return reject_row(uri, e.reason, e.detail, opts.imgsz)
    except (StorageError, OSError) as e:
        return reject_row(uri, "unreadable", str(e), opts.imgsz)
    canvas, lb = letterbox(rgb, opts.imgsz)
    return item_row(
        image_id=schema.image_id_of_bytes(data), uri=uri, width=rgb.shape[1], height=rgb.shape[0], image=canvas, lb=lb
    )


def _load_video(uri: str, size: int, opts: LoadOptions, read_bytes) -> Iterator[dict]:
    if size == 0:
        yield reject_row(uri, "video_unreadable", "zero-byte video file", opts.imgsz)
        return
    try:
        with local_copy(uri, read_bytes) as path:
            video_id = _file_hash(path)
            frames = iter_frames(path, opts.pool.video_every_n, opts.pool.video_fps)
            min_change, kept = opts.pool.video_min_change, None  # kept: (index, thumbnail) of the last kept frame
            for index, ts, rgb in frames:
                if rgb.shape[0] * rgb.shape[1] > opts.pool.max_pixels:
                    yield reject_row(
                        uri, "too_large", f"video frames of {rgb.shape[1]}x{rgb.shape[0]} pixels", opts.imgsz
                    )
                    return
                if min_change is not None:
                    thumb = thumbnail(rgb)
                    if kept is not None and (change := largest_change(thumb, kept[1])) <= min_change:
                        detail = f"changed at most {change} grey levels since {uri}#frame={kept[0]}"
                        yield reject_row(f"{uri}#frame={index}", "near_duplicate", detail, opts.imgsz)
                        continue
                    kept = index, thumb
                canvas, lb = letterbox(rgb, opts.imgsz)
                yield item_row(
                    image_id=schema.image_id_of_frame(video_id, index),
                    uri=f"{uri}#frame={index}",
                    width=rgb.shape[1],
                    height=rgb.shape[0],
                    image=canvas,
                    lb=lb,
                    video_uri=uri,
                    frame_index=index,
                    timestamp_s=round(ts, 6),
                )
    except ValueError as e:
        yield reject_row(uri, "video_unreadable", str(e), opts.imgsz)
    except (StorageError, OSError) as e:
        yield reject_row(uri, "unreadable", str(e), opts.imgsz)


def _file_hash(path: str) -> str:
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest() + f"-{os.path.getsize(path)}"
