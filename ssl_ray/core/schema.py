"""The Parquet contract (README, "The dataset contract"): one row per image or video frame, one
per reject, and the fixed vocabulary of reject reasons.

Rows are plain dicts in Python and `pa.Table`s on disk; `rows_to_table` is the single place
that turns one into the other, so every writer produces the same schema.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

import pyarrow as pa

SOURCES = ("labeled", "pseudo", "negative", "uncertain")

# Why an item was quarantined: the reasons reject records and reports use.
REASONS = {
    "empty": "zero-byte file",
    "not_image": "not an image file",
    "unsupported_format": "image format not supported",
    "too_large": "more pixels than pool.max_pixels (possible decompression bomb)",
    "corrupt": "truncated or corrupt image data",
    "unreadable": "could not be read from storage",
    "video_unreadable": "video could not be opened or decoded",
    "bad_label": "label file has invalid lines",
    "duplicate": "same content as another pool item",
    "near_duplicate": "video frame nearly identical to the last kept frame of its video",
}
SKIPPED_REASONS = frozenset({"near_duplicate"})  # not labeled by choice: never counted as quarantined

BOX_TYPE = pa.struct(
    [
        ("cls", pa.int32()),
        ("x", pa.float32()),
        ("y", pa.float32()),
        ("w", pa.float32()),
        ("h", pa.float32()),
        ("score", pa.float32()),
        ("agree", pa.float32()),  # share of consistency views that agreed; null when none ran
    ]
)

ROW_SCHEMA = pa.schema(
    [
        ("image_id", pa.string()),
        ("uri", pa.string()),
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("source", pa.string()),
        ("round", pa.int32()),
        ("boxes", pa.list_(BOX_TYPE)),
        ("video_uri", pa.string()),
        ("frame_index", pa.int64()),
        ("timestamp_s", pa.float64()),
        ("teacher", pa.string()),
    ]
)

# What inference writes (raw/), before selection: a row, and why an item was rejected ('' when
# it was not).
RAW_SCHEMA = pa.schema(list(ROW_SCHEMA) + [("reject_reason", pa.string()), ("reject_detail", pa.string())])

REJECT_SCHEMA = pa.schema(
    [
        ("uri", pa.string()),
        ("reason", pa.string()),
        ("detail", pa.string()),
        ("round", pa.int32()),
    ]
)


def image_id_of_bytes(data: bytes) -> str:
    """Content hash of encoded image bytes: identical files share one id wherever they live."""
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def image_id_of_frame(video_id: str, frame_index: int) -> str:
    """Identity of a video frame: hash of the video's identity plus the frame index."""
    return hashlib.blake2b(f"{video_id}#{frame_index}".encode(), digest_size=16).hexdigest()


def make_row(
    *,
    image_id: str,
    uri: str,
    width: int,
    height: int,
    source: str,
    round: int,
    boxes: Iterable[dict] = (),
    video_uri: str | None = None,
    frame_index: int | None = None,
    timestamp_s: float | None = None,
    teacher: str | None = None,
) -> dict:
    if source not in SOURCES and source is not None:  # None: a prediction not yet selected
        raise ValueError(f"source must be one of {SOURCES} or None, got {source!r}")
    return {
        "image_id": image_id,
        "uri": uri,
        "width": int(width),
        "height": int(height),
        "source": source,
        "round": int(round),
        "boxes": list(boxes),
        "video_uri": video_uri,
        "frame_index": frame_index,
        "timestamp_s": timestamp_s,
        "teacher": teacher,
    }


def box(cls: int, x: float, y: float, w: float, h: float, score: float = 1.0, agree: float | None = None) -> dict:
    """One box: class id and normalized center-x, center-y, width, height (Ultralytics xywhn),
    its score and the share of consistency views that agreed with it (None: none ran)."""
    return {
        "cls": int(cls),
        "x": float(x),
        "y": float(y),
        "w": float(w),
        "h": float(h),
        "score": float(score),
        "agree": None if agree is None else float(agree),
    }


def rows_to_table(rows: list[dict]) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=ROW_SCHEMA)


def rejects_to_table(rejects: list[dict]) -> pa.Table:
    return pa.Table.from_pylist(rejects, schema=REJECT_SCHEMA)


def make_reject(uri: str, reason: str, detail: str = "", round: int = 0) -> dict:
    if reason not in REASONS:
        raise ValueError(f"unknown reject reason {reason!r}")
    return {"uri": uri, "reason": reason, "detail": detail, "round": int(round)}
