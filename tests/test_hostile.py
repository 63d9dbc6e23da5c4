"""Hostile inputs, end to end through the label stage (see hostile.py for the corpus). Each
item is quarantined with its specific reason or labeled correctly, nothing crashes, no file
is written outside the run directory and the cache, and the accounting is exact."""

import os
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from hostile import DISPLAYED, corpus, exif_rotated_jpeg

from ssl_ray.config import load_config
from ssl_ray.io.storage import Store

ROOT = Path(__file__).parents[1]
DEMO = ROOT / "ssl_ray" / "configs" / "demo.yaml"
NAMES = ["circle", "square", "triangle"]


def test_exif_rotated_image_reaches_the_model_upright():
    """The model sees the displayed image, so its boxes are in displayed coordinates."""
    from ssl_ray.config import PoolConfig
    from ssl_ray.io.items import LoadOptions, load_items

    data = exif_rotated_jpeg(0)  # stored 64x48, red block at x 4..30, y 4..20; orientation 6
    (item,) = load_items("mem://exif.jpg", len(data), LoadOptions(imgsz=64, pool=PoolConfig()), lambda uri: data)
    assert (item["width"], item["height"]) == (48, 64) and not item["reject_reason"]
    r, px, py = item["ratio"], item["pad_x"], item["pad_y"]

    def pixel(x, y):  # displayed coordinates -> the letterboxed canvas the model sees
        return item["image"][int(round(y * r + py)), int(round(x * r + px))].astype(int)

    # rotating 90 degrees clockwise for display puts stored (x, y) at (H - 1 - y, x)
    red, elsewhere = pixel(47 - 12, 17), pixel(12, 17)
    assert red[0] > 200 and red[1] < 60 and red[2] < 60
    assert not (elsewhere[0] > 200 and elsewhere[1] < 60)


def files_under(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


def rows(store: Store, rel: str) -> list[dict]:
    return pq.read_table(store.path(rel), filesystem=store.fs).to_pylist()


def label(pool_uri: str, tmp_path: Path, weights: str, extra=()):
    from ssl_ray.stages.label import label_pool

    cfg = load_config(
        DEMO,
        [
            f"pool.sources=[{pool_uri}]",
            f"output.dir={tmp_path / 'run'}",
            f"output.cache_dir={tmp_path / 'cache'}",
            "pool.max_reject_fraction=0.9",
            "label.score_floor=0.0",
            "model.imgsz=64",
            "select.negative_max_score=0.001",
            *extra,
        ],
    )
    out = Store(cfg.output.dir, cfg.storage)
    return cfg, out, label_pool(cfg, out, round=1, weights=weights, names=NAMES)


@pytest.mark.ray
def test_hostile_pool_on_local_disk(ray_local, teachers, tmp_path, monkeypatch):
    from ssl_ray.io.export import ImageCache, UriReader, write_yolo_tree

    items = corpus()
    pool = tmp_path / "pool"
    pool.mkdir()
    for name, (data, _) in items.items():
        (pool / name).write_bytes(data)
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)  # a shell-injected `touch pwned` would land here
    before = files_under(tmp_path)
    repo_before = files_under(ROOT / "tests")

    cfg, out, summary = label(str(pool), tmp_path, teachers["yolo26n"])

    stage = out.child("rounds/r001")
    rejects = {os.path.basename(r["uri"]): r for r in rows(stage, "rejects")}
    preds = {os.path.basename(p["uri"]): p for p in rows(stage, "predictions")}
    expected_rejects = {name: reason for name, (_, reason) in items.items() if reason}
    assert {name: r["reason"] for name, r in rejects.items()} == expected_rejects
    assert all(r["detail"] for r in rejects.values())
    assert set(preds) == {name for name, (_, reason) in items.items() if reason is None}
    for name, p in preds.items():
        assert (p["width"], p["height"]) == DISPLAYED.get(name, (64, 48)), name
    assert summary["items"] == len(items) == len(preds) + len(rejects)
    assert summary["pseudo"] + summary["negative"] + summary["uncertain"] + summary["rejected"] == len(items)

    # hostile names also go through a YOLO export: files are named by content, inside the tree
    tree = tmp_path / "run" / "yolo"
    write_yolo_tree(
        tree, {"train": list(preds.values())}, NAMES, ImageCache(tmp_path / "cache" / "images"), UriReader(cfg.storage)
    )
    exported = files_under(tree / "images" / "train")
    assert len(exported) == len(preds) and all(
        Path(f).stem in {p["image_id"] for p in preds.values()} for f in exported
    )

    written = files_under(tmp_path) - before
    assert written and all(f.startswith(("run/", "cache/")) for f in written), sorted(written)[:5]
    assert files_under(pool) == set(items)  # the pool is only read
    assert not list(cwd.iterdir()) and files_under(ROOT / "tests") == repo_before


@pytest.mark.ray
@pytest.mark.s3
def test_hostile_s3_keys(ray_local, teachers, tmp_path, bucket, storage_cfg, s3):
    """Keys with empty segments, a leading slash, `..` inside a name, metacharacters, unicode.
    (SeaweedFS refuses keys with `.` or `..` segments, which AWS accepts: those are covered
    without a server below.) Each key is one item, read as the object it names."""
    from ssl_ray.synth import SynthSpec, generate

    generate(tmp_path / "src", SynthSpec(n_train=1, n_val=1, n_pool=5, imgsz=64))
    images = sorted((tmp_path / "src" / "images" / "pool").iterdir())
    keys = [
        "pool//empty-segment.jpg",
        "/pool/leading-slash.jpg",
        "pool/..x/dots-in-a-name.jpg",
        "pool/$(touch pwned) ; `id`.jpg",
        "pool/ünï cødé.jpg",
    ]
    client = s3.client()
    for key, image in zip(keys, images):
        client.put_object(Bucket=bucket, Key=key, Body=image.read_bytes())
    client.put_object(Bucket=bucket, Key="pool/zero.jpg", Body=b"")
    client.put_object(Bucket=bucket, Key="elsewhere/not-in-pool.jpg", Body=images[0].read_bytes())

    extra = [f"storage.endpoint_url={storage_cfg.endpoint_url}", "storage.region=us-east-1"]
    before = files_under(tmp_path)
    _, out, summary = label(f"s3://{bucket}/pool", tmp_path, teachers["yolo11n"], extra)

    stage = out.child("rounds/r001")
    preds, rejects = rows(stage, "predictions"), rows(stage, "rejects")
    listed = {o["Key"] for o in client.list_objects_v2(Bucket=bucket, Prefix="pool/")["Contents"]}
    assert summary["items"] == len(listed) == 6 and len(preds) == 5
    assert [(r["uri"], r["reason"]) for r in rejects] == [(f"s3://{bucket}/pool/zero.jpg", "empty")]
    assert {p["image_id"] for p in preds} == {schema_id(p.read_bytes()) for p in images}
    written = files_under(tmp_path) - before
    assert all(f.startswith(("run/", "cache/")) for f in written), sorted(written)[:5]


def schema_id(data: bytes) -> str:
    from ssl_ray.core.schema import image_id_of_bytes

    return image_id_of_bytes(data)


@pytest.mark.parametrize(
    "key",
    ["pool/a/../../../../etc/passwd.jpg", "pool/./../x.jpg", "/abs/../x.jpg", "pool/..", "pool/clip.mp4/../../x.mp4"],
)
def test_keys_with_dot_segments_never_become_local_paths(tmp_path, key):
    """Whatever a key says, it is only ever an address to read: items keep it as their uri,
    cached and exported files are named by content, videos go through a fresh temp file."""
    from ssl_ray.config import PoolConfig
    from ssl_ray.io.export import ImageCache, write_yolo_tree
    from ssl_ray.io.items import LoadOptions, load_items

    data = corpus()["gray.jpg"][0]
    uri = f"s3://bucket/{key}"
    reads = []

    def read(u):
        reads.append(u)
        return data

    items = list(load_items(uri, len(data), LoadOptions(imgsz=64, pool=PoolConfig()), read))
    assert len(items) == 1 and items[0]["uri"].split("#")[0] == uri and reads in ([uri], [])
    assert items[0]["reject_reason"] in {"", "unsupported_format", "video_unreadable"}  # no extension / not a video
    row = {k: items[0].get(k) for k in ("image_id", "uri", "width", "height", "video_uri", "frame_index")}
    tree = tmp_path / "tree"
    write_yolo_tree(
        tree,
        {"train": [{**row, "boxes": []}] if not items[0]["reject_reason"] else []},
        NAMES,
        ImageCache(tmp_path / "cache"),
        lambda r: data,
    )
    assert {p.parent for p in tmp_path.rglob("*") if p.is_file()} <= {
        tmp_path / "cache" / (row["image_id"] or "")[:2],
        tree,
        tree / "images" / "train",
        tree / "labels" / "train",
    }
