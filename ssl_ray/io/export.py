"""Write contract rows out: Parquet on any store, and a YOLO-format tree on local disk.

The YOLO tree is what Ultralytics trains from. Its images come from a node-local,
content-addressed cache: files are named `<image_id>.<ext>` where the id is a hex digest and
the extension comes from the bytes, so no key, file name or label can steer a path outside
the cache or the tree. Negatives get an empty label file, never a missing one.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import tempfile
import uuid
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from ssl_ray.config import StorageConfig
from ssl_ray.core import schema
from ssl_ray.errors import DatasetError
from ssl_ray.io.images import for_training
from ssl_ray.io.storage import Store

_IMAGE_ID = re.compile(r"^[0-9a-f]{32}$")
_CACHED_EXTS = ("jpg", "png", "webp", "bmp", "tif")  # what `for_training` writes (a GIF becomes a PNG)
# Rows per Parquet row group at most (pyarrow's default is 1,048,576): a row group is what one
# Ray Data read task holds (`stages.datasets`), ~6 MiB of these rows in memory.
ROW_GROUP_ROWS = 32_768


def write_table(store: Store, rel: str, table: pa.Table) -> None:
    """One Parquet file (atomic on local disk; S3 objects appear whole)."""
    buf = io.BytesIO()
    pq.write_table(table, buf, row_group_size=ROW_GROUP_ROWS)
    store.write_bytes(rel, buf.getvalue())


def write_parquet(store: Store, rel: str, rows: list[dict]) -> None:
    """Contract rows -> one Parquet file."""
    write_table(store, rel, schema.rows_to_table(rows))


def write_rejects(store: Store, rel: str, rejects: list[dict]) -> None:
    write_table(store, rel, schema.rejects_to_table(rejects))


def read_parquet_rows(store: Store, rel: str) -> list[dict]:
    return pq.read_table(store.path(rel), filesystem=store.fs, schema=schema.ROW_SCHEMA).to_pylist()


def iter_row_batches(
    store: Store, rel: str, columns: list[str] | None = None, batch_rows: int = 65_536
) -> Iterator[pa.RecordBatch]:
    """The contract rows of a Parquet file or a folder of them (only `columns` when given), a
    batch at a time, in the same order on every call: a reader that keeps some rows never
    holds the whole table."""
    import pyarrow.dataset as pads

    dataset = pads.dataset(store.path(rel), filesystem=store.fs, format="parquet", schema=schema.ROW_SCHEMA)
    # One file and one batch read ahead (pyarrow's defaults: 4 files, 16 batches, ~4 files of rows).
    yield from dataset.to_batches(
        columns=columns, batch_size=batch_rows, use_threads=False, fragment_readahead=1, batch_readahead=1
    )


def parquet_num_rows(store: Store, rel: str) -> int:
    """Row count of a Parquet file, or of a folder of them (`stages.datasets`), from their
    footers, without reading rows."""
    parts = [f"{rel}/{n}" for n in store.names(rel, folders=False) if n.endswith(".parquet")]
    total = 0
    for part in parts or [rel]:
        with store.fs.open_input_file(store.path(part)) as f:
            total += pq.ParquetFile(f).metadata.num_rows
    return total


class ImageCache:
    """Node-local content-addressed image cache: `<root>/<id[:2]>/<id>.<ext>`."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root).expanduser().resolve()

    def ensure(self, image_id: str, fetch: Callable[[], bytes]) -> Path:
        """Path of the cached image, fetching and storing its bytes on a miss."""
        if not _IMAGE_ID.match(image_id or ""):
            raise DatasetError(f"invalid image_id {image_id!r}: expected 32 hex digits")
        folder = self.root / image_id[:2]
        for ext in _CACHED_EXTS:  # a stat per format, not a listing of a folder of thousands
            if (hit := folder / f"{image_id}.{ext}").exists():
                return hit
        data, ext = for_training(fetch())
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / f"{image_id}.{ext}"
        tmp = folder / f"{image_id}.{uuid.uuid4().hex}.tmp"
        tmp.write_bytes(data)
        os.replace(tmp, target)  # concurrent writers of the same id write the same bytes
        return target


class UriReader:
    """Reads the bytes behind a row's `uri`, one Store per folder (S3 clients are reused).

    A video frame's row yields that frame as JPEG. The last S3 video read stays in a local
    temp file (removed with the reader), so a video's frames read one after another download
    it once: `YoloTree.prefetch` reads frames in that order.
    """

    def __init__(self, storage: StorageConfig):
        self.storage = storage
        self._stores: dict[str, Store] = {}
        self._video: tuple[str, str] | None = None  # (S3 uri, local copy)
        self._tmp: tempfile.TemporaryDirectory | None = None

    def __call__(self, row: dict) -> bytes:
        if row.get("video_uri"):
            from ssl_ray.io.video import read_frame_jpeg

            return read_frame_jpeg(self._local_video(row["video_uri"]), row["frame_index"], row["video_uri"])
        return self.read(row["uri"])

    def _local_video(self, uri: str) -> str:
        if not uri.startswith("s3://"):
            return uri
        if self._video is None or self._video[0] != uri:
            self._tmp = self._tmp or tempfile.TemporaryDirectory(prefix="ssl_ray-video-")
            path = os.path.join(self._tmp.name, f"video{os.path.splitext(uri)[1][:8]}")
            self._video = None  # a failed download leaves no stale copy behind
            with open(path, "wb") as f:
                f.write(self.read(uri))
            self._video = (uri, path)
        return self._video[1]

    def read(self, uri: str) -> bytes:
        store, name = self._store(uri)
        return store.read_bytes(name)

    @contextlib.contextmanager
    def open(self, uri: str):
        """A video for ranged reads: its path when local, else a seekable S3 file."""
        if not uri.startswith("s3://"):
            yield uri
            return
        store, name = self._store(uri)
        with store.open_input(name) as f:
            yield f

    def _store(self, uri: str) -> tuple[Store, str]:
        folder, _, name = uri.rpartition("/")
        folder = folder or "."
        if folder not in self._stores:
            self._stores[folder] = Store(folder, self.storage)
        return self._stores[folder], name


def label_lines(boxes: Iterable[dict]) -> str:
    """YOLO label text: `cls x y w h` per box, no score column (it would break training)."""
    return "".join(f"{b['cls']} {b['x']:.6f} {b['y']:.6f} {b['w']:.6f} {b['h']:.6f}\n" for b in boxes)


def write_yolo_tree(
    out_dir: str | os.PathLike,
    splits: dict[str, list[dict]],
    names: list[str],
    cache: ImageCache,
    fetch: Callable[[dict], bytes],
    repeat: Callable[[dict], int] | None = None,
) -> Path:
    """Write `images/<split>/`, `labels/<split>/` and `data.yaml` under `out_dir`; return data.yaml.

    `splits` maps a split name ('train', 'val') to its rows; `repeat(row)` > 1 oversamples a
    train row (`YoloTree.add`). A video's frames are fetched together, in frame order.
    """
    tree = YoloTree(out_dir, names, cache, fetch)
    for split, rows in splits.items():
        tree.prefetch(rows)
        tree.split(split)
        for row in rows:
            tree.add(split, row, repeat(row) if repeat and split == "train" else 1)
    return tree.finish()


class YoloTree:
    """A YOLO tree written a row at a time; it holds the names of the files that were in the
    tree before it started (none for a fresh tree), never the rows or their files' names.

    Images are hard links into the cache where the filesystem allows, copies otherwise. Safe
    to re-run over a partial or an older tree: after `finish` each split holds exactly the
    rows added to it, and files of other rows are removed.
    """

    def __init__(self, out_dir: str | os.PathLike, names: list[str], cache: ImageCache, fetch: Callable[[dict], bytes]):
        self.out = Path(out_dir).expanduser().resolve()
        self.names, self.cache, self.fetch = names, cache, fetch
        self._stale: dict[str, dict[str, set[str]]] = {}  # split -> kind -> files not (yet) re-added

    def prefetch(self, rows: Iterable[dict]) -> None:
        """Bring the video frames among `rows` into the cache in frame order: the reader opens
        (from S3, downloads) each video once instead of once per frame. A row needs only its
        `image_id`, `video_uri` and `frame_index`."""
        for row in sorted((r for r in rows if r.get("video_uri")), key=lambda r: (r["video_uri"], r["frame_index"])):
            self.cache.ensure(row["image_id"], lambda row=row: self.fetch(row))

    def split(self, split: str) -> None:
        """Start the split `split` (a split with no rows is still a folder)."""
        if split not in self._stale:
            self._stale[split] = {}
            for kind in ("images", "labels"):
                folder = self.out / kind / split
                folder.mkdir(parents=True, exist_ok=True)
                with os.scandir(folder) as entries:
                    self._stale[split][kind] = {e.name for e in entries}

    def add(self, split: str, row: dict, copies: int = 1) -> None:
        """The row's image and label file in `split`; `copies` > 1 adds that many copies in
        all (`<id>~1.<ext>`, ...): oversampling."""
        self.split(split)
        img_dir, lbl_dir, stale = self.out / "images" / split, self.out / "labels" / split, self._stale[split]
        cached = self.cache.ensure(row["image_id"], lambda: self.fetch(row))
        labels = label_lines(row["boxes"] or [])
        for k in range(copies):
            stem = row["image_id"] if k == 0 else f"{row['image_id']}~{k}"
            target = img_dir / f"{stem}{cached.suffix}"
            if target.name in stale["images"]:
                stale["images"].discard(target.name)
            else:
                _link_or_copy(cached, target)
            (lbl_dir / f"{stem}.txt").write_text(labels)
            stale["labels"].discard(f"{stem}.txt")

    def finish(self) -> Path:
        """Remove the files of rows not added; write data.yaml and return its path."""
        for split, kinds in self._stale.items():
            for kind, names in kinds.items():
                for name in names:
                    (self.out / kind / split / name).unlink(missing_ok=True)
                names.clear()
        # No 'path': Ultralytics then resolves the splits next to data.yaml, wherever the tree
        # is copied (a relative 'path' would be taken relative to its global datasets folder).
        meta = {**{s: f"images/{s}" for s in self._stale}, "names": dict(enumerate(self.names))}
        data_yaml = self.out / "data.yaml"
        data_yaml.write_text(yaml.safe_dump(meta, sort_keys=False))
        return data_yaml


def export_yolo_tree(cfg, out: Store, rel: str, splits: dict[str, list[dict]], names: list[str]) -> dict[str, str]:
    """A YOLO tree at `<out>/<rel>` (built in a temp folder and uploaded when `out` is on S3),
    images from the node's cache; returns image_id -> the image's path inside the tree."""
    cache = ImageCache(Path(cfg.output.cache_dir).expanduser() / "images")
    with tempfile.TemporaryDirectory() as tmp:
        local = Path(tmp) if out.is_s3 else Path(out.path(rel))
        write_yolo_tree(local, splits, names, cache, UriReader(cfg.storage))
        files = sorted(p for p in local.rglob("*") if p.is_file())
        if out.is_s3:
            for path in files:
                out.write_bytes(f"{rel}/{path.relative_to(local).as_posix()}", path.read_bytes())
        paths = {}
        for path in (p for p in files if p.parent.parent.name == "images"):
            image_id, _, copy = path.stem.partition("~")
            if not copy:  # not an oversampling copy
                paths[image_id] = path.relative_to(local).as_posix()
        return paths


def _link_or_copy(src: Path, dst: Path) -> None:
    tmp = dst.with_name(dst.name + f".{uuid.uuid4().hex}.tmp")
    try:
        os.link(src, tmp)
    except OSError:
        tmp.write_bytes(src.read_bytes())
    os.replace(tmp, dst)
