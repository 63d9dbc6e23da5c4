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


def test_the_generated_drive_is_stopped_for_its_middle_half(tmp_path):
    """video-skip's generated clip: the filter skips exactly its stop at a sparse sampling."""
    from ssl_ray.config import PoolConfig
    from ssl_ray.io.pool import LoadOptions, load_items

    clip = label_throughput.drive_clip(tmp_path / "drive.mp4", seconds=4, fps=30, size=(640, 360))
    opts = LoadOptions(64, PoolConfig(video_every_n=10, video_min_change=8))
    rows = list(load_items(str(clip), 1, opts, read_bytes=None, kind="video"))
    skipped = [r["uri"].rsplit("=", 1)[1] for r in rows if r["reject_reason"] == "near_duplicate"]
    # stopped from frame 29 to 89: kept 30, skipped the rest, and 90 (3 px on from the stop)
    assert len(rows) == 12 and skipped == ["40", "50", "60", "70", "80", "90"]
