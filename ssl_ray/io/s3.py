"""S3 plumbing behind `Store`: pyarrow and boto3 clients, the preflight check, streamed
listings. Credentials come only from the standard AWS sources and never appear in messages:
errors name the bucket and the endpoint, nothing else.
"""

from __future__ import annotations

import os
import posixpath
import uuid
from collections.abc import Iterator

import pyarrow.fs as pafs

from ssl_ray.config import StorageConfig
from ssl_ray.errors import StorageError


def split_s3(uri: str) -> tuple[str, str]:
    """'s3://bucket/a/b' -> ('bucket', 'a/b')."""
    bucket, _, key = uri[len("s3://") :].partition("/")
    if not bucket:
        raise StorageError(f"{uri!r} is not a valid S3 URI: expected s3://bucket/prefix")
    return bucket, key.strip("/")


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
        "s3",
        endpoint_url=endpoint_url(cfg),
        region_name=cfg.region or session.region_name or "us-east-1",
        config=boto_cfg,
    )


def preflight_s3(uri: str, cfg: StorageConfig, *, write: bool = False) -> None:
    """Fail fast when the endpoint does not answer, the credentials are refused, the bucket
    is missing, or (for `write`) a probe object cannot be written and deleted."""
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
        raise StorageError(f"{where}: no AWS credentials found (environment, profile or instance role)") from None
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


def list_s3(base: str, cfg: StorageConfig, strip: int) -> Iterator[tuple[str, int]]:
    """(key relative to the first `strip` characters of 'bucket/key', size), page by page."""
    bucket, _, prefix = base.partition("/")
    prefix = f"{prefix}/" if prefix else ""
    paginator = s3_client(cfg).get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            if obj["Key"].endswith("/"):
                continue  # "folder" placeholder objects
            yield f"{bucket}/{obj['Key']}"[strip:], int(obj["Size"])


def _boto_session(cfg: StorageConfig):
    import boto3
    import botocore.exceptions as bx

    try:
        return boto3.Session(profile_name=cfg.profile) if cfg.profile else boto3.Session()
    except bx.ProfileNotFound:
        raise StorageError(f"AWS profile {cfg.profile!r} not found") from None
