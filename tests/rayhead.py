"""A real Ray head node for tests, as on a cluster: `ray start --head --block`, bound to
127.0.0.1 on free ports, token auth on with a token of its own. Clients get the environment
they need from `RayHead.env`. Stops (with everything it started) when the context exits."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from s3server import free_port


@dataclass
class RayHead:
    gcs_address: str  # for drivers: RAY_ADDRESS
    dashboard: str  # for `ray job submit --address`
    token: str
    env: dict[str, str]  # a client's environment: token auth, loopback, the project's python first on PATH
    log: Path
    temp_dir: Path  # Ray's session files and logs


@contextlib.contextmanager
def ray_head(workdir: Path, num_cpus: int = 8, env: dict[str, str] | None = None):
    workdir.mkdir(parents=True, exist_ok=True)
    token = secrets.token_hex(32)
    token_path = workdir / "auth_token"
    token_path.write_text(token)
    token_path.chmod(0o600)
    bin_dir = str(Path(sys.executable).parent)
    env = {
        **os.environ,
        **(env or {}),
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN_PATH": str(token_path),
        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
        "RAY_USAGE_STATS_ENABLED": "0",
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    env.pop("RAY_ADDRESS", None)
    port, dash = free_port(), free_port()
    temp_dir = tempfile.mkdtemp(prefix="rayh-", dir="/tmp")  # short: Ray's socket paths have a length limit
    args = [
        str(Path(bin_dir) / "ray"),
        "start",
        "--head",
        "--block",
        "--node-ip-address=127.0.0.1",
        f"--port={port}",
        "--dashboard-host=127.0.0.1",
        f"--dashboard-port={dash}",
        f"--num-cpus={num_cpus}",
        f"--temp-dir={temp_dir}",
        "--disable-usage-stats",
    ]
    for flag in (
        "node-manager-port",
        "object-manager-port",
        "dashboard-agent-listen-port",
        "dashboard-agent-grpc-port",
        "runtime-env-agent-port",
        "metrics-export-port",
        "ray-client-server-port",
    ):
        args.append(f"--{flag}={free_port()}")
    log = workdir / "ray-head.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(args, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    head = RayHead(
        gcs_address=f"127.0.0.1:{port}",
        dashboard=f"http://127.0.0.1:{dash}",
        token=token,
        env={**env, "RAY_ADDRESS": f"127.0.0.1:{port}"},
        log=log,
        temp_dir=Path(temp_dir),
    )
    try:
        _wait_ready(head, proc)
        yield head
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)  # Ray's processes take SIGTERM as a graceful stop
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5)  # `ray start --block` itself may keep waiting
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # anything left in its session
        proc.wait(timeout=10)
        shutil.rmtree(temp_dir, ignore_errors=True)


def _wait_ready(head: RayHead, proc: subprocess.Popen, timeout: float = 120) -> None:
    request = urllib.request.Request(f"{head.dashboard}/api/version", headers={"Authorization": f"Bearer {head.token}"})
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"ray start exited with {proc.returncode}:\n{head.log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(request, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"the Ray head did not come up in {timeout:.0f} s:\n{head.log.read_text()[-3000:]}")
