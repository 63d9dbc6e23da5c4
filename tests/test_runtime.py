"""Runtime hygiene: importing ssl_ray has no side effects; local Ray binds to loopback only and
keeps no more idle workers than cores; an inference process can keep its freed heap."""

import os
import subprocess
import sys

import pytest


def test_importing_every_module_has_no_side_effects(tmp_path):
    code = (
        "import os, sys, pkgutil, importlib, ssl_ray\n"
        "before = dict(os.environ)\n"
        "for m in pkgutil.walk_packages(ssl_ray.__path__, 'ssl_ray.'):\n"
        "    importlib.import_module(m.name)\n"
        "assert dict(os.environ) == before, set(os.environ.items()) ^ set(before.items())\n"
        "heavy = [m for m in ('ray', 'ultralytics', 'torch', 'boto3') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
        "assert os.listdir('.') == [], os.listdir('.')\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("YOLO_", "RAY_"))}
    env["HOME"] = str(tmp_path)
    subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, check=True)


def test_prepare_ultralytics_is_offline_and_self_contained(tmp_path):
    code = (
        "import torch; torch.set_num_threads(2)\n"
        "from ssl_ray.adapters.runtime import prepare_ultralytics\n"
        f"u = prepare_ultralytics({str(tmp_path / 'work')!r})\n"
        "from ultralytics.utils import SETTINGS\n"
        "import os\n"
        "assert os.environ['YOLO_OFFLINE'] == '1'\n"
        "assert SETTINGS['raytune'] is False, SETTINGS\n"
        "assert torch.get_num_threads() == 2, torch.get_num_threads()\n"
        "u.YOLO('yolo26n.yaml')\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("YOLO_")}
    env["HOME"] = str(tmp_path / "home")
    subprocess.run([sys.executable, "-c", code], env=env, check=True, timeout=120)
    assert (tmp_path / "work" / "ultralytics" / "Arial.ttf").exists()
    assert not (tmp_path / "home" / ".config" / "Ultralytics").exists()


@pytest.mark.ray
def test_local_ray_is_bound_to_loopback(ray_local):
    nodes = ray_local.nodes()
    assert nodes and all(n["NodeManagerAddress"] == "127.0.0.1" for n in nodes)

    @ray_local.remote
    def where():
        import ray

        return ray.util.get_node_ip_address()

    assert ray_local.get(where.remote()) == "127.0.0.1"


@pytest.mark.ray
def test_local_ray_stops_idle_workers_beyond_the_cores(ray_local):
    """Six tasks at once need up to six worker processes; once idle, at most the cores' count
    stay (Ray's default keeps up to its 8 logical CPUs: all of them). Meaningful below 5 cores."""
    import time

    import psutil

    @ray_local.remote(num_cpus=0.5)  # half a CPU: six at once even where earlier tests hold some
    def pid_after(seconds):
        time.sleep(seconds)
        return os.getpid()

    pids = set(ray_local.get([pid_after.remote(2.0) for _ in range(6)]))
    assert len(pids) > (os.cpu_count() or 1), "the tasks did not need more workers than cores"
    deadline = time.monotonic() + 30
    while (alive := [p for p in pids if psutil.pid_exists(p)]) and len(alive) > (os.cpu_count() or 1):
        assert time.monotonic() < deadline, f"{len(alive)} idle workers still alive after 30 s"
        time.sleep(0.5)


@pytest.mark.ray
def test_local_ray_workers_use_the_allocator_that_returns_memory(ray_local):
    """A local cluster's workers run Arrow on jemalloc, which gives back what a Parquet task
    freed (the default, mimalloc, kept about twice as much in a merge's worker)."""
    from ssl_ray.adapters.runtime import WORKER_ENV

    @ray_local.remote
    def backend():
        import pyarrow as pa

        return pa.default_memory_pool().backend_name

    assert WORKER_ENV["ARROW_DEFAULT_MEMORY_POOL"] == "jemalloc"
    assert ray_local.get(backend.remote()) == "jemalloc"
