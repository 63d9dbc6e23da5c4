"""Datasets at pool scale, written by Ray Data: a round's merged training rows and the final
export.

Both stream. Rows travel in Ray Data blocks and every task holds one block, never the
dataset; each output is a folder of Parquet files, `<name>.parquet/<...>.parquet`, which
pyarrow, pandas, Spark and Ray Data read as one table (rows in no promised order: training
sorts images by name).

  merge   labeled/train.parquet + <stage>/pseudo/ -> <stage>/merged.parquet/: every labeled
          row and the round's selected rows whose image is not a labeled one (a labeled
          image keeps its human labels when the pool holds the same bytes). Each task holds
          the labeled set's image ids, not its rows.
  final   the best round's rows -> final/dataset.parquet/, and final/yolo/: `data.yaml`,
          images/ and labels/ of the train and val splits, each image and label file written
          by the task that holds its row, straight to the run's store (local disk or S3).

A step that is cut off leaves a partial folder; the driver redoes the step, which deletes it
first.
"""

from __future__ import annotations

import re

import pyarrow as pa

from ssl_ray.config import Config
from ssl_ray.core import rounds, schema
from ssl_ray.errors import DatasetError
from ssl_ray.io.storage import Store

ROWS_PER_FILE = 50_000  # rows per Parquet file at most (~10 MB of Parquet)
# What one task holds must not grow with the dataset. Ray Data's defaults let it: its Parquet
# reader packs row groups into read tasks of up to 128 MiB of *encoded* size (~3x10^6 of these
# rows; RAY_DATA_PARQUET_BIN_PACKING_BYTES) and yields blocks of up to 128 MiB
# (DataContext.target_max_block_size), so one map task got a whole 3x10^5-row pool, on one
# core (bench.scale). Here a read task holds one row group (at most ROW_GROUP_ROWS) and a
# block at most BLOCK_BYTES: the map tasks run side by side, each with a bounded share.
READ_BIN_BYTES = 1  # smaller than any row group: one a task
BLOCK_BYTES = 8 * 2**20
EXPORT_BATCH = 256  # rows (images) an export task copies at a time

_IMAGE_ID = re.compile(r"^[0-9a-f]{32}$")


def merge_round(out: Store, stage: str) -> int:
    """`<stage>/merged.parquet/` from the labeled rows and the round's selection; its rows."""
    import pyarrow.parquet as pq

    labeled = "labeled/train.parquet"
    ids = pq.read_table(out.path(labeled), filesystem=out.fs, columns=["image_id"]).column("image_id")
    rows = _read(out, labeled, f"{stage}/pseudo").map_batches(
        rounds.merged_rows, fn_kwargs={"labeled": ids.combine_chunks()}, batch_format="pyarrow", batch_size=None
    )
    return _write(rows, out, f"{stage}/merged.parquet")


def export_final(cfg: Config, out: Store, rows: str, names: list[str]) -> int:
    """final/dataset.parquet/ (the rows at `rows`) and the YOLO tree final/yolo/ of them and
    the labeled val split; the training rows written. The training rows are read once: each
    task writes its block's images and labels, then passes the block on to the Parquet."""
    import yaml

    from ssl_ray.io.export import parquet_num_rows, read_parquet_rows

    exported = _read(out, rows).map_batches(
        export_rows,
        fn_kwargs={"out": out, "folder": "final/yolo/%s/train", "storage": cfg.storage},
        batch_format="pyarrow",
        batch_size=EXPORT_BATCH,
    )
    written = _write(exported, out, "final/dataset.parquet")
    if written != parquet_num_rows(out, rows):  # every row's image and label, or the export fails
        raise DatasetError(f"final/: {written} of {parquet_num_rows(out, rows)} training rows exported")
    val = read_parquet_rows(out, "labeled/val.parquet")  # the labeled set's: small, here
    export_rows(schema.rows_to_table(val), out, "final/yolo/%s/val", cfg.storage)
    # No 'path': Ultralytics resolves the splits next to data.yaml, wherever the tree is copied.
    meta = {"train": "images/train", "val": "images/val", "names": dict(enumerate(names))}
    out.write_text("final/yolo/data.yaml", yaml.safe_dump(meta, sort_keys=False))
    return written


def export_rows(batch: pa.Table, out: Store, folder: str, storage) -> pa.Table:
    """Each row's image (as training trees hold it) at `folder % "images"` and its YOLO label
    file at `folder % "labels"`, named by image id; the rows, unchanged."""
    from ssl_ray.io.export import UriReader, label_lines
    from ssl_ray.io.images import for_training
    from ssl_ray.io.video import read_frame_jpeg

    reader = UriReader(storage)
    for row in batch.to_pylist():
        image_id = row["image_id"] or ""
        if not _IMAGE_ID.match(image_id):  # ids name files: none may steer a path
            raise DatasetError(f"invalid image_id {image_id!r}: expected 32 hex digits")
        if row["video_uri"]:  # ranged reads of the frame's group of pictures, not the video
            with reader.open(row["video_uri"]) as source:
                data = read_frame_jpeg(source, row["frame_index"], row["video_uri"])
        else:
            data = reader.read(row["uri"])
        data, ext = for_training(data)
        out.write_bytes(f"{folder % 'images'}/{image_id}.{ext}", data)
        out.write_text(f"{folder % 'labels'}/{image_id}.txt", label_lines(row["boxes"] or []))
    return batch


def _read(out: Store, *rels: str):
    """Contract rows at `rels` (files or folders of parts) as one Ray Dataset: a read task a
    row group (`READ_BIN_BYTES`), blocks of at most `BLOCK_BYTES` (its transforms and write
    inherit the bound)."""
    import os

    import ray

    key, before = "RAY_DATA_PARQUET_BIN_PACKING_BYTES", os.environ.get("RAY_DATA_PARQUET_BIN_PACKING_BYTES")
    os.environ[key] = str(READ_BIN_BYTES)  # Ray reads it as it plans the read, in this process
    try:
        ds = ray.data.read_parquet([out.path(r) for r in rels], filesystem=out.fs, schema=schema.ROW_SCHEMA)
    finally:
        os.environ.pop(key) if before is None else os.environ.update({key: before})
    ds.context.target_max_block_size = BLOCK_BYTES
    return ds


def _write(ds, out: Store, rel: str) -> int:
    """`ds` as the Parquet folder `rel` (anything there before is deleted); its rows."""
    from ssl_ray.io.export import ROW_GROUP_ROWS, parquet_num_rows

    out.delete_prefix(rel)
    # No minimum rows per file: bundling blocks up to one would put several read tasks' rows
    # in one write task.
    ds.write_parquet(
        out.path(rel),
        filesystem=out.fs,
        max_rows_per_file=ROWS_PER_FILE,
        row_group_size=min(ROW_GROUP_ROWS, ROWS_PER_FILE),
    )
    if not out.exists(rel):  # an empty dataset writes no file: still a table, with no rows
        from ssl_ray.io.export import write_parquet

        write_parquet(out, f"{rel}/part-000000.parquet", [])
    return parquet_num_rows(out, rel)
