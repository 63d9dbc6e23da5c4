"""Consistency matching: views and their inverse, IoU, greedy matching and fusion (table-driven)."""

import numpy as np
import pytest

from ssl_ray.consistency import View, apply_view, detect_with_views, fuse, iou, parse_views, undo_view


@pytest.mark.parametrize("spec, size, expected", [
    ("flip", 100, View("flip", a=-1.0, b=100.0)),
    ("scale:0.5", 100, View("scale:0.5", a=0.5, b=25.0, c=0.5, d=25.0)),
    ("zoom:2", 96, View("zoom:2", a=2.0, c=2.0)),
    ("zoom:1.5", 99, View("zoom:1.5", a=148 / 99, c=148 / 99)),  # 148.5 px rounds to 148: map back exactly
])
def test_parse_views(spec, size, expected):
    assert parse_views([spec], size) == [expected]


@pytest.mark.parametrize("spec", ["flop", "scale", "scale:1.5", "scale:0", "flip:2", "zoom", "zoom:1", "zoom:0.5",
                                  "zoom:5", "zoom:x"])
def test_parse_views_rejects(spec):
    with pytest.raises(ValueError, match="view|scale|zoom|number"):
        parse_views([spec], 64)


@pytest.mark.parametrize("spec, on_view, back", [
    ("flip", [70, 20, 90, 40], [10, 20, 30, 40]),
    ("scale:0.5", [30, 35, 40, 45], [10, 20, 30, 40]),
    ("scale:0.8", [10 + 0.8 * 10, 10 + 0.8 * 20, 10 + 0.8 * 30, 10 + 0.8 * 40], [10, 20, 30, 40]),
    ("zoom:2", [20, 40, 60, 80], [10, 20, 30, 40]),
])
def test_undo_view(spec, on_view, back):
    (view,) = parse_views([spec], 100)
    out = undo_view(np.array([[*on_view, 0.9, 2]]), view)
    np.testing.assert_allclose(out[0, :4], back, atol=1e-9)
    assert out[0, 4] == 0.9 and out[0, 5] == 2


@pytest.mark.parametrize("spec", ["flip", "scale:0.5", "scale:0.75", "zoom:2", "zoom:1.5"])
def test_apply_then_undo_finds_the_object_where_it_was(spec):
    """A bright square drawn on the canvas, found on the view, maps back onto itself."""
    size = 64
    canvas = np.full((1, size, size, 3), 114, np.uint8)
    canvas[0, 8:24, 36:60] = 255  # rows 8..23, columns 36..59
    (view,) = parse_views([spec], size)
    seen = apply_view(canvas, view)[0, :, :, 0] > 200
    rows, cols = np.nonzero(seen)
    found = np.array([[cols.min(), rows.min(), cols.max() + 1, rows.max() + 1, 1.0, 0]], float)
    np.testing.assert_allclose(undo_view(found, view)[0, :4], [36, 8, 60, 24], atol=1.5)


@pytest.mark.parametrize("a, b, expected", [
    ([0, 0, 10, 10], [0, 0, 10, 10], 1.0),
    ([0, 0, 10, 10], [5, 0, 15, 10], 50 / 150),
    ([0, 0, 10, 10], [20, 20, 30, 30], 0.0),
    ([0, 0, 10, 10], [2, 2, 8, 8], 36 / 100),
    ([0, 0, 0, 0], [0, 0, 0, 0], 0.0),  # degenerate boxes: no division by zero
])
def test_iou(a, b, expected):
    assert iou(np.array(a, float), np.array([b], float))[0] == pytest.approx(expected)


BASE = np.array([[10, 10, 30, 30, 0.9, 0], [50, 50, 70, 70, 0.6, 1]], float)


@pytest.mark.parametrize("others, agree", [
    ([], [1.0, 1.0]),                                                          # no other view
    ([np.array([[11, 10, 31, 30, 0.8, 0], [50, 50, 70, 70, 0.7, 1]])], [1.0, 1.0]),
    ([np.array([[11, 10, 31, 30, 0.8, 1]])], [0.0, 0.0]),                     # same place, other class
    ([np.array([[25, 25, 45, 45, 0.8, 0]])], [0.0, 0.0]),                     # same class, IoU too low
    ([np.zeros((0, 6))], [0.0, 0.0]),                                          # the view saw nothing
    ([np.array([[10, 10, 30, 30, 0.8, 0]]), np.zeros((0, 6))], [0.5, 0.0]),   # one of two views agrees
])
def test_fuse_agreement(others, agree):
    _, got = fuse(BASE, others, iou_thr=0.5)
    np.testing.assert_allclose(got, agree)


def test_fuse_averages_agreeing_boxes_by_score_and_scores_by_mean():
    base = np.array([[10, 10, 30, 30, 0.9, 0]], float)
    other = np.array([[12, 10, 32, 30, 0.3, 0]], float)
    fused, agree = fuse(base, [other], iou_thr=0.5)
    np.testing.assert_allclose(fused[0, :4], [10 * 0.75 + 12 * 0.25, 10, 30 * 0.75 + 32 * 0.25, 30])
    assert fused[0, 4] == pytest.approx(0.6) and fused[0, 5] == 0 and agree[0] == 1.0


def test_each_view_box_is_matched_once_highest_score_first():
    base = np.array([[10, 10, 30, 30, 0.5, 0], [11, 10, 31, 30, 0.9, 0]], float)
    other = np.array([[10, 10, 30, 30, 0.8, 0]], float)
    fused, agree = fuse(base, [other], iou_thr=0.5)
    np.testing.assert_allclose(agree, [0.0, 1.0])  # the 0.9 box took the only match
    np.testing.assert_allclose(fused[0], base[0])  # an unmatched box is kept as predicted


def test_a_zoom_enlarges_the_whole_canvas():
    canvas = np.zeros((2, 64, 64, 3), np.uint8)
    (view,) = parse_views(["zoom:1.5"], 64)
    assert apply_view(canvas, view).shape == (2, 96, 96, 3)


@pytest.mark.parametrize("counted, agree", [
    (None, [0.5, 0.0]),            # both views count
    ([True, False], [1.0, 0.0]),   # the second view only refines: the first agreed
    ([False, True], [0.0, 0.0]),   # the agreeing view only refines
    ([False, False], [1.0, 1.0]),  # no view counts: agreement is moot
])
def test_fuse_counts_agreement_over_counted_views_only(counted, agree):
    others = [np.array([[10, 10, 30, 30, 0.8, 0]]), np.zeros((0, 6))]
    _, got = fuse(BASE, others, iou_thr=0.5, counted=counted)
    np.testing.assert_allclose(got, agree)


def test_a_view_that_only_refines_still_moves_the_box():
    base = np.array([[10, 10, 30, 30, 0.5, 0]], float)
    zoomed = np.array([[12, 10, 32, 30, 0.5, 0]], float)
    fused, agree = fuse(base, [zoomed], iou_thr=0.5, counted=[False])
    np.testing.assert_allclose(fused[0, :4], [11, 10, 31, 30])
    assert agree[0] == 1.0


def test_fuse_refuses_counted_flags_that_do_not_match_the_views():
    with pytest.raises(ValueError, match="1 counted flags for 2 views"):
        fuse(BASE, [BASE, BASE], iou_thr=0.5, counted=[True])


class BrightTeacher:
    """Finds the bright square on each canvas it is given (class 0, score 0.9), off by one
    canvas pixel on the right edge, and records the canvas sizes of each forward."""

    def __init__(self):
        self.forwards = []

    def predict(self, images, score_floor):
        self.forwards.append(images.shape[1:3])
        out = []
        for im in images:
            rows, cols = np.nonzero(im[:, :, 0] > 200)
            out.append(np.array([[cols.min(), rows.min(), cols.max() + 2, rows.max() + 1, 0.9, 0]], float))
        return out


# The square spans x 36..60; each view's box, mapped back, is off by one pixel on the right
# (base: 36..61), on the left (flip: 35..60) or by half a pixel (zoom: 36..60.5); fused as their mean.
@pytest.mark.parametrize("consistency, refine, forwards, agreement, x1, x2", [
    ([], [], [(64, 64)], None, 36, 61),
    (["flip"], [], [(64, 64)], 1.0, 35.5, 60.5),                        # one forward: the canvas and its flip
    (["flip"], ["zoom:2"], [(64, 64), (128, 128)], 1.0, 107 / 3, 60.5),  # the zoom in a forward of its own
    ([], ["zoom:2"], [(64, 64), (128, 128)], None, 36, 60.75),         # refining only: no agreement recorded
])
def test_views_run_grouped_by_canvas_size_and_map_back(consistency, refine, forwards, agreement, x1, x2):
    teacher = BrightTeacher()
    canvas = np.full((3, 64, 64, 3), 114, np.uint8)
    canvas[:, 8:24, 36:60] = 255
    views = parse_views(consistency + refine, 64)
    counted = [True] * len(consistency) + [False] * len(refine)
    results = detect_with_views(lambda batch: teacher.predict(batch, 0.0), canvas, views, counted, 0.5)
    assert teacher.forwards == forwards and len(results) == 3
    for dets, agree in results:
        assert dets.shape == (1, 6) and (agree is None if agreement is None else agree[0] == agreement)
        np.testing.assert_allclose(dets[0, :4], [x1, 8, x2, 24])
