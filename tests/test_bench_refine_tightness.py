"""bench/refine_tightness.py --spread: how the refiner's spread is scored against the truth."""
import importlib.util
from pathlib import Path

import numpy as np
import pytest

_spec = importlib.util.spec_from_file_location("refine_tightness",
                                               Path(__file__).parents[1] / "bench" / "refine_tightness.py")
refine_tightness = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(refine_tightness)

IOUS = np.array([0.97, 0.95, 0.93, 0.91, 0.89, 0.85, 0.80, 0.60])


@pytest.mark.parametrize("spreads, correlation, first_quartile_iou", [
    (np.linspace(0.01, 0.08, 8), -1.0, 0.96),  # the looser the box, the more spread: a perfect signal
    (np.linspace(0.08, 0.01, 8), 1.0, 0.7),  # backwards
])
def test_signal_table_quartiles_and_correlation(spreads, correlation, first_quartile_iou):
    table = refine_tightness.signal_table(IOUS, spreads, [])
    assert table["boxes"] == 8 and table["rank_correlation"] == correlation
    assert [q["boxes"] for q in table["quartiles"]] == [2, 2, 2, 2]
    assert table["quartiles"][0]["median_iou"] == first_quartile_iou
    assert table["quartiles"][0]["range"][0] == round(float(spreads.min()), 4)


def test_signal_table_cuts_split_kept_from_over():
    spreads = np.array([0.01, 0.01, 0.02, 0.02, 0.03, 0.05, 0.06, 0.09])
    cut = refine_tightness.signal_table(IOUS, spreads, [0.02])["cuts"]["0.02"]
    assert cut["kept"] == {"boxes": 4, "median_iou": 0.94, "iou_at_least_0.9": 1.0}  # at the cut: kept
    assert cut["over"] == {"boxes": 4, "median_iou": 0.825, "iou_at_least_0.9": 0.0}


def test_signal_table_of_too_few_boxes_counts_them_only():
    assert refine_tightness.signal_table(IOUS[:3], np.zeros(3), [0.02]) == {"boxes": 3}


def test_best_iou_is_against_any_true_box_and_zero_without_one():
    dets = np.array([[0, 0, 10, 10, 0.9, 0], [20, 20, 30, 30, 0.8, 0]], float)
    np.testing.assert_allclose(refine_tightness.best_iou(dets, [np.array([0, 0, 10, 5.0])]), [0.5, 0.0])
    np.testing.assert_array_equal(refine_tightness.best_iou(dets, []), [0.0, 0.0])


def test_moved_is_the_mean_edge_shift_over_the_box_side():
    before = np.array([[0, 0, 10, 40, 0.9, 0]], float)  # geometric-mean side 20
    after = np.array([[1, 2, 11, 38, 0.9, 0]], float)  # shifts 1, 2, 1, 2
    np.testing.assert_allclose(refine_tightness.moved(before, after), [1.5 / 20])
