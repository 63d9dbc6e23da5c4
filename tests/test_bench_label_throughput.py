"""bench/label_throughput.py: which stage runs are timed beside the plain one, with what."""

import pytest

from bench import label_throughput

FLIP = "label.consistency_views=[flip]"


@pytest.mark.parametrize(
    "views, also, refiner, expected",
    [
        ([], [], None, {}),
        (["flip"], [], None, {"views": ([FLIP], None)}),
        (["flip", "scale:0.8"], [], None, {"views": (["label.consistency_views=[flip, scale:0.8]"], None)}),
        ([], ["label.actor_calls=1"], None, {"also": (["label.actor_calls=1"], None)}),
        # the refiner run repeats the views run with the refiner: the two differ only by it
        (["flip"], [], "r.pt", {"views": ([FLIP], None), "refiner": ([FLIP], "r.pt")}),
        ([], [], "r.pt", {"refiner": ([], "r.pt")}),
        (
            ["flip"],
            ["label.actor_calls=1"],
            "r.pt",
            {"views": ([FLIP], None), "refiner": ([FLIP], "r.pt"), "also": (["label.actor_calls=1"], None)},
        ),
    ],
)
def test_side_runs(views, also, refiner, expected):
    runs = label_throughput.side_runs(views, also, refiner)
    assert runs == expected
    assert list(runs) == list(expected)  # the order they run in: the refiner right after the views


def test_only_the_refiner_run_gets_the_refiner():
    runs = label_throughput.side_runs(["flip"], ["x=1"], "r.pt")
    assert [name for name, (_, refiner) in runs.items() if refiner] == ["refiner"]
