"""One folder type over local disk and `s3://bucket/prefix`.

`Store(uri, storage_cfg)` is a folder; every method takes a path relative to it, so no stage
branches on the scheme. Bytes move through pyarrow filesystems (which Ray Data and Parquet
use too); boto3 does the S3 preflight and the streaming listing. Credentials come only from
the standard AWS sources and never appear in messages: errors name the bucket, the endpoint
or the path, nothing else.
"""

from __future__ import annotations

import json
import os
import posixpath
import time
import uuid
from dataclasses import dataclass
from typing import Iterator

import pyarrow.fs as pafs

from ssl_ray.config import StorageConfig
from ssl_ray.errors import StorageError

COMMIT_MARKER = "_COMMITTED"


@dataclass(frozen=True, slots=True)
class FileEntry:
    rel: str  # path relative to the store root, '/'-separated
    size: int


def is_s3(uri: str) -> bool:
    return uri.startswith("s3://")


def split_s3(uri: str) -> tuple[str, str]:
    """'s3://bucket/a/b' -> ('bucket', 'a/b')."""
    bucket, _, key = uri[len("s3://"):].partition("/")
    if not bucket:
        raise StorageError(f"{uri!r} is not a valid S3 URI: expected s3://bucket/prefix")
    return bucket, key.strip("/")


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

    def child(self, rel: str) -> "Store":
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
        try:
            with self.fs.open_input_stream(self.path(rel)) as f:
                return f.read()
        except FileNotFoundError:
            raise StorageError(f"{self.uri_of(rel)} does not exist") from None
        except OSError as e:
            raise StorageError(f"cannot read {self.uri_of(rel)}: {_reason(e)}") from None

    def list(self, rel: str = "") -> Iterator[FileEntry]:
        """Every file under `rel`, recursively, in sorted order; streamed, never all at once."""
        base = self.path(rel)
        if self.is_s3:
            yield from _list_s3(base, self.cfg, strip=len(self.root) + 1 if self.root else 0)
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

    # -- commit markers ------------------------------------------------------------------
    def commit(self, rel: str = "", info: dict | None = None) -> None:
        """Write `rel/_COMMITTED` — always the last write of a unit of work."""
        body = {"committed_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **(info or {})}
        self.write_text(posixpath.join(rel, COMMIT_MARKER), json.dumps(body, sort_keys=True) + "\n")

    def is_committed(self, rel: str = "") -> bool:
        return self.exists(posixpath.join(rel, COMMIT_MARKER))

    def _info(self, rel: str) -> pafs.FileInfo:
        try:
            return self.fs.get_file_info(self.path(rel))
        except OSError as e:
            raise StorageError(f"cannot access {self.uri_of(rel)}: {_reason(e)}") from None


def endpoint_url(cfg: StorageConfig) -> str | None:
    """The S3 endpoint: the config, else the standard AWS environment variables."""
    return cfg.endpoint_url or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")


def s3_filesystem(cfg: StorageConfig) -> pafs.S3FileSystem:
    """A pyarrow S3 filesystem. pyarrow ignores AWS_ENDPOINT_URL, so pass it explicitly."""
    kwargs: dict = {
        "connect_timeout": cfg.connect_timeout_s,
        "request_timeout": max(30.0, cfg.connect_timeout_s),
        "retry_strategy": pafs.AwsStandardS3RetryStrategy(max_attempts=cfg.retries + 1),
    }
    session = _boto_session(cfg)
    kwargs["region"] = cfg.region or session.region_name or "us-east-1"
    url = endpoint_url(cfg)
    if url:
        scheme, _, host = url.partition("://")
        kwargs.update(endpoint_override=host.rstrip("/"), scheme=scheme)
    if cfg.profile:  # pyarrow does not read named profiles: resolve them through boto3
        creds = session.get_credentials()
        if creds is None:
            raise StorageError(f"AWS profile {cfg.profile!r} has no credentials")
        frozen = creds.get_frozen_credentials()
        kwargs.update(access_key=frozen.access_key, secret_key=frozen.secret_key, session_token=frozen.token)
    return pafs.S3FileSystem(**kwargs)


def s3_client(cfg: StorageConfig, *, retries: int | None = None):
    from botocore.config import Config as BotoConfig

    boto_cfg = BotoConfig(
        connect_timeout=cfg.connect_timeout_s,
        read_timeout=max(30.0, cfg.connect_timeout_s),
        retries={"max_attempts": (cfg.retries if retries is None else retries) + 1, "mode": "standard"},
    )
    session = _boto_session(cfg)
    return session.client(
        "s3", endpoint_url=endpoint_url(cfg), region_name=cfg.region or session.region_name or "us-east-1",
        config=boto_cfg,
    )


def preflight(uri: str, cfg: StorageConfig, *, write: bool = False) -> None:
    """Fail fast, before any work, when `uri` cannot be used.

    Local: the folder exists (or, for `write`, can be created and written). S3: the endpoint
    answers, the credentials are accepted, the bucket exists, and (for `write`) a probe object
    can be written and deleted.
    """
    if not is_s3(uri):
        _preflight_local(uri, write)
        return
    import botocore.exceptions as bx

    bucket, prefix = split_s3(uri)
    where = f"s3://{bucket}" + (f" at {endpoint_url(cfg)}" if endpoint_url(cfg) else "")
    try:
        client = s3_client(cfg, retries=1)
        client.list_objects_v2(Bucket=bucket, Prefix=prefix, MaxKeys=1)
        if write:
            probe = posixpath.join(prefix, f"_preflight-{uuid.uuid4().hex}")
            client.put_object(Bucket=bucket, Key=probe, Body=b"")
            client.delete_object(Bucket=bucket, Key=probe)
    except bx.NoCredentialsError:
        raise StorageError(
            f"{where}: no AWS credentials found (environment, profile or instance role)"
        ) from None
    except (bx.EndpointConnectionError, bx.ConnectTimeoutError, bx.ReadTimeoutError):
        raise StorageError(f"{where}: the S3 endpoint is unreachable") from None
    except bx.ProfileNotFound:
        raise StorageError(f"{where}: AWS profile {cfg.profile!r} not found") from None
    except bx.ClientError as e:
        code = str(e.response.get("Error", {}).get("Code", ""))
        if code in ("NoSuchBucket", "404"):
            raise StorageError(f"{where}: bucket {bucket!r} does not exist") from None
        if code in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken", "ExpiredToken"):
            raise StorageError(f"{where}: the credentials were rejected ({code})") from None
        if code in ("AccessDenied", "403", "AllAccessDisabled"):
            action = "write to" if write else "list"
            raise StorageError(f"{where}: access denied: cannot {action} s3://{bucket}/{prefix}") from None
        raise StorageError(f"{where}: S3 error {code or 'unknown'}") from None
    except bx.BotoCoreError as e:
        raise StorageError(f"{where}: S3 request failed ({type(e).__name__})") from None


def _preflight_local(uri: str, write: bool) -> None:
    path = os.path.abspath(os.path.expanduser(uri))
    if not write:
        if not os.path.exists(path):
            raise StorageError(f"{path} does not exist")
        return
    try:
        os.makedirs(path, exist_ok=True)
        probe = os.path.join(path, f".preflight-{uuid.uuid4().hex}")
        with open(probe, "wb"):
            pass
        os.remove(probe)
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


def _list_s3(base: str, cfg: StorageConfig, strip: int) -> Iterator[FileEntry]:
    bucket, _, prefix = base.partition("/")
    prefix = f"{prefix}/" if prefix else ""
    paginator = s3_client(cfg).get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            if obj["Key"].endswith("/"):
                continue  # "folder" placeholder objects
            yield FileEntry(f"{bucket}/{obj['Key']}"[strip:], int(obj["Size"]))


def _boto_session(cfg: StorageConfig):
    import boto3
    import botocore.exceptions as bx

    try:
        return boto3.Session(profile_name=cfg.profile) if cfg.profile else boto3.Session()
    except bx.ProfileNotFound:
        raise StorageError(f"AWS profile {cfg.profile!r} not found") from None


def _reason(e: OSError) -> str:
    """A short reason without echoing request details (which may carry signatures)."""
    if e.strerror:
        return e.strerror
    text = str(e).splitlines()[0] if str(e) else type(e).__name__
    return text[:200]
