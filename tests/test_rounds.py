"""Round planning, table-driven: thresholds, early stopping, best round, merge, student start."""

import pyarrow as pa
import pytest

from ssl_ray.config import RoundsConfig, SelectConfig
from ssl_ray.core.rounds import best_round, merged_rows, should_stop, threshold_for


@pytest.mark.parametrize(
    "schedule, round, expected",
    [
        ([], 1, 0.85),
        ([], 5, 0.85),
        ([0.9, 0.8], 1, 0.9),
        ([0.9, 0.8], 2, 0.8),
        ([0.9, 0.8], 3, 0.8),
    ],
)
def test_threshold_for(schedule, round, expected):
    assert threshold_for(round, RoundsConfig(conf_schedule=schedule), SelectConfig()) == expected


def test_round_zero_has_no_threshold():
    with pytest.raises(ValueError):
        threshold_for(0, RoundsConfig(), SelectConfig())


@pytest.mark.parametrize(
    "scores, patience, stop",
    [
        ([0.1], 1, False),
        ([0.1, 0.2], 1, False),  # improved
        ([0.1, 0.2, 0.2], 1, True),  # equal is not better
        ([0.1, 0.2, 0.15], 1, True),
        ([0.1, 0.2, 0.15], 2, False),  # one bad round, patience 2
        ([0.1, 0.2, 0.15, 0.19], 2, True),
        ([0.1, 0.2, 0.15, 0.25], 2, False),
    ],
)
def test_should_stop(scores, patience, stop):
    assert should_stop(scores, patience) is stop


@pytest.mark.parametrize("scores, best", [([0.1], 0), ([0.1, 0.3, 0.2], 1), ([0.3, 0.3], 0), ([0.1, 0.2, 0.2], 1)])
def test_best_round_is_the_best_not_the_last(scores, best):
    assert best_round(scores) == best


def test_merge_keeps_the_labels_of_a_labeled_image_the_pool_also_holds():
    rows = pa.table(
        {"image_id": ["a", "b", "b", "c", "d"], "source": ["labeled", "labeled", "pseudo", "pseudo", "negative"]}
    )
    kept = merged_rows(rows, pa.array(["a", "b"]))
    assert list(zip(kept["image_id"].to_pylist(), kept["source"].to_pylist())) == [
        ("a", "labeled"),
        ("b", "labeled"),
        ("c", "pseudo"),
        ("d", "negative"),
    ]
    assert merged_rows(rows.slice(2), pa.array([], pa.string())).num_rows == 3
    assert merged_rows(rows.slice(0, 0), pa.array(["a"])).num_rows == 0


@pytest.mark.parametrize(
    "fraction, n_labeled, n_other, copies",
    [
        (None, 40, 600, 1),  # off
        (0.5, 40, 600, 15),  # 40 x 15 = 600: half of each epoch labeled
        (0.25, 40, 600, 5),  # 200 of 800
        (0.1, 40, 600, 2),  # 80 of 680 (rounded)
        (0.5, 40, 0, 1),  # nothing to balance against
        (0.01, 40, 600, 1),  # never below one copy
    ],
)
def test_labeled_copies(fraction, n_labeled, n_other, copies):
    from ssl_ray.core.rounds import labeled_copies

    assert labeled_copies(fraction, n_labeled, n_other) == copies


def round_record(labeled=24, train_images=124, copies=3, epochs=5, round=1):
    return {
        "round": round,
        "labeled_images": labeled,
        "train_images": train_images,
        "labeled_copies": copies,
        "held_out": {"epoch": epochs},
        "seconds": 100.0,
        "stage_seconds": {"train": 80.0},
    }


@pytest.mark.parametrize(
    "record, multiple, batch, expected",
    [
        # 24 x 3 + 100 = 172 images per round epoch: 8 copies of 24 (192) cover it; 5 epochs of both
        (round_record(), 1.0, 16, {"labeled_copies": 8, "epochs": 5, "iterations": 60, "round_iterations": 55}),
        (round_record(), 2.0, 16, {"labeled_copies": 15, "epochs": 5, "iterations": 115, "round_iterations": 55}),
        # the round stopped early at epoch 2: so does the control's budget
        (round_record(epochs=2), 1.0, 8, {"labeled_copies": 8, "epochs": 2, "iterations": 48, "round_iterations": 44}),
        # nothing pseudo-labeled: the control is the round's own epoch
        (
            round_record(train_images=24, copies=1),
            1.0,
            16,
            {"labeled_copies": 1, "epochs": 5, "iterations": 10, "round_iterations": 10},
        ),
        # an online round: its epoch is its labeled batches (24 x 5), each with an unlabeled batch
        (
            {**round_record(copies=5), "epoch_images": 120},
            1.0,
            16,
            {"labeled_copies": 5, "epochs": 5, "iterations": 40, "round_iterations": 40},
        ),
    ],
)
def test_the_control_trains_at_least_as_many_steps_as_its_round(record, multiple, batch, expected):
    from ssl_ray.core.rounds import control_plan

    plan = control_plan(record, multiple, batch)
    assert plan == expected and plan["iterations"] >= multiple * plan["round_iterations"]


def test_eta_from_the_last_round():
    from ssl_ray.core.rounds import eta_seconds

    r0 = {"round": 0, "seconds": 30.0, "stage_seconds": {"train": 30.0}}
    assert eta_seconds([r0], max_rounds=3) is None  # the pool's size is not known yet
    done = [r0, round_record()]
    assert eta_seconds(done, max_rounds=3) == 2 * 100.0
    assert eta_seconds(done, max_rounds=3, control=1.0) == 2 * 100.0 + 80.0 * 3  # the control: the rounds' training
    assert eta_seconds([*done, round_record(round=2), round_record(round=3)], max_rounds=3) == 0.0


@pytest.mark.parametrize(
    "n_labeled, n_pool, expected", [(40, 400, 10), (40, 390, 10), (40, 401, 11), (40, 10, 1), (0, 5, 5)]
)
def test_online_epoch_repeats_the_labeled_set_to_one_pass_over_the_pool(n_labeled, n_pool, expected):
    from ssl_ray.core.rounds import online_copies

    assert online_copies(n_labeled, n_pool) == expected
