"""Adaptive thresholds: detection matching and threshold derivation (table-driven)."""

import pytest

from ssl_ray.core.schema import box
from ssl_ray.core.thresholds import match_detections, precision_thresholds


def test_match_detections_greedy_by_score_same_class_iou():
    truth = {"a": [box(0, 0.25, 0.25, 0.2, 0.2), box(1, 0.75, 0.75, 0.2, 0.2)], "b": [box(0, 0.5, 0.5, 0.4, 0.4)]}
    preds = {
        "a": [
            box(0, 0.25, 0.25, 0.2, 0.2, 0.9),  # TP
            box(0, 0.26, 0.25, 0.2, 0.2, 0.8),  # duplicate of a matched truth: FP
            box(0, 0.75, 0.75, 0.2, 0.2, 0.7),
        ],  # right place, wrong class: FP
        "c": [box(1, 0.5, 0.5, 0.1, 0.1, 0.6)],  # an image without truth: FP
    }
    scored, n_truth = match_detections(preds, truth, n_classes=2)
    assert sorted(scored[0], reverse=True) == [(0.9, True), (0.8, False), (0.7, False)]
    assert scored[1] == [(pytest.approx(0.6), False)]
    assert n_truth == [2, 1]


def pairs(*spec):
    """'0.9+' = a true positive at 0.9, '0.4-' = a false positive."""
    return [(float(s[:-1]), s[-1] == "+") for s in spec]


@pytest.mark.parametrize(
    "scored, target, expected",
    [
        # precision by threshold: 0.9: 1/1, 0.8: 2/2, 0.7: 3/3, 0.6: 3/4, 0.5: 4/5 (not monotonic)
        ([pairs("0.9+", "0.8+", "0.7+", "0.6-", "0.5+")], 0.75, [0.5]),
        ([pairs("0.9+", "0.8+", "0.7+", "0.6-", "0.5+")], 0.85, [0.7]),
        ([pairs("0.9+", "0.8+", "0.7+", "0.6-", "0.5+")], 0.8, [0.5]),
        ([pairs("0.9-", "0.8-", "0.7+")], 0.9, [0.55]),  # never precise enough: fallback
        ([pairs("0.9+", "0.8+")], 0.5, [0.55]),  # too few true positives: fallback
        ([[]], 0.9, [0.55]),  # class never detected: fallback
        ([pairs("0.95+", "0.9+", "0.8+", "0.7+", "0.7-", "0.7-")], 0.75, [0.8]),  # ties: all of 0.7 or none
        ([pairs("0.2+", "0.2+", "0.2+")], 0.9, [0.3]),  # clamped to the floor
    ],
)
def test_precision_thresholds(scored, target, expected):
    assert precision_thresholds(scored, target, fallback=0.55, floor=0.3) == pytest.approx(expected)
