"""The inference actor's output: a decoded batch and its detections -> RAW_SCHEMA rows.

Pure (numpy and pyarrow): the label stage's actors call `raw_table` on every batch; it builds
the table column by column, so a batch of thousands of boxes costs a few array operations,
not a Python dict per box.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from ssl_ray.core import geometry, schema
from ssl_ray.core.detections import Detections


def raw_table(batch: dict, dets: list[Detections]) -> pa.Table:
    """One RAW_SCHEMA row per item of a decoded batch (`stages.label_workers.columns`).

    `dets` holds, for each item not rejected and in order, its `Detections`. Boxes are mapped
    back to normalized xywh on the original image; a box clipped to nothing is dropped.
    Missing provenance ('' / -1 / NaN in the batch) and a missing agreement become null.
    """
    n = len(batch["image_id"])
    ok = np.array([not r for r in batch["reject_reason"]], dtype=bool)
    owners = np.flatnonzero(ok)
    if len(owners) != len(dets):
        raise ValueError(f"{len(dets)} detection sets for {len(owners)} images that were not rejected")
    xyxy = np.concatenate([d.xyxy for d in dets] or [np.zeros((0, 4))])
    score = np.concatenate([d.score for d in dets] or [np.zeros(0)])
    cls = np.concatenate([d.cls for d in dets] or [np.zeros(0, np.int64)])
    agree = np.concatenate([np.full(len(d), np.nan) if d.agree is None else d.agree for d in dets] or [np.zeros(0)])
    owner = np.repeat(owners, [len(d) for d in dets]).astype(np.int64)
    lb = geometry.Letterbox(
        np.asarray(batch["ratio"], np.float64)[owner],
        np.asarray(batch["pad_x"], np.float64)[owner],
        np.asarray(batch["pad_y"], np.float64)[owner],
    )
    width, height = np.asarray(batch["width"])[owner], np.asarray(batch["height"])[owner]
    xywh = geometry.to_normalized_xywh(xyxy, lb, width, height)
    keep = (xywh[:, 2] > 0) & (xywh[:, 3] > 0)
    xywh, score, cls, agree = xywh[keep], score[keep], cls[keep], agree[keep]
    offsets = np.concatenate([[0], np.cumsum(np.bincount(owner[keep], minlength=n))]).astype(np.int32)

    def f32(v, nullable=False):
        return pa.array(v.astype(np.float32), pa.float32(), mask=np.isnan(v) if nullable else None)

    box_arrays = [
        pa.array(cls.astype(np.int32), pa.int32()),
        *(f32(xywh[:, j]) for j in range(4)),
        f32(score),
        f32(agree, True),
    ]
    structs = pa.StructArray.from_arrays(box_arrays, fields=list(schema.BOX_TYPE))
    frame = np.asarray(batch["frame_index"], np.int64)
    ts = np.asarray(batch["timestamp_s"], np.float64)

    def text(k):
        return pa.array([str(v) for v in batch[k]], pa.string())

    columns = {
        "image_id": text("image_id"),
        "uri": text("uri"),
        "width": pa.array(np.asarray(batch["width"], np.int32)),
        "height": pa.array(np.asarray(batch["height"], np.int32)),
        "source": pa.nulls(n, pa.string()),
        "round": pa.array(np.zeros(n, np.int32)),
        "boxes": pa.ListArray.from_arrays(pa.array(offsets), structs, type=pa.list_(schema.BOX_TYPE)),
        "video_uri": pa.array([str(v) or None for v in batch["video_uri"]], pa.string()),
        "frame_index": pa.array(frame, pa.int64(), mask=frame < 0),
        "timestamp_s": pa.array(ts, pa.float64(), mask=np.isnan(ts)),
        "teacher": pa.nulls(n, pa.string()),
        "reject_reason": text("reject_reason"),
        "reject_detail": text("reject_detail"),
    }
    return pa.Table.from_arrays([columns[f.name] for f in schema.RAW_SCHEMA], schema=schema.RAW_SCHEMA)
