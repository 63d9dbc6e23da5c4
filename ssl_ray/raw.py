"""The inference actor's output: a decoded batch and its detections -> RAW_SCHEMA rows.

Pure (numpy and pyarrow): the label stage's actors (`label._Predict`) call `raw_table` on
every batch; it builds the table column by column, so a batch of thousands of boxes costs a
few array operations, not a Python dict per box.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import pyarrow as pa

from ssl_ray import boxes, schema


class Detections(NamedTuple):
    """One image's detections in canvas pixels (k, 6: xyxy, score, class), and per box the
    share of consistency views that agreed (k,) or None (none ran) and the box refiner's
    spread (k,, NaN where it did not measure one) or None (not asked for)."""

    boxes: np.ndarray
    agree: np.ndarray | None = None
    spread: np.ndarray | None = None


def raw_table(batch: dict, dets: list[Detections | tuple]) -> pa.Table:
    """One RAW_SCHEMA row per item of a decoded batch (`label._columns`), built column by column.

    `dets` holds, for each item not rejected and in order, its `Detections` (or a plain
    (boxes, agree) tuple). Boxes are mapped back to normalized xywh on the original image; a
    box clipped to nothing is dropped. Missing provenance ('' / -1 / NaN in the batch), a
    missing agreement and a missing spread become null.
    """
    dets = [Detections(*d) for d in dets]
    n = len(batch["image_id"])
    ok = np.array([not r for r in batch["reject_reason"]], dtype=bool)
    owners = np.flatnonzero(ok)
    if len(owners) != len(dets):
        raise ValueError(f"{len(dets)} detection sets for {len(owners)} images that were not rejected")
    d = np.concatenate([np.asarray(x.boxes, np.float64).reshape(-1, 6) for x in dets] or [np.zeros((0, 6))])
    agree, spread = (np.concatenate([np.full(len(x.boxes), np.nan) if x[field] is None else np.asarray(x[field], np.float64)
                                     for x in dets] or [np.zeros(0)]) for field in (1, 2))
    owner = np.repeat(owners, [len(x.boxes) for x in dets]).astype(np.int64)
    lb = boxes.Letterbox(np.asarray(batch["ratio"], np.float64)[owner], np.asarray(batch["pad_x"], np.float64)[owner],
                         np.asarray(batch["pad_y"], np.float64)[owner])
    width, height = np.asarray(batch["width"])[owner], np.asarray(batch["height"])[owner]
    xywh = boxes.to_normalized_xywh(d[:, :4], lb, width, height)
    keep = (xywh[:, 2] > 0) & (xywh[:, 3] > 0)
    xywh, d, agree, spread = xywh[keep], d[keep], agree[keep], spread[keep]
    offsets = np.concatenate([[0], np.cumsum(np.bincount(owner[keep], minlength=n))]).astype(np.int32)
    f32 = lambda v, nullable=False: pa.array(v.astype(np.float32), pa.float32(),  # noqa: E731
                                             mask=np.isnan(v) if nullable else None)
    box_arrays = [pa.array(d[:, 5].astype(np.int32), pa.int32()), *(f32(xywh[:, j]) for j in range(4)), f32(d[:, 4]),
                  f32(agree, True), f32(spread, True)]
    structs = pa.StructArray.from_arrays(box_arrays, fields=list(schema.BOX_TYPE))
    frame = np.asarray(batch["frame_index"], np.int64)
    ts = np.asarray(batch["timestamp_s"], np.float64)
    text = lambda k: pa.array([str(v) for v in batch[k]], pa.string())  # noqa: E731
    video = [str(v) or None for v in batch["video_uri"]]
    columns = {
        "image_id": text("image_id"), "uri": text("uri"),
        "width": pa.array(np.asarray(batch["width"], np.int32)), "height": pa.array(np.asarray(batch["height"], np.int32)),
        "source": pa.nulls(n, pa.string()), "round": pa.array(np.zeros(n, np.int32)),
        "boxes": pa.ListArray.from_arrays(pa.array(offsets), structs, type=pa.list_(schema.BOX_TYPE)),
        "video_uri": pa.array(video, pa.string()), "frame_index": pa.array(frame, pa.int64(), mask=frame < 0),
        "timestamp_s": pa.array(ts, pa.float64(), mask=np.isnan(ts)), "teacher": pa.nulls(n, pa.string()),
        "reject_reason": text("reject_reason"), "reject_detail": text("reject_detail"),
    }
    return pa.Table.from_arrays([columns[f.name] for f in schema.RAW_SCHEMA], schema=schema.RAW_SCHEMA)
