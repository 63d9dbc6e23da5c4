"""Consistency matching: views and their inverse, greedy matching and fusion (table-driven)."""

import numpy as np
import pytest

from ssl_ray.core.consistency import (
    View,
    apply_view,
    detect_by_shape,
    detect_with_views,
    fuse,
    parse_views,
    undo_view,
)
from ssl_ray.core.detections import Detections


def dets(*rows, agree=None) -> Detections:
    return (
        Detections.from_array(np.array(rows, float).reshape(-1, 6))
        if agree is None
        else Detections(np.array(rows, float)[:, :4], np.array(rows, float)[:, 4], np.array(rows, float)[:, 5], agree)
    )


@pytest.mark.parametrize(
    "spec, size, expected",
    [
        ("flip", 100, View("flip", a=-1.0, b=100.0)),
        ("scale:0.5", 100, View("scale:0.5", a=0.5, b=25.0, c=0.5, d=25.0)),
    ],
)
def test_parse_views(spec, size, expected):
    assert parse_views([spec], size) == [expected]


@pytest.mark.parametrize("spec", ["flop", "scale", "scale:1.5", "scale:0", "flip:2", "zoom:2", "scale:x"])
def test_parse_views_rejects(spec):
    with pytest.raises(ValueError, match="view|scale|number"):
        parse_views([spec], 64)


@pytest.mark.parametrize(
    "spec, on_view, back",
    [
        ("flip", [70, 20, 90, 40], [10, 20, 30, 40]),
        ("scale:0.5", [30, 35, 40, 45], [10, 20, 30, 40]),
        ("scale:0.8", [10 + 0.8 * 10, 10 + 0.8 * 20, 10 + 0.8 * 30, 10 + 0.8 * 40], [10, 20, 30, 40]),
    ],
)
def test_undo_view(spec, on_view, back):
    (view,) = parse_views([spec], 100)
    out = undo_view(dets([*on_view, 0.9, 2]), view)
    np.testing.assert_allclose(out.xyxy[0], back, atol=1e-9)
    assert out.score[0] == 0.9 and out.cls[0] == 2


@pytest.mark.parametrize("spec", ["flip", "scale:0.5", "scale:0.75"])
def test_apply_then_undo_finds_the_object_where_it_was(spec):
    """A bright square drawn on the canvas, found on the view, maps back onto itself: a box
    predicted on the weak view lands on the same object."""
    size = 64
    canvas = np.full((1, size, size, 3), 114, np.uint8)
    canvas[0, 8:24, 36:60] = 255  # rows 8..23, columns 36..59
    (view,) = parse_views([spec], size)
    seen = apply_view(canvas, view)[0, :, :, 0] > 200
    rows, cols = np.nonzero(seen)
    found = dets([cols.min(), rows.min(), cols.max() + 1, rows.max() + 1, 1.0, 0])
    np.testing.assert_allclose(undo_view(found, view).xyxy[0], [36, 8, 60, 24], atol=1.5)


BASE = dets([10, 10, 30, 30, 0.9, 0], [50, 50, 70, 70, 0.6, 1])


@pytest.mark.parametrize(
    "others, agree",
    [
        ([dets([11, 10, 31, 30, 0.8, 0], [50, 50, 70, 70, 0.7, 1])], [1.0, 1.0]),
        ([dets([11, 10, 31, 30, 0.8, 1])], [0.0, 0.0]),  # same place, other class
        ([dets([25, 25, 45, 45, 0.8, 0])], [0.0, 0.0]),  # same class, IoU too low
        ([Detections.empty()], [0.0, 0.0]),  # the view saw nothing
        ([dets([10, 10, 30, 30, 0.8, 0]), Detections.empty()], [0.5, 0.0]),  # one of two views agrees
    ],
)
def test_fuse_agreement(others, agree):
    np.testing.assert_allclose(fuse(BASE, others, iou_thr=0.5).agree, agree)


def test_fuse_without_views_records_no_agreement():
    assert fuse(BASE, [], iou_thr=0.5).agree is None


def test_fuse_averages_agreeing_boxes_by_score_and_scores_by_mean():
    fused = fuse(dets([10, 10, 30, 30, 0.9, 0]), [dets([12, 10, 32, 30, 0.3, 0])], iou_thr=0.5)
    np.testing.assert_allclose(fused.xyxy[0], [10 * 0.75 + 12 * 0.25, 10, 30 * 0.75 + 32 * 0.25, 30])
    assert fused.score[0] == pytest.approx(0.6) and fused.cls[0] == 0 and fused.agree[0] == 1.0


def test_each_view_box_is_matched_once_highest_score_first():
    base = dets([10, 10, 30, 30, 0.5, 0], [11, 10, 31, 30, 0.9, 0])
    fused = fuse(base, [dets([10, 10, 30, 30, 0.8, 0])], iou_thr=0.5)
    np.testing.assert_allclose(fused.agree, [0.0, 1.0])  # the 0.9 box took the only match
    np.testing.assert_allclose(fused.xyxy[0], base.xyxy[0])  # an unmatched box is kept as predicted


class BrightTeacher:
    """Finds the bright square on each canvas it is given (class 0, score 0.9), off by one
    canvas pixel on the right edge, and records the batch sizes of each forward."""

    def __init__(self):
        self.forwards = []

    def predict(self, images):
        self.forwards.append(len(images))
        out = []
        for im in images:
            rows, cols = np.nonzero(im[:, :, 0] > 200)
            out.append(dets([cols.min(), rows.min(), cols.max() + 2, rows.max() + 1, 0.9, 0]))
        return out


# The square spans x 36..60; each view's box, mapped back, is off by one pixel on the right
# (base: 36..61) or on the left (flip: 35..60); fused as their mean.
@pytest.mark.parametrize(
    "views, agreement, x1, x2",
    [
        ([], None, 36, 61),
        (["flip"], 1.0, 35.5, 60.5),
    ],
)
def test_views_share_one_forward_and_map_back(views, agreement, x1, x2):
    teacher = BrightTeacher()
    canvas = np.full((3, 64, 64, 3), 114, np.uint8)
    canvas[:, 8:24, 36:60] = 255
    results = detect_with_views(teacher.predict, canvas, parse_views(views, 64), 0.5)
    assert teacher.forwards == [3 * (1 + len(views))] and len(results) == 3  # the canvases and their views at once
    for d in results:
        assert len(d) == 1 and (d.agree is None if agreement is None else d.agree[0] == agreement)
        np.testing.assert_allclose(d.xyxy[0], [x1, 8, x2, 24])


def test_detections_validate_their_shapes():
    with pytest.raises(ValueError, match="2 boxes, 1 scores"):
        Detections(np.zeros((2, 4)), np.zeros(1), np.zeros(2))
    with pytest.raises(ValueError, match="whole numbers"):
        Detections(np.zeros((1, 4)), np.zeros(1), np.array([0.5]))
    d = dets([0, 0, 1, 1, 0.9, 2], [0, 0, 2, 2, 0.2, 1])
    kept = d[d.score >= 0.5]
    assert len(kept) == 1 and kept.cls.tolist() == [2] and kept.agree is None


@pytest.mark.parametrize("spec", ["flip", "scale:0.5", "scale:0.75"])
def test_views_of_a_rectangular_canvas_map_back_onto_the_object(spec):
    """`label.canvas: rect`: a 64 x 32 canvas; each view is of that shape and maps back."""
    canvas = np.full((1, 32, 64, 3), 114, np.uint8)
    canvas[0, 4:20, 36:60] = 255
    (view,) = parse_views([spec], 64, 32)
    shown = apply_view(canvas, view)
    assert shown.shape == canvas.shape
    rows, cols = np.nonzero(shown[0, :, :, 0] > 200)
    found = dets([cols.min(), rows.min(), cols.max() + 1, rows.max() + 1, 1.0, 0])
    np.testing.assert_allclose(undo_view(found, view).xyxy[0], [36, 4, 60, 20], atol=1.5)


def test_canvases_of_several_shapes_are_predicted_one_shape_at_a_time_in_their_order():
    teacher = BrightTeacher()
    shapes = [(32, 64), (64, 64), (32, 64), (64, 32)]
    canvases = []
    for k, (h, w) in enumerate(shapes):
        c = np.full((h, w, 3), 114, np.uint8)
        c[2 + k : 10 + k, 4:12] = 255  # each canvas's object 1 px lower than the last's
        canvases.append(c)
    mixed = np.empty(len(canvases), dtype=object)
    mixed[:] = canvases
    found = detect_by_shape(teacher.predict, mixed)
    assert sorted(teacher.forwards) == [1, 1, 2]  # one forward per shape
    assert [d.xyxy[0][1] for d in found] == [2, 3, 4, 5]
    one_shape = np.stack([canvases[0], canvases[2]])
    assert [d.xyxy[0][1] for d in detect_by_shape(teacher.predict, one_shape)] == [2, 4]
