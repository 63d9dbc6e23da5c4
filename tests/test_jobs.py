"""The job as users launch it: through `ray job submit` against a head node started with the
`ray` CLI (token auth on), and as a driver process that is SIGKILLed mid-round and re-run."""

import hashlib
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

ROOT = Path(__file__).parents[1]
SMOKE = ROOT / "jobs" / "configs" / "smoke.yaml"
POOL = 200  # the synthetic dataset's pool (SynthSpec defaults): 40 train, 32 val, 200 pool


def overrides(tmp_path: Path, *extra: str) -> list[str]:
    data = tmp_path / "data"
    return [
        f"labeled.data={data / 'data.yaml'}",
        f"pool.sources=[{data / 'images' / 'pool'}]",
        f"output.dir={tmp_path / 'run'}",
        f"output.cache_dir={tmp_path / 'cache'}",
        *extra,
    ]


def digests(root: Path) -> dict:
    return {
        str(p.relative_to(root)): hashlib.md5(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def check_round(run: Path, r: int, n_labeled: int = 40) -> dict:
    """A committed pseudo-label round: counts add up over the pool, no image twice."""
    stage = run / "rounds" / f"r{r:03d}"
    assert (stage / "_COMMITTED").exists()
    metrics = json.loads((stage / "metrics.json").read_text())
    lab = metrics["label"]
    assert lab["items"] == POOL == lab["pseudo"] + lab["negative"] + lab["uncertain"] + lab["rejected"]
    ids = pq.read_table(stage / "merged.parquet").column("image_id").to_pylist()
    assert len(ids) == len(set(ids)) == n_labeled + lab["pseudo_used"] + lab["negative_used"] == metrics["train_images"]
    return metrics


@pytest.mark.ray
@pytest.mark.train
@pytest.mark.s3
def test_smoke_job_through_ray_job_submit_leaks_no_secret(ray_head, s3, bucket, tmp_path):
    """The smoke config through the real client, its run directory on S3. Then neither the S3
    secret key nor the Ray token may appear in the job's output, any Ray log, the run's
    objects (Parquet, reports, saved config, weights) or any local file the job wrote."""
    run = f"s3://{bucket}/smoke"
    cmd = [
        "ray",
        "job",
        "submit",
        "--address",
        ray_head.dashboard,
        "--working-dir",
        str(ROOT),
        "--runtime-env",
        str(ROOT / "cluster" / "runtime_env.yaml"),
        "--",
        "python",
        "-m",
        "jobs.ssl_rounds",
        "--config",
        "jobs/configs/smoke.yaml",
        "--synth",
        str(tmp_path / "data"),
        *overrides(tmp_path, f"output.dir={run}", f"storage.endpoint_url={s3.endpoint}", "storage.region=us-east-1"),
    ]
    env = {k: v for k, v in ray_head.env.items() if k != "RAY_ADDRESS"}
    result = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    assert "succeeded" in result.stdout + result.stderr
    assert "best round:" in result.stdout  # the job's own output, streamed back by the client

    client = s3.client()
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix="smoke/")
    objects = {
        o["Key"][len("smoke/") :]: client.get_object(Bucket=bucket, Key=o["Key"])["Body"].read()
        for page in pages
        for o in page.get("Contents", [])
    }
    for key in (
        "rounds/r001/_COMMITTED",
        "final/weights/best.pt",
        "final/yolo/data.yaml",
        "report/report.md",
        "report/score_histogram.png",
        "config.yaml",
    ):
        assert objects.get(key), key
    metrics = json.loads(objects["rounds/r001/metrics.json"])
    lab = metrics["label"]
    assert lab["items"] == POOL == lab["pseudo"] + lab["negative"] + lab["uncertain"] + lab["rejected"]
    assert lab["pseudo_used"] >= 1  # round 1 trained on pseudo-labels, not on the labels alone

    def table(folder):  # a folder of Parquet files, one table (ssl_ray.stages.datasets)
        parts = [v for k, v in sorted(objects.items()) if k.startswith(f"{folder}/") and k.endswith(".parquet")]
        assert parts, folder
        return pa.concat_tables(pq.read_table(pa.BufferReader(p)) for p in parts)

    sources = table("rounds/r001/merged.parquet").column("source").to_pylist()
    assert sources.count("pseudo") == lab["pseudo_used"]
    best = json.loads(objects["report/report.json"])["best_round"]
    assert table("final/dataset.parquet").num_rows == (metrics["train_images"] if best == 1 else 40)

    secrets = {"S3 secret key": s3.secret_key.encode(), "Ray token": ray_head.token.encode()}
    places = {
        "job output": (result.stdout + result.stderr).encode(),
        **{f"s3://{bucket}/smoke/{k}": v for k, v in objects.items()},
    }
    for root in (ray_head.temp_dir, tmp_path):  # every Ray log and session file; every local file
        for path in root.rglob("*"):
            if "working_dir_files" in path.parts:
                continue  # the uploaded copy of this repository (tests/s3server.py defines the test key)
            if path.is_file() and not path.is_symlink() and not path.name.endswith(".sock"):
                try:
                    places[str(path)] = path.read_bytes()
                except OSError:
                    pass
    assert len(places) > 50
    leaks = [(what, where) for where, data in places.items() for what, secret in secrets.items() if secret in data]
    assert leaks == []


@pytest.mark.ray
@pytest.mark.train
def test_driver_killed_mid_round_resumes_exactly(ray_head, tmp_path):
    from ssl_ray.synth import SynthSpec, generate

    generate(tmp_path / "data", SynthSpec())
    cmd = [sys.executable, "-m", "jobs.ssl_rounds", "--config", str(SMOKE), *overrides(tmp_path, "train.epochs=3")]
    run = tmp_path / "run"
    log = open(tmp_path / "driver.log", "wb")
    driver = subprocess.Popen(cmd, env=ray_head.env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    snapshot = run / "rounds" / "r001" / "ray" / "r001" / "checkpoint_manager_snapshot.json"

    def registered_epochs() -> list[int]:
        try:
            return [r["metrics"].get("epoch", 0) for r in json.loads(snapshot.read_text())["checkpoint_results"]]
        except (OSError, ValueError, KeyError):
            return []

    try:  # kill it in round 1, once its labels are written and its first epoch is checkpointed
        deadline = time.monotonic() + 600
        while 1 not in registered_epochs():
            assert driver.poll() is None, (tmp_path / "driver.log").read_text()[-4000:]
            assert time.monotonic() < deadline, "round 1 never checkpointed an epoch"
            time.sleep(0.1)
        assert (run / "rounds" / "r001" / "_COMMITTED.label").exists()
        assert not (run / "rounds" / "r001" / "_COMMITTED").exists(), "round 1 finished before the kill"
        driver.send_signal(signal.SIGKILL)
        driver.wait(timeout=30)
    finally:
        if driver.poll() is None:
            driver.kill()
        log.close()
    round0 = digests(run / "rounds" / "r000")
    labeled = digests(run / "labeled")

    again = subprocess.run(cmd, env=ray_head.env, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert again.returncode == 0, again.stdout[-4000:] + again.stderr[-4000:]
    assert digests(run / "rounds" / "r000") == round0 and digests(run / "labeled") == labeled
    check_round(run, 1)
    assert (run / "final" / "weights" / "best.pt").exists() and (run / "report" / "report.json").exists()
    # the re-run's training resumed from round 1's checkpoint: epoch 1 was not trained again
    (audit,) = (tmp_path / "cache" / "train").glob("r001-*/run/ranks/rank0.jsonl")
    records = [json.loads(line) for line in audit.read_text().splitlines()]
    pids = list(dict.fromkeys(r["pid"] for r in records))
    assert len(pids) == 2, records
    assert 1 not in [r["epoch"] for r in records if r["pid"] == pids[1]], records
