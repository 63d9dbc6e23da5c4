"""The unlabeled pool's listing (no Ray here).

`iter_pool` lists sources lazily (S3 pages or one directory at a time) and says what each
file is: an image or a video by its extension, or (a name that says nothing, such as an S3
key without one) by its first bytes. Files that are neither (a dataset root's label files,
YAML, notes) are skipped and counted by extension, never quarantined. `video_chunks` splits a
listed video into frame ranges (`io.video.plan_chunks`), so decoding one spreads over tasks.
`io.items` turns what is listed here into inference-ready items.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterator

from ssl_ray.config import PoolConfig, StorageConfig
from ssl_ray.errors import StorageError
from ssl_ray.io.images import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS, media_kind
from ssl_ray.io.storage import Store
from ssl_ray.io.video import TO_END, frame_step, plan_chunks, probe

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


def video_chunks(uri: str, pool: PoolConfig, open_file) -> list[tuple[int, int]]:
    """[start, stop) frame ranges of a listed video, `pool.video_chunk_samples` sampled frames
    each; one range covering it all when it cannot be probed (decoding it then says why)."""
    if pool.video_keyframes:
        return [(0, TO_END)]  # key frames are sparse and irregular: one pass, never decoded twice
    try:
        with open_file(uri) as source:
            info = probe(source)
    except (ValueError, StorageError, OSError):
        return [(0, TO_END)]
    step = frame_step(info.fps, pool.video_every_n, pool.video_fps)
    return plan_chunks(info, step, pool.video_chunk_samples)
