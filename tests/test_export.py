"""Export: Parquet and YOLO trees; the content-addressed cache keeps every path inside it."""

import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml

from ssl_ray.core import schema
from ssl_ray.errors import DatasetError
from ssl_ray.io.dataset import load_data_yaml, read_split
from ssl_ray.io.export import ImageCache, UriReader, label_lines, read_parquet_rows, write_parquet, write_yolo_tree
from ssl_ray.io.storage import Store


@pytest.mark.parametrize("bad_id", ["../../etc/passwd", "ab/../../x", "", "A" * 32, "0" * 31, "0" * 32 + "/x"])
def test_cache_refuses_ids_that_are_not_hex_digests(tmp_path, bad_id):
    with pytest.raises(DatasetError, match="invalid image_id"):
        ImageCache(tmp_path).ensure(bad_id, lambda: b"")


def test_cache_names_files_by_id_and_sniffed_format(tmp_path, shapes):
    data = (shapes.parent / "images" / "train" / "train_000000.jpg").read_bytes()
    cache = ImageCache(tmp_path / "cache")
    calls = []
    image_id = schema.image_id_of_bytes(data)
    path = cache.ensure(image_id, lambda: calls.append(1) or data)
    assert path == tmp_path / "cache" / image_id[:2] / f"{image_id}.jpg"
    assert cache.ensure(image_id, lambda: calls.append(1) or data) == path
    assert calls == [1]  # second call is a hit


def test_label_lines_have_no_score_column():
    assert label_lines([schema.box(2, 0.5, 0.25, 0.1, 0.2, score=0.7)]) == "2 0.500000 0.250000 0.100000 0.200000\n"


def test_yolo_tree_negatives_get_empty_label_files(tmp_path, shapes):
    rows = read_split(load_data_yaml(str(shapes), Store), "train").rows[:4]
    rows[0] = {**rows[0], "boxes": []}
    tree = write_yolo_tree(
        tmp_path / "yolo",
        {"train": rows, "val": rows[:1]},
        ["circle", "square", "triangle"],
        ImageCache(tmp_path / "cache"),
        UriReader(Store(".").cfg),
    )
    meta = yaml.safe_load(tree.read_text())
    assert meta["train"] == "images/train" and meta["names"] == {0: "circle", 1: "square", 2: "triangle"}
    labels = sorted((tmp_path / "yolo" / "labels" / "train").iterdir())
    images = sorted((tmp_path / "yolo" / "images" / "train").iterdir())
    assert [p.stem for p in labels] == [p.stem for p in images] == sorted(r["image_id"] for r in rows)
    assert (tmp_path / "yolo" / "labels" / "train" / f"{rows[0]['image_id']}.txt").read_text() == ""
    # Re-running over an existing tree is safe and changes nothing.
    before = {p: p.read_bytes() for p in (tmp_path / "yolo").rglob("*") if p.is_file()}
    write_yolo_tree(
        tmp_path / "yolo",
        {"train": rows, "val": rows[:1]},
        ["circle", "square", "triangle"],
        ImageCache(tmp_path / "cache"),
        UriReader(Store(".").cfg),
    )
    assert before == {p: p.read_bytes() for p in (tmp_path / "yolo").rglob("*") if p.is_file()}


def test_yolo_tree_over_another_tree_holds_exactly_the_new_rows(tmp_path, shapes):
    """A tree rewritten with other rows (another run, a changed selection) keeps no file of the
    old rows: a stale image would be trained on with its stale label."""
    rows = read_split(load_data_yaml(str(shapes), Store), "train").rows[:6]
    names, cache, fetch = ["circle", "square", "triangle"], ImageCache(tmp_path / "cache"), UriReader(Store(".").cfg)
    write_yolo_tree(tmp_path / "yolo", {"train": rows[:4]}, names, cache, fetch, repeat=lambda r: 2)
    (tmp_path / "yolo" / "images" / "train" / "cut-off-copy.jpg.1f2e.tmp").write_bytes(b"partial")
    new = [{**rows[0], "boxes": []}, *rows[4:]]
    write_yolo_tree(tmp_path / "yolo", {"train": new}, names, cache, fetch)
    stems = lambda kind: sorted(p.stem for p in (tmp_path / "yolo" / kind / "train").iterdir())  # noqa: E731
    assert stems("images") == stems("labels") == sorted(r["image_id"] for r in new)
    assert (tmp_path / "yolo" / "labels" / "train" / f"{rows[0]['image_id']}.txt").read_text() == ""


def test_video_frames_download_each_s3_video_once(tmp_path, bikes_mp4, monkeypatch):
    """Frames of S3 videos, in any row order, are written from one download per video, and
    each image is the frame its row names."""
    import hashlib

    import cv2

    from ssl_ray.io.video import iter_frames

    reads: list[str] = []
    monkeypatch.setattr(UriReader, "read", lambda self, uri: reads.append(uri) or bikes_mp4.read_bytes())
    frames = {(video, index) for video in ("s3://b/v.mp4", "s3://b/w.mp4") for index in (0, 10, 20)}
    rows = sorted(
        (
            {
                "image_id": hashlib.md5(f"{v}{i}".encode()).hexdigest(),
                "uri": f"{v}#frame={i}",
                "boxes": [],
                "video_uri": v,
                "frame_index": i,
            }
            for v, i in frames
        ),
        key=lambda r: r["image_id"],
    )
    assert [r["video_uri"] for r in rows] != sorted(r["video_uri"] for r in rows)  # the videos interleave
    write_yolo_tree(
        tmp_path / "yolo", {"train": rows}, ["a"], ImageCache(tmp_path / "cache"), UriReader(Store(".").cfg)
    )
    assert sorted(reads) == ["s3://b/v.mp4", "s3://b/w.mp4"]
    truth = {i: cv2.cvtColor(f, cv2.COLOR_RGB2BGR) for i, _, f in iter_frames(str(bikes_mp4), 10, None) if i <= 20}
    for r in rows:
        image = cv2.imread(str(tmp_path / "yolo" / "images" / "train" / f"{r['image_id']}.jpg"))
        errors = {i: np.abs(image.astype(int) - f.astype(int)).mean() for i, f in truth.items()}
        assert min(errors, key=errors.get) == r["frame_index"] and errors[r["frame_index"]] < 3


def test_parquet_round_trip_local(tmp_path, shapes):
    rows = read_split(load_data_yaml(str(shapes), Store), "train").rows
    store = Store(str(tmp_path))
    write_parquet(store, "rows.parquet", rows)
    assert pq.read_schema(tmp_path / "rows.parquet") == schema.ROW_SCHEMA
    # float32 on disk: compare with the rows as the schema stores them
    assert read_parquet_rows(store, "rows.parquet") == schema.rows_to_table(rows).to_pylist()


@pytest.mark.s3
@pytest.mark.train
def test_round_trip_s3_to_yolo_trains_with_ultralytics(tmp_path, shapes, s3, bucket, storage_cfg):
    """generated dataset -> Arrow rows -> Parquet on S3 -> YOLO tree on local disk -> 1 epoch."""
    from ssl_ray.adapters.runtime import prepare_ultralytics

    # The dataset itself lives on S3 too: upload the generated tree.
    src = Store(f"s3://{bucket}/datasets/shapes", storage_cfg)
    for p in shapes.parent.rglob("*"):
        if p.is_file():
            src.write_bytes(str(p.relative_to(shapes.parent)), p.read_bytes())
    factory = lambda uri: Store(uri, storage_cfg)  # noqa: E731
    train = read_split(load_data_yaml(src.uri_of("data.yaml"), factory), "train")
    val = read_split(load_data_yaml(src.uri_of("data.yaml"), factory), "val")
    assert all(r["uri"].startswith(f"s3://{bucket}/datasets/shapes/images/") for r in train.rows)

    runs = Store(f"s3://{bucket}/runs/r1", storage_cfg)
    write_parquet(runs, "dataset/train.parquet", train.rows)
    write_parquet(runs, "dataset/val.parquet", val.rows)
    back_train = read_parquet_rows(runs, "dataset/train.parquet")
    back_val = read_parquet_rows(runs, "dataset/val.parquet")
    assert back_train == schema.rows_to_table(train.rows).to_pylist()

    tree = write_yolo_tree(
        tmp_path / "yolo",
        {"train": back_train, "val": back_val},
        train.names,
        ImageCache(tmp_path / "cache"),
        UriReader(storage_cfg),
    )
    ultralytics = prepare_ultralytics(tmp_path / "work")
    model = ultralytics.YOLO("yolo26n.yaml")
    model.train(
        data=str(tree),
        epochs=1,
        imgsz=64,
        batch=8,
        device="cpu",
        workers=0,
        amp=False,
        plots=False,
        project=str(tmp_path / "train"),
        name="t",
        exist_ok=True,
        verbose=False,
    )
    assert (tmp_path / "train" / "t" / "weights" / "last.pt").exists()


def test_the_cache_looks_up_every_format_it_stores():
    """`ImageCache.ensure` probes one name per stored format instead of listing the folder."""
    from ssl_ray.io.export import _CACHED_EXTS
    from ssl_ray.io.images import FORMATS

    assert set(_CACHED_EXTS) == set(FORMATS.values()) - {"gif"}  # a GIF is stored as a PNG
