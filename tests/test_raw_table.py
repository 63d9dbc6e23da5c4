"""`core.raw.raw_table`, the inference actor's output built column by column, against the
row-by-row construction it replaced (kept here as the reference), case by case."""

import numpy as np
import pyarrow as pa
import pytest

from ssl_ray.core import schema
from ssl_ray.core.detections import Detections
from ssl_ray.core.geometry import Letterbox, to_normalized_xywh
from ssl_ray.core.raw import raw_table
from ssl_ray.core.schema import RAW_SCHEMA


def reference(batch: dict, dets: list[Detections]) -> pa.Table:
    """One dict per item, one `schema.box` per kept detection: the obvious construction."""
    ok = [not r for r in batch["reject_reason"]]
    it = iter(dets)
    rows = []
    for i in range(len(ok)):
        boxes = []
        if ok[i]:
            d = next(it)
            lb = Letterbox(float(batch["ratio"][i]), float(batch["pad_x"][i]), float(batch["pad_y"][i]))
            xywh = to_normalized_xywh(d.xyxy, lb, int(batch["width"][i]), int(batch["height"][i]))
            agree = [None] * len(d) if d.agree is None else d.agree
            boxes = [
                schema.box(int(c), *xy, score=float(s), agree=a)
                for xy, s, c, a in zip(xywh, d.score, d.cls, agree)
                if xy[2] > 0 and xy[3] > 0
            ]
        frame, ts = int(batch["frame_index"][i]), float(batch["timestamp_s"][i])
        rows.append(
            {
                "image_id": str(batch["image_id"][i]),
                "uri": str(batch["uri"][i]),
                "width": int(batch["width"][i]),
                "height": int(batch["height"][i]),
                "video_uri": str(batch["video_uri"][i]) or None,
                "frame_index": frame if frame >= 0 else None,
                "timestamp_s": None if np.isnan(ts) else ts,
                "reject_reason": str(batch["reject_reason"][i]),
                "reject_detail": str(batch["reject_detail"][i]),
                "source": None,
                "round": 0,
                "boxes": boxes,
                "teacher": None,
            }
        )
    return pa.Table.from_pylist(rows, schema=RAW_SCHEMA)


def make_batch(items: list[dict]) -> dict:
    """Items as `_columns` would give them (only the fields the builder reads)."""
    get = lambda k, default: [it.get(k, default) for it in items]  # noqa: E731
    return {
        "image_id": np.array([f"id{i}" for i in range(len(items))]),
        "uri": np.array([f"s3://b/{i}.jpg" for i in range(len(items))]),
        "width": np.array(get("width", 200), np.int32),
        "height": np.array(get("height", 100), np.int32),
        "video_uri": np.array(get("video_uri", "")),
        "frame_index": np.array(get("frame_index", -1), np.int64),
        "timestamp_s": np.array(get("timestamp_s", np.nan), np.float64),
        "ratio": np.array(get("ratio", 0.32), np.float64),
        "pad_x": np.array(get("pad_x", 0.0), np.float64),
        "pad_y": np.array(get("pad_y", 16.0), np.float64),
        "reject_reason": np.array(get("reject", "")),
        "reject_detail": np.array(get("detail", "")),
    }


def det(*boxes, agree=None) -> Detections:
    a = np.array(boxes, np.float32).reshape(-1, 6)
    return Detections(a[:, :4], a[:, 4], a[:, 5], agree)


BOX = (10, 20, 30, 40, 0.9, 2)
IN_PAD = (5, 0, 30, 10, 0.8, 1)  # entirely in the top padding: clipped to zero height, dropped
EDGE = (-3, 15, 70, 60, 0.4, 0)  # over the left edge: clipped

CASES = {
    "no detections": ([{}, {}], [det(), det()]),
    "boxes, no views": ([{}, {}], [det(BOX, EDGE), det(IN_PAD, BOX)]),
    "agreement, zero included": ([{}], [det(BOX, EDGE, IN_PAD, agree=[1.0, 0.0, 0.5])]),
    "rejects first, between, last": (
        [{"reject": "empty", "detail": "0 bytes"}, {}, {"reject": "corrupt"}, {}, {"reject": "too_large"}],
        [det(BOX), det(EDGE)],
    ),
    "everything rejected": ([{"reject": "empty"}, {"reject": "not_image"}], []),
    "video frames, frame 0 and t=0 kept": (
        [
            {"video_uri": "s3://b/v.mp4", "frame_index": 0, "timestamp_s": 0.0},
            {"video_uri": "s3://b/v.mp4", "frame_index": 50, "timestamp_s": 2.0},
            {},
        ],
        [det(BOX), det(), det(EDGE)],
    ),
    "mixed sizes and letterboxes": (
        [
            {"width": 640, "height": 480, "ratio": 0.1, "pad_x": 0.0, "pad_y": 8.0},
            {"width": 33, "height": 97, "ratio": 0.66, "pad_x": 21.0, "pad_y": 0.0},
        ],
        [det(BOX, EDGE, agree=[0.5, 1.0]), det(BOX, IN_PAD, EDGE, agree=[1.0, 1.0, 0.0])],
    ),
}


@pytest.mark.parametrize("name", CASES)
def test_raw_table_matches_the_row_by_row_construction(name):
    items, dets = CASES[name]
    batch = make_batch(items)
    got = raw_table(batch, dets)
    assert got.schema == RAW_SCHEMA
    assert got.to_pylist() == reference(batch, dets).to_pylist()


def test_raw_table_drops_clipped_boxes_and_nulls_missing_provenance():
    batch = make_batch([{}, {"video_uri": "v.mp4", "frame_index": 0, "timestamp_s": 0.0}])
    rows = raw_table(batch, [det(BOX, IN_PAD, agree=[1.0, 1.0]), det()]).to_pylist()
    assert [len(r["boxes"]) for r in rows] == [1, 0]
    assert rows[0]["boxes"][0]["cls"] == 2 and rows[0]["boxes"][0]["agree"] == 1.0
    assert (rows[0]["video_uri"], rows[0]["frame_index"], rows[0]["timestamp_s"]) == (None, None, None)
    assert (rows[1]["video_uri"], rows[1]["frame_index"], rows[1]["timestamp_s"]) == ("v.mp4", 0, 0.0)


def test_raw_table_refuses_detections_that_do_not_match_the_batch():
    with pytest.raises(ValueError, match="2 detection sets for 1 images"):
        raw_table(make_batch([{}, {"reject": "empty"}]), [det(), det()])
