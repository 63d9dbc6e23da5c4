"""Merge and final export on Ray Data (`stages.datasets`): the same rows as the merge rule
over whole tables, several Parquet files, every image and label of the YOLO tree written."""

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from ssl_ray.config import load_config
from ssl_ray.core import schema
from ssl_ray.core.rounds import merged_rows
from ssl_ray.io.dataset import load_data_yaml, read_split
from ssl_ray.io.export import label_lines, parquet_num_rows, read_parquet_rows, write_parquet
from ssl_ray.io.storage import Store
from ssl_ray.stages import datasets

pytestmark = pytest.mark.ray

NAMES = ["circle", "square", "triangle"]


def _sorted(rows):
    return sorted(rows, key=lambda r: (r["image_id"], r["source"]))


def _run(tmp_path, shapes, parts=3):
    """A run folder with the labeled set and a round's selection in `parts` files; one pool
    image is also a labeled one."""
    data = load_data_yaml(str(shapes), Store)
    train, val = read_split(data, "train").rows, read_split(data, "val").rows
    pool = sorted((shapes.parent / "images" / "pool").iterdir())
    selected = [
        schema.make_row(
            image_id=schema.image_id_of_bytes(p.read_bytes()),
            uri=str(p),
            width=96,
            height=96,
            source="pseudo" if i % 3 else "negative",
            round=1,
            boxes=[schema.box(i % 3, 0.5, 0.5, 0.2, 0.3, score=0.9)] if i % 3 else [],
        )
        for i, p in enumerate(pool)
    ]
    selected[5] = {**train[2], "source": "pseudo", "round": 1, "boxes": [schema.box(0, 0.1, 0.1, 0.1, 0.1)]}
    out = Store(str(tmp_path / "run"))
    write_parquet(out, "labeled/train.parquet", train)
    write_parquet(out, "labeled/val.parquet", val)
    for k in range(parts):
        write_parquet(out, f"rounds/r001/pseudo/part-{k:06d}.parquet", selected[k::parts])
    return out, train, val, [r for k in range(parts) for r in selected[k::parts]]


def test_merge_equals_the_rule_over_whole_tables_row_for_row(ray_local, shapes, tmp_path, monkeypatch):
    out, train, _, selected = _run(tmp_path, shapes)
    monkeypatch.setattr(datasets, "ROWS_PER_FILE", 10)
    n = datasets.merge_round(out, "rounds/r001")
    ids = pa.array([r["image_id"] for r in train])
    expected = merged_rows(schema.rows_to_table(train + selected), ids).to_pylist()
    assert n == len(expected) == len(train) + len(selected) - 1  # the labeled image keeps its labels
    assert _sorted(read_parquet_rows(out, "rounds/r001/merged.parquet")) == _sorted(expected)  # the same rows
    assert len(out.names("rounds/r001/merged.parquet", folders=False)) > 1  # several files
    assert parquet_num_rows(out, "rounds/r001/merged.parquet") == n
    assert pq.read_table(out.path("rounds/r001/merged.parquet")).num_rows == n  # one table to any reader
    # Redone over a partial folder: the same rows, nothing appended.
    out.write_bytes("rounds/r001/merged.parquet/stale.parquet", out.read_bytes("labeled/val.parquet"))
    assert datasets.merge_round(out, "rounds/r001") == n
    assert _sorted(read_parquet_rows(out, "rounds/r001/merged.parquet")) == _sorted(expected)


def test_merge_of_an_empty_selection_is_the_labeled_set(ray_local, shapes, tmp_path):
    out, train, _, _ = _run(tmp_path, shapes, parts=1)
    write_parquet(out, "rounds/r001/pseudo/part-000000.parquet", [])
    assert datasets.merge_round(out, "rounds/r001") == len(train)
    assert _sorted(read_parquet_rows(out, "rounds/r001/merged.parquet")) == _sorted(
        read_parquet_rows(out, "labeled/train.parquet")
    )


def test_final_export_writes_every_row_image_and_label(ray_local, shapes, tmp_path, bikes_mp4):
    out, train, val, selected = _run(tmp_path, shapes)
    frame = schema.make_row(
        image_id="f" * 32,
        uri=f"{bikes_mp4}#frame=10",
        width=1280,
        height=720,
        source="pseudo",
        round=1,
        boxes=[schema.box(1, 0.5, 0.5, 0.1, 0.1, score=0.8)],
        video_uri=str(bikes_mp4),
        frame_index=10,
    )
    write_parquet(out, "rounds/r001/pseudo/part-000009.parquet", [frame])
    datasets.merge_round(out, "rounds/r001")
    cfg = load_config(None, [f"output.dir={out.root}"])
    n = datasets.export_final(cfg, out, "rounds/r001/merged.parquet", NAMES)
    rows = read_parquet_rows(out, "rounds/r001/merged.parquet")
    assert n == len(rows) and _sorted(read_parquet_rows(out, "final/dataset.parquet")) == _sorted(rows)
    tree = tmp_path / "run" / "final" / "yolo"
    assert yaml.safe_load((tree / "data.yaml").read_text()) == {
        "train": "images/train",
        "val": "images/val",
        "names": dict(enumerate(NAMES)),
    }
    for split, split_rows in (("train", rows), ("val", val)):
        images = sorted(p.stem for p in (tree / "images" / split).iterdir())
        assert images == sorted(r["image_id"] for r in split_rows)
        for r in split_rows:
            assert (tree / "labels" / split / f"{r['image_id']}.txt").read_text() == label_lines(r["boxes"] or [])
    assert (tree / "images" / "train" / f"{'f' * 32}.jpg").read_bytes()[:2] == b"\xff\xd8"  # the frame, as JPEG


def test_final_export_refuses_an_image_id_that_would_steer_a_path(ray_local, shapes, tmp_path):
    out, train, _, _ = _run(tmp_path, shapes, parts=1)
    write_parquet(out, "labeled/train.parquet", [{**train[0], "image_id": "../../etc/passwd"}])
    cfg = load_config(None, [f"output.dir={out.root}"])
    with pytest.raises(Exception, match="invalid image_id"):
        datasets.export_final(cfg, out, "labeled/train.parquet", NAMES)
    assert not (tmp_path / "etc").exists()


def test_a_task_holds_a_row_group_or_a_bounded_block_not_the_pool(ray_local, shapes, tmp_path, monkeypatch):
    """Ray Data's defaults pack ~3x10^6 of these rows into one read task and one block, so one
    map task (one core) got a whole 3x10^5-row pool and held it (bench.scale). The datasets'
    reads take a row group a task and cut blocks at BLOCK_BYTES; the transforms after the read
    keep the bound, and the driver's environment is left as it was."""
    import os

    out, _, _, selected = _run(tmp_path, shapes, parts=4)

    def blocks():
        ds = datasets._read(out, "rounds/r001/pseudo").map_batches(lambda b: b, batch_format="pyarrow")
        return [b.num_rows for b in ds.iter_batches(batch_size=None, batch_format="pyarrow")]

    assert len(blocks()) == 4  # a row group (here a file) a task
    monkeypatch.setattr(datasets, "READ_BIN_BYTES", 128 * 2**20)  # Ray's default: all in one
    assert len(blocks()) == 1
    monkeypatch.setattr(datasets, "BLOCK_BYTES", 1024)  # a few rows' worth: the block is cut
    assert len(blocks()) > 4 and sum(blocks()) == len(selected)
    assert "RAY_DATA_PARQUET_BIN_PACKING_BYTES" not in os.environ


def test_parquet_files_are_written_in_bounded_row_groups(tmp_path, monkeypatch):
    from ssl_ray.io import export

    monkeypatch.setattr(export, "ROW_GROUP_ROWS", 3)
    out = Store(str(tmp_path))
    rows = [
        schema.make_row(image_id=f"{i:032x}", uri=f"/x/{i}.jpg", width=8, height=8, source="labeled", round=0)
        for i in range(7)
    ]
    write_parquet(out, "t.parquet", rows)
    meta = pq.ParquetFile(tmp_path / "t.parquet").metadata
    assert [meta.row_group(i).num_rows for i in range(meta.num_row_groups)] == [3, 3, 1]
