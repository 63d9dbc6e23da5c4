"""Store: one behaviour on local disk and on a real S3 server; clear preflight failures."""

import subprocess
import sys
from pathlib import Path

import pytest

from ssl_ray.config import StorageConfig
from ssl_ray.core.units import Unit
from ssl_ray.errors import StorageError
from ssl_ray.io.storage import StaleUnitError, Store, preflight, safe_join

DEMO = Path(__file__).parents[1] / "ssl_ray" / "configs" / "demo.yaml"


@pytest.mark.parametrize(
    "rel, expected",
    [
        ("a/b.txt", "/r/a/b.txt"),
        ("./a//b", "/r/a/b"),
        ("", "/r"),
        ("a\\b", "/r/a/b"),
    ],
)
def test_safe_join(rel, expected):
    assert safe_join("/r", rel) == expected


@pytest.mark.parametrize("rel", ["../x", "a/../../x", "/etc/passwd", "a/..", "..\\x"])
def test_safe_join_refuses_escapes(rel):
    with pytest.raises(StorageError, match="refusing path"):
        safe_join("/r", rel)


def exercise(store: Store):
    """The same script for every backend."""
    assert not store.exists("a/x.bin")
    store.write_bytes("a/x.bin", b"hello")
    store.write_text("a/b/y.txt", "yy")
    store.write_bytes("c.bin", b"")
    assert store.exists("a/x.bin") and store.exists("a")
    assert store.read_bytes("a/x.bin") == b"hello"
    assert [(e.rel, e.size) for e in store.list()] == [("a/b/y.txt", 2), ("a/x.bin", 5), ("c.bin", 0)]
    assert [e.rel for e in store.child("a").list()] == ["b/y.txt", "x.bin"]
    assert store.child("a").read_bytes("b/y.txt") == b"yy"
    unit = Unit("a", "step", settings={"select.conf": 0.5})
    assert store.done(unit) is None and store.markers("a") == []
    store.commit(unit, {"rows": 3})
    assert store.done(unit)["result"] == {"rows": 3}
    assert [m["unit"] for m in store.markers("a")] == ["a/_COMMITTED.step"] and store.names("a") == [
        "_COMMITTED.step",
        "b",
        "x.bin",
    ]
    with pytest.raises(
        StaleUnitError, match=r"holds a \(step\) produced with other settings \(select.conf: 0.5 -> 0.7\)"
    ):
        store.done(Unit("a", "step", settings={"select.conf": 0.7}))
    store.delete_prefix("a")
    # (SeaweedFS keeps empty folders as prefixes after their objects are gone: no files is what counts)
    assert not store.exists("a/x.bin") and store.done(unit) is None and store.names("a", folders=False) == []
    assert [e.rel for e in store.list()] == ["c.bin"]
    store.delete_prefix("nothing/here")  # no error
    with pytest.raises(StorageError, match="does not exist"):
        store.read_bytes("missing")
    with pytest.raises(StorageError, match="refusing path"):
        store.write_bytes("../escape", b"x")


def test_local_store(tmp_path):
    exercise(Store(str(tmp_path / "root")))
    assert not list((tmp_path / "root").rglob("*.tmp-*"))  # atomic writes leave no temp files


@pytest.mark.s3
def test_s3_store(bucket, storage_cfg):
    store = Store(f"s3://{bucket}/some/prefix", storage_cfg)
    exercise(store)
    assert store.uri_of("c.bin") == f"s3://{bucket}/some/prefix/c.bin"


@pytest.mark.s3
def test_s3_store_is_picklable(bucket, storage_cfg):
    import pickle

    store = Store(f"s3://{bucket}/p", storage_cfg)
    store.write_bytes("k", b"v")
    assert pickle.loads(pickle.dumps(store)).read_bytes("k") == b"v"


@pytest.mark.s3
def test_preflight_ok(bucket, storage_cfg):
    preflight(f"s3://{bucket}/runs/x", storage_cfg, write=True)
    assert [e.rel for e in Store(f"s3://{bucket}", storage_cfg).list()] == []  # probe removed


def run_cli(args, env=None):
    import os

    return subprocess.run(
        [sys.executable, "-m", "ssl_ray.cli", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=120,
    )


@pytest.mark.s3
@pytest.mark.parametrize(
    "case, expected",
    [
        ("wrong_secret", "the credentials were rejected"),
        ("missing_bucket", "bucket 'no-such-bucket-here' does not exist"),
        ("closed_port", "the S3 endpoint is unreachable"),
    ],
)
def test_s3_misconfiguration_is_one_clear_error_and_no_output(case, expected, s3, shapes, tmp_path):
    from s3server import free_port

    endpoint = f"http://127.0.0.1:{free_port()}" if case == "closed_port" else s3.endpoint
    bucket = "no-such-bucket-here" if case == "missing_bucket" else "exists-" + case.replace("_", "-")
    if case != "missing_bucket":
        s3.client().create_bucket(Bucket=bucket)
    env = {"AWS_SECRET_ACCESS_KEY": "wrong-secret-value"} if case == "wrong_secret" else {}
    result = run_cli(
        [
            "ingest",
            str(DEMO),
            f"labeled.data={shapes}",
            f"output.dir=s3://{bucket}/run",
            f"storage.endpoint_url={endpoint}",
            "storage.retries=0",
            "storage.connect_timeout_s=1",
        ],
        env,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], result.stderr
    assert s3.secret_key not in result.stderr + result.stdout and "wrong-secret-value" not in result.stderr
    if case != "missing_bucket":
        assert s3.client().list_objects_v2(Bucket=bucket).get("KeyCount", 0) == 0  # nothing written


def test_local_preflight(tmp_path):
    preflight(str(tmp_path / "new" / "dir"), StorageConfig(), write=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # checked, not created: nothing before any work
    with pytest.raises(StorageError, match="does not exist"):
        preflight(str(tmp_path / "absent"), StorageConfig())
    # Unwritable even for root (CI runs as root, which ignores permission bits): a file in the way.
    (tmp_path / "a-file").write_text("x")
    with pytest.raises(StorageError, match="a-file is a file, not a folder"):
        preflight(str(tmp_path / "a-file" / "run"), StorageConfig(), write=True)
