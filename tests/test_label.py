"""The label stage on a local Ray cluster: every pool item accounted for exactly once, on
local disk and on S3, with video frames carrying provenance and rejects carrying reasons."""

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pyarrow.parquet as pq
import pytest

from ssl_ray.config import load_config
from ssl_ray.io.storage import Store

DEMO = Path(__file__).parents[1] / "ssl_ray" / "configs" / "demo.yaml"
NAMES = ["circle", "square", "triangle"]
EVERY_N = 50
BROKEN = {
    "zero.jpg": "empty",
    "text posing as image.jpg": "not_image",
    "truncated.jpg": "corrupt",
    "zz copy of pool 1 (ünï).jpg": "duplicate",
    "broken.mp4": "video_unreadable",
}
# Files beside the media that are not media (a dataset root's labels, its yaml, notes): skipped.
SKIPPED = {
    "notes.txt": b"not media",
    "labels/pool_1.txt": b"0 0.5 0.5 0.1 0.1\n",
    "data.yaml": b"names: [a]\n",
    "README": b"no extension, not media",
}
EXTRA_IMAGES = 2  # an image without an extension (found by its bytes) and a single-frame GIF


@pytest.fixture(scope="module")
def pool_dir(shapes, bikes_mp4, tmp_path_factory):
    root = tmp_path_factory.mktemp("pool")
    images = sorted((shapes.parent / "images" / "pool").iterdir())[:20]
    for p in images:
        shutil.copy(p, root / p.name)
    (root / "zero.jpg").write_bytes(b"")
    (root / "text posing as image.jpg").write_text("hello")
    for name, data in SKIPPED.items():
        (root / name).parent.mkdir(exist_ok=True)
        (root / name).write_bytes(data)
    from PIL import Image

    Image.open(images[2]).save(root / "frame_without_extension", format="PNG")
    Image.open(images[3]).convert("P").save(root / "single.gif")
    (root / "truncated.jpg").write_bytes(images[0].read_bytes()[:200])
    shutil.copy(images[1], root / "zz copy of pool 1 (ünï).jpg")
    (root / "videos").mkdir()
    shutil.copy(bikes_mp4, root / "videos" / "bikes.mp4")
    (root / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(100))
    return root


def expected_frames(path) -> tuple[int, float]:
    cap = cv2.VideoCapture(str(path))
    n, fps = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)), cap.get(cv2.CAP_PROP_FPS)
    cap.release()
    return len(range(0, n, EVERY_N)), fps


def run_stage(pool_uri, out_uri, weights, extra=()):
    from ssl_ray.stages.label import label_pool

    cfg = load_config(
        DEMO,
        [
            f"pool.sources=[{pool_uri}]",
            f"output.dir={out_uri}",
            f"pool.video_every_n={EVERY_N}",
            "pool.max_reject_fraction=0.5",
            "label.score_floor=0.0",
            "select.conf=0.5",
            "select.negative_max_score=0.001",
            "model.imgsz=64",
            *extra,
        ],
    )
    out = Store(cfg.output.dir, cfg.storage)
    return cfg, out, label_pool(cfg, out, round=1, weights=weights, names=NAMES)


def read_dir(store: Store, rel: str):
    return pq.read_table(store.path(rel), filesystem=store.fs).to_pylist()


def check_accounting(out: Store, summary: dict, n_frames: int, fps: float, broken: dict = BROKEN):
    stage = out.child("rounds/r001")
    preds = read_dir(stage, "predictions")
    rejects = read_dir(stage, "rejects")
    selection = read_dir(stage, "selection")
    n_images = 20 + EXTRA_IMAGES
    assert summary["files_listed"] == n_images + len(broken) + 1  # images + broken files + the good video
    assert summary["items"] == n_images + n_frames + len(broken)
    assert summary["skipped_not_media"] == len(SKIPPED)
    assert summary["skipped_by_extension"] == {".txt": 2, ".yaml": 1, "(none)": 1}
    assert len(preds) == n_images + n_frames == len({p["image_id"] for p in preds})
    stills = {p["uri"].rsplit("/", 1)[1]: p for p in preds if not p["video_uri"]}
    assert (stills["single.gif"]["width"], stills["frame_without_extension"]["width"]) == (96, 96)
    assert {r["uri"].rsplit("/", 1)[1]: r["reason"] for r in rejects} == broken
    assert all(r["detail"] for r in rejects)
    assert sorted(r["image_id"] for r in selection) == sorted(p["image_id"] for p in preds)
    assert summary["pseudo"] + summary["negative"] + summary["uncertain"] + summary["rejected"] == summary["items"]
    frames = sorted((p for p in preds if p["video_uri"]), key=lambda p: p["frame_index"])
    assert len(frames) == n_frames and summary["videos_frames"] == n_frames
    assert [f["frame_index"] for f in frames] == list(range(0, EVERY_N * n_frames, EVERY_N))
    assert all(f["video_uri"].endswith("videos/bikes.mp4") for f in frames)
    np.testing.assert_allclose([f["timestamp_s"] for f in frames], [f["frame_index"] / fps for f in frames], atol=1e-4)
    stills = [p for p in preds if not p["video_uri"]]
    assert all(p["frame_index"] is None and p["timestamp_s"] is None for p in stills)
    assert all(p["teacher"] and p["round"] == 1 for p in preds)
    assert stage.exists("_COMMITTED.label")
    assert json.loads(stage.read_bytes("label_summary.json"))["items"] == summary["items"]


@pytest.mark.ray
def test_label_local_pool(ray_local, pool_dir, teachers, tmp_path, bikes_mp4):
    import ray

    n_frames, fps = expected_frames(bikes_mp4)
    limits = ray.data.DataContext.get_current().execution_options.resource_limits
    cfg, out, summary = run_stage(str(pool_dir), str(tmp_path / "run"), teachers["yolo26n"])
    check_accounting(out, summary, n_frames, fps)
    # the stage's object store budget was its own dataset's: the process-wide context is untouched
    assert ray.data.DataContext.get_current().execution_options.resource_limits == limits
    # the inference's own span, from Ray Data's stats: inside the stage's, so its rate is higher
    assert 0 < summary["inference_seconds"] < summary["seconds"]
    assert summary["inference_items_per_s"] > summary["items_per_s"]
    # A finished stage is never redone: a second run writes nothing.
    before = {p: p.stat().st_mtime_ns for p in (tmp_path / "run").rglob("*") if p.is_file()}
    _, _, again = run_stage(str(pool_dir), str(tmp_path / "run"), teachers["yolo26n"])
    assert again == summary
    assert before == {p: p.stat().st_mtime_ns for p in (tmp_path / "run").rglob("*") if p.is_file()}
    # Nor is it silently reused with other settings: refused, naming the setting, unless redone.
    from ssl_ray.io.storage import StaleUnitError

    with pytest.raises(
        StaleUnitError,
        match=r"rounds/r001 \(label\) produced with other settings "
        r"\(model.imgsz: 64 -> 96\)",
    ):
        run_stage(str(pool_dir), str(tmp_path / "run"), teachers["yolo26n"], ["model.imgsz=96"])
    assert before == {p: p.stat().st_mtime_ns for p in (tmp_path / "run").rglob("*") if p.is_file()}


@pytest.mark.ray
def test_label_square_canvases_and_video_chunks(ray_local, pool_dir, teachers, tmp_path, bikes_mp4):
    """`label.canvas: square` (the other tests run the default, rectangles of several shapes:
    square stills, a 640x272 video, a placeholder per reject) with the video in chunks of two
    sampled frames: every item is accounted for as with rectangles, and every box lands on
    its image."""
    n_frames, fps = expected_frames(bikes_mp4)
    extra = ["label.canvas=square", "pool.video_chunk_samples=2"]
    _, out, summary = run_stage(str(pool_dir), str(tmp_path / "run"), teachers["yolo11n"], extra)
    check_accounting(out, summary, n_frames, fps)
    assert summary["video_chunks"] == -(-n_frames // 2) + 1  # and broken.mp4, one chunk
    preds = read_dir(out, "rounds/r001/predictions")
    frames = sorted(p["frame_index"] for p in preds if p["video_uri"])
    assert frames == list(range(0, n_frames * EVERY_N, EVERY_N))  # each sampled frame once, over the chunks
    boxes = [b for p in preds for b in p["boxes"] or []]
    assert boxes and all(0 <= b["x"] <= 1 and 0 <= b["y"] <= 1 and 0 < b["w"] <= 1 for b in boxes)


@pytest.mark.ray
def test_label_decoding_jpegs_in_the_actors(ray_local, pool_dir, teachers, tmp_path, bikes_mp4):
    """`label.decode: gpu` (here the actors' device is the CPU): JPEGs cross the object store
    encoded and are decoded in the inference actors, PNGs, GIFs and video frames in the decode
    tasks; a JPEG whose scan no decoder reads is quarantined alone, and every item is
    accounted for as with `label.decode: cpu`."""
    pool = tmp_path / "pool"
    shutil.copytree(pool_dir, pool)
    data = next(pool.glob("pool_*.jpg")).read_bytes()
    sos = data.index(b"\xff\xda")
    (pool / "unreadable scan.jpg").write_bytes(data[: sos + 5] + b"\x09" + data[sos + 6 :])
    n_frames, fps = expected_frames(bikes_mp4)
    _, out, summary = run_stage(str(pool), str(tmp_path / "run"), teachers["yolo26n"], ["label.decode=gpu"])
    check_accounting(out, summary, n_frames, fps, broken={**BROKEN, "unreadable scan.jpg": "corrupt"})
    # the pool's JPEGs that pass the header check went to the actors: its 20 stills, the copy, the bad scan
    assert summary["decoded_in_actors"] == 20 + 1 + 1


@pytest.mark.ray
def test_label_stage_skips_near_duplicate_frames(ray_local, teachers, tmp_path):
    """A stop in a drive: its frames are skipped, accounted for, and never count as quarantine."""
    from clips import stop_and_go, write_clip

    (tmp_path / "pool").mkdir()
    write_clip(tmp_path / "pool" / "drive.avi", stop_and_go())
    extra = ["pool.video_every_n=1", "pool.video_min_change=8", "pool.max_reject_fraction=0.05"]
    _, out, summary = run_stage(str(tmp_path / "pool"), str(tmp_path / "run"), teachers["yolo26n"], extra)
    assert summary["items"] == 17 and summary["rejected_by_reason"] == {"near_duplicate": 9}
    preds = read_dir(out, "rounds/r001/predictions")
    rejects = read_dir(out, "rounds/r001/rejects")
    assert sorted(p["frame_index"] for p in preds) == [0, 1, 2, 3, 4, 12, 15, 16]
    assert len(rejects) == 9 and all("#frame=" in r["detail"] for r in rejects)


@pytest.mark.ray
@pytest.mark.s3
def test_label_s3_pool(ray_local, pool_dir, teachers, bucket, storage_cfg, bikes_mp4):
    src = Store(f"s3://{bucket}/pool", storage_cfg)
    for p in pool_dir.rglob("*"):
        if p.is_file():
            src.write_bytes(str(p.relative_to(pool_dir)), p.read_bytes())
    n_frames, fps = expected_frames(bikes_mp4)
    # finalize_rows=9: the raw rows are scattered into hash buckets on S3, each finalized apart
    extra = [f"storage.endpoint_url={storage_cfg.endpoint_url}", "storage.region=us-east-1", "label.finalize_rows=9"]
    _, out, summary = run_stage(f"s3://{bucket}/pool", f"s3://{bucket}/run", teachers["yolo11n"], extra)
    check_accounting(out, summary, n_frames, fps)
    assert summary["finalize_tasks"] > 3 and not list(out.list("rounds/r001/scatter"))  # scattered rows removed
    assert all(p["uri"].startswith(f"s3://{bucket}/pool/") for p in read_dir(out.child("rounds/r001"), "predictions"))


@pytest.mark.ray
def test_too_many_rejects_fail_the_stage_without_commit(ray_local, tmp_path, teachers):
    from ssl_ray.stages.label import LabelError, label_pool

    pool = tmp_path / "pool"
    pool.mkdir()
    for i in range(3):
        (pool / f"bad{i}.jpg").write_bytes(b"junk")
    cfg = load_config(
        DEMO, [f"pool.sources=[{pool}]", f"output.dir={tmp_path / 'run'}", "pool.max_reject_fraction=0.5"]
    )
    with pytest.raises(LabelError, match=r"3 of 3 pool items \(100.0%\) were quarantined"):
        label_pool(cfg, Store(cfg.output.dir), round=1, weights=teachers["yolo26n"], names=NAMES)
    stage = tmp_path / "run" / "rounds" / "r001"
    assert not (stage / "_COMMITTED.label").exists() and (stage / "rejects").exists()


def test_job_entrypoint_reports_config_errors_as_one_line(tmp_path):
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-m", "jobs.label", "--config", str(DEMO), "select.conf=3"],
        capture_output=True,
        text=True,
        cwd=Path(__file__).parents[1],
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == ["error: select.conf: 3.0 is out of range, allowed: > 0 and <= 1"]


def test_relative_local_paths_are_made_absolute_on_the_driver(tmp_path, monkeypatch):
    from ssl_ray.config import with_absolute_paths

    monkeypatch.chdir(tmp_path)
    (tmp_path / "w").mkdir()
    (tmp_path / "w" / "best.pt").write_bytes(b"")
    cfg = with_absolute_paths(
        load_config(
            None,
            [
                "pool.sources=[pool, s3://b/p]",
                "output.cache_dir=cache",
                "labeled.data=d/data.yaml",
                "output.dir=run",
                "model.weights=w/best.pt",
            ],
        )
    )
    # weights: a file here is made absolute; an Ultralytics name stays one
    assert cfg.model.weights == str(tmp_path / "w" / "best.pt")
    assert with_absolute_paths(load_config(None, ["model.weights=yolo26n.yaml"])).model.weights == "yolo26n.yaml"
    assert cfg.pool.sources == [str(tmp_path / "pool"), "s3://b/p"]
    assert cfg.output.cache_dir == str(tmp_path / "cache")
    assert (cfg.labeled.data, cfg.output.dir) == (str(tmp_path / "d" / "data.yaml"), str(tmp_path / "run"))
    assert with_absolute_paths(load_config(None)).labeled.data is None
    assert load_config(None).output.cache_dir.startswith("~")  # expanded on each node, not here


@pytest.mark.ray
def test_missing_pool_source_is_one_clear_error_and_no_output(ray_local, tmp_path, teachers):
    from ssl_ray.errors import StorageError
    from ssl_ray.stages.label import label_pool

    cfg = load_config(DEMO, [f"pool.sources=[{tmp_path / 'nowhere'}]", f"output.dir={tmp_path / 'run'}"])
    with pytest.raises(StorageError, match=r"pool source .*nowhere does not exist"):
        label_pool(cfg, Store(cfg.output.dir), round=1, weights=teachers["yolo26n"], names=NAMES)
    assert not (tmp_path / "run").exists()


@pytest.mark.ray
def test_killing_an_inference_actor_mid_pool_loses_and_duplicates_nothing(ray_local, shapes, teachers, tmp_path):
    """SIGKILL the inference actor while it works: Ray restarts it and retries its blocks
    (at-least-once); the stage's outputs still hold every pool item exactly once."""
    import os
    import signal
    import threading
    import time

    import psutil

    from ssl_ray.stages.label import label_pool

    pool = tmp_path / "pool"
    pool.mkdir()
    sources = sorted((shapes.parent / "images" / "pool").iterdir())
    for i in range(240):  # 6 copies of the 40 pool images, each made unique by a trailing byte
        src = sources[i % len(sources)]
        (pool / f"img_{i:04d}.jpg").write_bytes(src.read_bytes() + bytes([i // len(sources)]))
    cfg = load_config(
        DEMO,
        [
            f"pool.sources=[{pool}]",
            f"output.dir={tmp_path / 'run'}",
            "model.imgsz=128",
            "label.batch_size=4",
            "label.score_floor=0.0",
            "select.negative_max_score=0.001",
            "label.finalize_rows=50",
        ],
    )  # retried copies meet their originals in 5 buckets
    killed = []

    def kill_actor_once_it_works():
        # Kill the first actor seen past __init__ a moment after it is seen. On CI one such actor
        # was gone a second later (scaled down, or its work done): os.kill raised and the thread
        # died. A vanished actor is not counted; the search goes on until one is killed.
        deadline = time.time() + 120
        while time.time() < deadline and not killed:
            for p in psutil.process_iter(["cmdline", "pid"]):
                cmd = " ".join(p.info["cmdline"] or [])
                if "MapWorker(MapBatches(Predict))" in cmd and "__init__" not in cmd:
                    time.sleep(0.2)  # let it take some batches first
                    try:
                        os.kill(p.info["pid"], signal.SIGKILL)
                    except ProcessLookupError:
                        continue
                    killed.append(time.time())
                    return
            time.sleep(0.02)

    killer = threading.Thread(target=kill_actor_once_it_works)
    killer.start()
    summary = label_pool(cfg, Store(cfg.output.dir), round=1, weights=teachers["yolo26n"], names=NAMES)
    finished = time.time()
    killer.join()
    assert killed and killed[0] < finished, "the actor was not killed while the stage ran"
    preds = read_dir(Store(cfg.output.dir).child("rounds/r001"), "predictions")
    assert summary["items"] == 240 and summary["rejected"] == 0 and summary["finalize_tasks"] >= 5
    assert len(preds) == 240 == len({p["image_id"] for p in preds})
    assert sorted(p["uri"] for p in preds) == sorted(str(p) for p in pool.iterdir())
