"""Exactly-once accounting over at-least-once raw output; letterbox box math."""

import numpy as np
import pytest

from ssl_ray.core.accounting import boxes_per_class, dedupe, reject_fraction_error, score_histogram
from ssl_ray.core.geometry import to_normalized_xywh
from ssl_ray.io.images import letterbox


def raw(uri, image_id="", reason=""):
    return {
        "image_id": image_id,
        "uri": uri,
        "width": 10,
        "height": 10,
        "source": None,
        "round": 0,
        "boxes": [],
        "video_uri": None,
        "frame_index": None,
        "timestamp_s": None,
        "teacher": None,
        "reject_reason": reason,
        "reject_detail": "d" if reason else "",
    }


def test_retries_are_dropped_and_duplicate_content_is_quarantined():
    rows = [
        raw("b.jpg", "1" * 32),
        raw("a.jpg", "1" * 32),
        raw("a.jpg", "1" * 32),  # a retry of a.jpg
        raw("c.jpg", reason="corrupt"),
        raw("c.jpg", reason="corrupt"),
        raw("d.jpg", "2" * 32),
    ]
    preds, rejects, retries = dedupe(rows, round=2, teacher="w.pt")
    assert [p["uri"] for p in preds] == ["a.jpg", "d.jpg"] and retries == 2
    assert [(r["uri"], r["reason"]) for r in rejects] == [("b.jpg", "duplicate"), ("c.jpg", "corrupt")]
    assert "a.jpg" in rejects[0]["detail"]
    assert all(p["round"] == 2 and p["teacher"] == "w.pt" and p["source"] is None for p in preds)
    # Any arrival order gives the same result.
    assert dedupe(list(reversed(rows)), 2, "w.pt") == (preds, rejects, retries)


@pytest.mark.parametrize(
    "rejected, items, limit, fails",
    [(0, 0, 0.0, False), (5, 100, 0.05, False), (6, 100, 0.05, True), (1, 1, 1.0, False)],
)
def test_reject_fraction(rejected, items, limit, fails):
    assert (reject_fraction_error(rejected, items, limit) is not None) == fails


def test_boxes_per_class():
    rows = [{"boxes": [{"cls": 1}, {"cls": 1}]}, {"boxes": []}, {"boxes": [{"cls": 0}]}]
    assert boxes_per_class(rows, ["a", "b", "c"]) == {"a": 1, "b": 2, "c": 0}


@pytest.mark.parametrize("h, w, size", [(100, 200, 64), (200, 100, 64), (64, 64, 64), (30, 50, 128)])
def test_letterbox_then_back_is_identity(h, w, size):
    canvas, lb = letterbox(np.zeros((h, w, 3), np.uint8), size)
    assert canvas.shape == (size, size, 3)
    # an object covering the middle half of the original image
    x0, y0, x1, y1 = w / 4, h / 4, 3 * w / 4, 3 * h / 4
    xyxy = np.array(
        [[x0 * lb.ratio + lb.pad_x, y0 * lb.ratio + lb.pad_y, x1 * lb.ratio + lb.pad_x, y1 * lb.ratio + lb.pad_y]]
    )
    np.testing.assert_allclose(to_normalized_xywh(xyxy, lb, w, h), [[0.5, 0.5, 0.5, 0.5]], atol=1e-6)


def test_boxes_are_clipped_to_the_image():
    _, lb = letterbox(np.zeros((50, 100, 3), np.uint8), 100)
    out = to_normalized_xywh(np.array([[-20.0, -20.0, 50.0, 50.0]]), lb, 100, 50)
    assert out.min() >= 0 and out.max() <= 1


@pytest.mark.parametrize(
    "scores, expected",
    [
        ([], [0, 0, 0, 0]),
        ([0.0, 0.24, 0.25], [2, 1, 0, 0]),
        ([0.999, 1.0], [0, 0, 0, 2]),  # a score of exactly 1 lands in the last bin
    ],
)
def test_score_histogram(scores, expected):
    rows = [{"boxes": [{"score": s} for s in scores]}, {"boxes": None}]
    assert score_histogram(rows, bins=4) == expected


def test_near_duplicate_frames_are_not_quarantine():
    from ssl_ray.core.accounting import quarantined

    by_reason = {"near_duplicate": 900, "corrupt": 3, "duplicate": 2}
    assert quarantined(by_reason) == 5
    assert reject_fraction_error(quarantined(by_reason), 1000, 0.05) is None
