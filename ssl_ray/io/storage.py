"""One folder type over local disk and `s3://bucket/prefix`.

`Store(uri, storage_cfg)` is a folder; every method takes a path relative to it, so no stage
branches on the scheme. Bytes move through pyarrow filesystems (which Ray Data and Parquet
use too); the S3 specifics (clients, preflight, streamed listing) live in `ssl_ray.s3`.
"""

from __future__ import annotations

import json
import os
import posixpath
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pyarrow.fs as pafs

from ssl_ray.config import StorageConfig
from ssl_ray.core.units import MARKER, Unit, difference
from ssl_ray.errors import ConfigError, StorageError
from ssl_ray.io.s3 import list_s3, preflight_s3, s3_filesystem, split_s3


class StaleUnitError(ConfigError):
    """Finished work on storage was produced with other settings than the ones asked for."""


@dataclass(frozen=True, slots=True)
class FileEntry:
    rel: str  # path relative to the store root, '/'-separated
    size: int


def is_s3(uri: str) -> bool:
    return uri.startswith("s3://")


def safe_join(root: str, rel: str) -> str:
    """Join `rel` under `root`; refuse anything that could leave it ('..', absolute paths)."""
    rel = rel.replace("\\", "/")
    parts = [p for p in rel.split("/") if p not in ("", ".")]
    if rel.startswith("/") or ".." in parts:
        raise StorageError(f"refusing path {rel!r}: it would leave {root}")
    return posixpath.join(root, *parts) if parts else root


class Store:
    """A folder on local disk or S3. Picklable, so Ray tasks can take it as an argument."""

    def __init__(self, uri: str, cfg: StorageConfig | None = None):
        self.cfg = cfg or StorageConfig()
        if is_s3(uri):
            bucket, key = split_s3(uri)
            self.uri = f"s3://{bucket}/{key}".rstrip("/")
            self.fs = s3_filesystem(self.cfg)
            self.root = f"{bucket}/{key}".rstrip("/")
        else:
            self.uri = os.path.abspath(os.path.expanduser(uri))
            self.fs = pafs.LocalFileSystem()
            self.root = self.uri

    def __repr__(self) -> str:
        return f"Store({self.uri!r})"

    @property
    def is_s3(self) -> bool:
        return is_s3(self.uri)

    def child(self, rel: str) -> Store:
        sub = object.__new__(Store)
        sub.cfg, sub.fs = self.cfg, self.fs
        sub.root = safe_join(self.root, rel)
        sub.uri = f"s3://{sub.root}" if self.is_s3 else sub.root
        return sub

    def path(self, rel: str = "") -> str:
        """Filesystem path (for pyarrow/Ray Data together with `self.fs`)."""
        return safe_join(self.root, rel)

    def uri_of(self, rel: str = "") -> str:
        return f"s3://{self.path(rel)}" if self.is_s3 else self.path(rel)

    # -- reading -------------------------------------------------------------------------
    def exists(self, rel: str = "") -> bool:
        return self._info(rel).type != pafs.FileType.NotFound

    def read_bytes(self, rel: str = "") -> bytes:
        data = self.read_bytes_if_exists(rel)
        if data is None:
            raise StorageError(f"{self.uri_of(rel)} does not exist")
        return data

    def read_bytes_if_exists(self, rel: str) -> bytes | None:
        """The object's bytes, or None when there is none (one request, no separate HEAD)."""
        try:
            with self.fs.open_input_stream(self.path(rel)) as f:
                return f.read()
        except FileNotFoundError:
            return None
        except OSError as e:
            raise StorageError(f"cannot read {self.uri_of(rel)}: {_reason(e)}") from None

    def open_input(self, rel: str):
        """The file opened for ranged reads (seek, read; on S3 each read is a ranged GET)."""
        try:
            return self.fs.open_input_file(self.path(rel))
        except FileNotFoundError:
            raise StorageError(f"{self.uri_of(rel)} does not exist") from None
        except OSError as e:
            raise StorageError(f"cannot read {self.uri_of(rel)}: {_reason(e)}") from None

    def read_head(self, rel: str, n: int) -> bytes:
        """The first `n` bytes of a file (on S3, one ranged request); b"" when unreadable."""
        try:
            with self.fs.open_input_file(self.path(rel)) as f:
                return f.read(n)
        except OSError:
            return b""

    def list(self, rel: str = "") -> Iterator[FileEntry]:
        """Every file under `rel`, recursively, in sorted order; streamed, never all at once."""
        base = self.path(rel)
        if self.is_s3:
            for rel, size in list_s3(base, self.cfg, strip=len(self.root) + 1 if self.root else 0):
                yield FileEntry(rel, size)
            return
        if os.path.isdir(base):
            yield from _list_local(base, len(self.root) + 1)

    # -- writing -------------------------------------------------------------------------
    def write_bytes(self, rel: str, data: bytes) -> None:
        """Write a whole object. Local writes go through a temp file + rename (atomic)."""
        target = self.path(rel)
        try:
            self.fs.create_dir(posixpath.dirname(target), recursive=True)
            if self.is_s3:
                with self.fs.open_output_stream(target) as f:
                    f.write(data)
                return
            tmp = f"{target}.tmp-{uuid.uuid4().hex}"
            with open(tmp, "wb") as f:
                f.write(data)
            os.replace(tmp, target)
        except OSError as e:
            raise StorageError(f"cannot write {self.uri_of(rel)}: {_reason(e)}") from None

    def write_text(self, rel: str, text: str) -> None:
        self.write_bytes(rel, text.encode())

    def delete_prefix(self, rel: str = "") -> None:
        """Remove everything under `rel` (no error when there is nothing)."""
        target = self.path(rel)
        info = self._info(rel)
        try:
            if info.type == pafs.FileType.File:
                self.fs.delete_file(target)
            elif info.type == pafs.FileType.Directory:
                self.fs.delete_dir(target)
        except OSError as e:
            raise StorageError(f"cannot delete {self.uri_of(rel)}: {_reason(e)}") from None

    def names(self, rel: str = "", *, folders: bool | None = None) -> list[str]:
        """The names directly under folder `rel`, sorted ([] when there is none): files and
        folders, or with `folders` only folders (True) or only files (False)."""
        if self._info(rel).type != pafs.FileType.Directory:
            return []
        try:
            infos = self.fs.get_file_info(pafs.FileSelector(self.path(rel), allow_not_found=True))
        except OSError as e:
            raise StorageError(f"cannot list {self.uri_of(rel)}: {_reason(e)}") from None
        return sorted(
            posixpath.basename(i.path)
            for i in infos
            if folders is None or (i.type == pafs.FileType.Directory) == folders
        )

    # -- units of work (ssl_ray.core.units) ----------------------------------------------
    def commit(self, unit: Unit, result=None) -> None:
        """Write `unit`'s marker with its key and `result`: always the unit's last write."""
        self.write_text(unit.marker, unit.record(result, time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())))

    def done(self, unit: Unit) -> dict | None:
        """The record of `unit` when it is finished (its `result` is what it committed), None
        when it is not. A unit finished with another key is refused: `StaleUnitError`."""
        data = self.read_bytes_if_exists(unit.marker)
        if data is None:
            return None
        recorded = json.loads(data)
        problem = difference(recorded, unit)
        if problem:
            raise StaleUnitError(
                f"{self.uri_of(unit.folder)} holds {unit.name} produced with other settings ({problem})"
            )
        return recorded

    def markers(self, rel: str = "") -> list[dict]:
        """The records of the units finished directly in folder `rel`."""
        return [
            json.loads(self.read_bytes(f"{rel}/{name}" if rel else name))
            for name in self.names(rel, folders=False)
            if name == MARKER or name.startswith(MARKER + ".")
        ]

    def _info(self, rel: str) -> pafs.FileInfo:
        try:
            return self.fs.get_file_info(self.path(rel))
        except OSError as e:
            raise StorageError(f"cannot access {self.uri_of(rel)}: {_reason(e)}") from None


def file_identity(uri: str, storage: StorageConfig) -> str:
    """What tells one version of a file from another: a digest of a local file's bytes, an S3
    object's size and modification time; `uri` itself when no such file exists (e.g. a
    model name Ultralytics resolves, `yolo26n.yaml`)."""
    import hashlib

    if not is_s3(uri):
        path = os.path.expanduser(uri)
        if not os.path.isfile(path):
            return uri
        h = hashlib.blake2b(digest_size=16)
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        return f"{uri}#{h.hexdigest()}"
    folder, _, name = uri.rpartition("/")
    store = Store(folder, storage)
    info = store._info(name)
    return f"{uri}#{info.size}-{info.mtime_ns}"


def preflight(uri: str, cfg: StorageConfig, *, write: bool = False) -> None:
    """Fail fast, before any work, when `uri` cannot be used.

    Local: the folder exists (or, for `write`, can be created and written). S3: see
    `ssl_ray.s3.preflight_s3`.
    """
    if is_s3(uri):
        preflight_s3(uri, cfg, write=write)
    else:
        _preflight_local(uri, write)


def _preflight_local(uri: str, write: bool) -> None:
    path = os.path.abspath(os.path.expanduser(uri))
    if not write:
        if not os.path.exists(path):
            raise StorageError(f"{path} does not exist")
        return
    # The nearest folder that exists must be writable; nothing is created before any work.
    existing = path
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise StorageError(f"{path}: {existing} is a file, not a folder")
    try:
        with tempfile.NamedTemporaryFile(dir=existing, prefix=".preflight-"):
            pass
    except OSError as e:
        raise StorageError(f"{path}: cannot write there ({_reason(e)})") from None


def _list_local(folder: str, strip: int) -> Iterator[FileEntry]:
    """Depth-first in S3 key order (a directory sorts as 'name/'), one directory at a time."""
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return  # vanished while listing
    keyed = sorted((e.name + ("/" if e.is_dir(follow_symlinks=False) else ""), e) for e in entries)
    for key, entry in keyed:
        if key.endswith("/"):
            yield from _list_local(entry.path, strip)
        elif entry.is_file():
            try:
                size = entry.stat().st_size
            except OSError:
                continue
            yield FileEntry(entry.path[strip:].replace(os.sep, "/"), size)


def _reason(e: OSError) -> str:
    """A short reason without echoing request details (which may carry signatures)."""
    if e.strerror:
        return e.strerror
    text = str(e).splitlines()[0] if str(e) else type(e).__name__
    return text[:200]
