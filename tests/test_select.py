"""Selection rules, table-driven: thresholds, per-class, size, max boxes, negatives, review."""

import pytest

from ssl_ray.config import SelectConfig
from ssl_ray.core.schema import box
from ssl_ray.core.select import cap_negatives, class_thresholds, classify, select
from ssl_ray.errors import ConfigError

NAMES = ["car", "person", "bike"]


def row(*boxes, image_id="0" * 32, w=100, h=100):
    return {
        "image_id": image_id,
        "uri": f"u/{image_id}",
        "width": w,
        "height": h,
        "boxes": list(boxes),
        "source": None,
        "round": 0,
        "video_uri": None,
        "frame_index": None,
        "timestamp_s": None,
        "teacher": "t",
    }


B = lambda cls, score, size=0.2: box(cls, 0.5, 0.5, size, size, score)  # noqa: E731

CFG = SelectConfig(conf=0.8, negative_max_score=0.2, min_box_px=4, max_boxes=2)


@pytest.mark.parametrize(
    "boxes, cfg, outcome, n_kept",
    [
        ([], CFG, "negative", 0),
        ([B(0, 0.1)], CFG, "negative", 0),  # below the low threshold
        ([B(0, 0.2)], CFG, "uncertain", 1),  # at the low threshold: not background
        ([B(0, 0.5)], CFG, "uncertain", 1),
        ([B(0, 0.8)], CFG, "pseudo", 1),  # at the threshold: kept
        ([B(0, 0.9), B(1, 0.5)], CFG, "pseudo", 1),  # only confident boxes are kept
        ([B(0, 0.9), B(1, 0.95), B(2, 0.85)], CFG, "pseudo", 2),  # max_boxes keeps the best
        ([B(0, 0.9, size=0.03)], CFG, "uncertain", 1),  # 3 px box is dropped -> uncertain
        ([B(0, 0.9, size=0.04)], CFG, "pseudo", 1),  # 4 px: kept
        ([B(1, 0.75)], SelectConfig(conf=0.8, per_class={"person": 0.7}), "pseudo", 1),
        ([B(0, 0.75)], SelectConfig(conf=0.8, per_class={"person": 0.7}), "uncertain", 1),
        ([B(2, 0.95)], SelectConfig(conf=0.8, per_class={"2": 0.99}), "uncertain", 1),
    ],
)
def test_classify(boxes, cfg, outcome, n_kept):
    got, kept, _ = classify(row(*boxes), cfg, class_thresholds(cfg, NAMES))
    assert (got, len(kept)) == (outcome, n_kept)


def test_max_boxes_keeps_highest_scores():
    _, kept, _ = classify(row(B(0, 0.81), B(1, 0.99), B(2, 0.9)), CFG, class_thresholds(CFG, NAMES))
    assert [b["score"] for b in kept] == pytest.approx([0.99, 0.9])


def test_unknown_per_class_key_is_a_config_error():
    with pytest.raises(ConfigError, match="select.per_class.truck: no such class"):
        class_thresholds(SelectConfig(per_class={"truck": 0.5}), NAMES)


def test_round_conf_overrides_global():
    assert class_thresholds(SelectConfig(conf=0.8, per_class={"bike": 0.6}), NAMES, conf=0.5) == [0.5, 0.5, 0.6]


@pytest.mark.parametrize(
    "n_neg, n_pseudo, fraction, used",
    [
        (10, 8, 0.2, 2),
        (10, 8, 0.5, 8),
        (10, 0, 0.2, 0),
        (3, 100, 0.5, 3),
        (10, 8, 0.0, 0),
        (10, 8, 1.0, 10),
    ],
)
def test_cap_negatives(n_neg, n_pseudo, fraction, used):
    negs = [row(image_id=f"{i:032x}") for i in range(n_neg)]
    kept = cap_negatives(negs, n_pseudo, fraction)
    assert len(kept) == used
    assert kept == cap_negatives(list(reversed(negs)), n_pseudo, fraction)  # order-independent


def test_every_row_has_exactly_one_outcome_and_review_is_ranked():
    rows = [
        row(B(0, 0.95), image_id="a" * 32),
        row(image_id="b" * 32),
        row(B(0, 0.5), image_id="c" * 32),  # middle of the band: most uncertain
        row(B(0, 0.25), image_id="d" * 32),  # near the edge: less
        row(B(0, 0.5), B(1, 0.45), image_id="e" * 32),  # two ambiguous boxes: first
    ]
    sel = select(rows, CFG, NAMES, round=3)
    assert sel.counts() == {"pseudo": 1, "negative": 1, "uncertain": 3, "negative_used": 0, "pseudo_used": 1}
    assert [r["image_id"][0] for r in sel.uncertain] == ["e", "c", "d"]
    ids = [r["image_id"] for r in sel.pseudo + sel.negative + sel.uncertain]
    assert sorted(ids) == sorted(r["image_id"] for r in rows)
    assert {r["source"] for r in sel.pseudo} == {"pseudo"} and all(r["round"] == 3 for r in sel.pseudo)


def agreeing(cls, score, agree):
    return {**box(cls, 0.5, 0.5, 0.2, 0.2, score), "agree": agree}


@pytest.mark.parametrize(
    "boxes, min_agreement, outcome",
    [
        ([agreeing(0, 0.9, 1.0)], 1.0, "pseudo"),
        ([agreeing(0, 0.9, 0.5)], 1.0, "uncertain"),  # confident, but a view disagrees: for review
        ([agreeing(0, 0.9, 0.5)], 0.5, "pseudo"),
        ([agreeing(0, 0.9, 0.0)], 0.0, "pseudo"),
        ([B(0, 0.9)], 1.0, "pseudo"),  # no agreement recorded: consistency did not run
    ],
)
def test_agreement_filter(boxes, min_agreement, outcome):
    cfg = SelectConfig(conf=0.8, negative_max_score=0.2, min_agreement=min_agreement)
    assert classify(row(*boxes), cfg, class_thresholds(cfg, NAMES))[0] == outcome


def test_view_disagreement_ranks_for_review():
    cfg = SelectConfig(conf=0.8, negative_max_score=0.2)
    rows = [
        row(agreeing(0, 0.95, 0.0), image_id="a" * 32),  # confident, all views disagree: 1.0
        row(agreeing(0, 0.9, 0.5), image_id="b" * 32),  # half disagree: 0.5
        row(B(0, 0.3), image_id="c" * 32),
    ]  # in the band, near its edge: 0.2
    assert [r["image_id"][0] for r in select(rows, cfg, NAMES, round=1).uncertain] == ["a", "b", "c"]


@pytest.mark.parametrize("cap, used", [(None, "abcde"), (1, "ad"), (2, "abde"), (5, "abcde")])
def test_cap_per_class_keeps_the_best_images_of_each_class(cap, used):
    cfg = SelectConfig(conf=0.5, negative_max_score=0.1, max_images_per_class=cap)
    rows = [
        row(B(0, 0.9), image_id="a" * 32),
        row(B(0, 0.8), image_id="b" * 32),
        row(B(0, 0.7), image_id="c" * 32),
        row(B(1, 0.6), image_id="d" * 32),
        row(B(1, 0.55), B(0, 0.52), image_id="e" * 32),
    ]  # e counts as class 1
    sel = select(rows, cfg, NAMES, round=1)
    assert len(sel.pseudo) == 5 and "".join(r["image_id"][0] for r in sel.pseudo_used) == used
    assert sel.training == sel.pseudo_used + sel.negatives_used


def test_class_conf_replaces_the_global_threshold_but_not_per_class_settings():
    cfg = SelectConfig(conf=0.8, negative_max_score=0.1, per_class={"bike": 0.95})
    rows = [row(B(0, 0.6), image_id="a" * 32), row(B(1, 0.6), image_id="b" * 32), row(B(2, 0.9), image_id="c" * 32)]
    sel = select(rows, cfg, NAMES, round=1, class_conf=[0.5, 0.7, 0.3])
    assert [r["image_id"][0] for r in sel.pseudo] == ["a"]  # car 0.6 >= 0.5; person 0.6 < 0.7; bike keeps 0.95
    with pytest.raises(ValueError, match="3 classes"):
        select(rows, cfg, NAMES, round=1, class_conf=[0.5])
