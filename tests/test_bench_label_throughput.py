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
    from ssl_ray.io.items import LoadOptions, load_items

    clip = label_throughput.drive_clip(tmp_path / "drive.mp4", seconds=4, fps=30, size=(640, 360))
    opts = LoadOptions(64, PoolConfig(video_every_n=10, video_min_change=8))
    rows = list(load_items(str(clip), 1, opts, read_bytes=None, kind="video"))
    skipped = [r["uri"].rsplit("=", 1)[1] for r in rows if r["reject_reason"] == "near_duplicate"]
    # stopped from frame 29 to 89: kept 30, skipped the rest, and 90 (3 px on from the stop)
    assert len(rows) == 12 and skipped == ["40", "50", "60", "70", "80", "90"]


def test_the_fleet_clip_is_h264_with_a_key_frame_a_second_and_objects_the_teacher_finds(tmp_path):
    """fleet-video's generated clip: what the benchmark says it is, and the bundled
    source-pretrained teacher finds objects in it (a teacher that finds nothing measures
    nothing of the post-processing)."""
    import av
    import numpy as np

    from ssl_ray.adapters.teacher import Teacher
    from ssl_ray.config import PoolConfig
    from ssl_ray.io.items import LoadOptions, load_items
    from ssl_ray.io.video import probe

    clip = label_throughput.fleet_clip(tmp_path / "drive.mp4", seconds=2, size=(640, 360))
    with av.open(str(clip)) as c:
        assert c.streams.video[0].codec_context.name == "h264"
        keys = [p.pts for p in c.demux(video=0) if p.is_keyframe]
    info = probe(str(clip))
    assert (info.frames, info.fps, info.width, info.height) == (60, 30.0, 640, 360) and len(keys) == 2
    opts = LoadOptions(160, PoolConfig(video_keyframes=True))
    rows = list(load_items(str(clip), 1, opts, read_bytes=None, kind="video"))
    assert [r["frame_index"] for r in rows] == [0, 30]
    found = Teacher(str(label_throughput.SOURCE_TEACHER), str(tmp_path), threads=1).predict(
        np.stack([r["image"] for r in rows]), 0.25
    )
    assert all(len(d) >= 1 for d in found)


def test_the_generated_photo_is_a_1080p_jpeg_with_objects_the_teacher_finds(tmp_path):
    """photos' generated camera JPEG: its size and format, and the bundled source-pretrained
    teacher finds confident objects on its 640 canvas (the stage's own decode)."""
    import numpy as np
    from PIL import Image

    from ssl_ray.adapters.teacher import Teacher
    from ssl_ray.io.images import decode_letterboxed

    path = tmp_path / "p.jpg"
    truth = label_throughput.photo(path, seed=1)
    with Image.open(path) as img:
        assert (img.format, img.size) == ("JPEG", (1920, 1080))
    assert len(truth) >= 3 and all(0 <= x0 < x1 <= 1920 and 0 <= y0 < y1 <= 1080 for _, (x0, y0, x1, y1) in truth)
    canvas, lb = decode_letterboxed(path.read_bytes(), 640)[:2]
    (found,) = Teacher(str(label_throughput.SOURCE_TEACHER), str(tmp_path), threads=1).predict(canvas[None], 0.5)
    shift = np.array([lb.pad_x, lb.pad_y] * 2)
    on_canvas = [(c, np.array(xyxy) * lb.ratio + shift) for c, xyxy in truth]
    boxes = {"p": [(int(c), xyxy) for c, xyxy in zip(found.cls, found.xyxy)]}
    # The truth is where the objects are: 2 of this photo's 6 objects found with their class
    # and IoU >= 0.5 (a source-domain teacher on 1080p scenes: it is not a strong detector).
    # (Scores near 0.5 may move with the CPU's kernels: bounds, not the exact 0.333 / 0.4.)
    scored = label_throughput.against_truth(boxes, {"p": on_canvas})
    assert scored["objects"] == 6 and scored["recall"] >= 0.25 and scored["precision"] >= 0.25


@pytest.mark.parametrize(
    "ours, theirs, expected",
    [
        ({}, {}, {"theirs": 0, "ours": 0, "theirs_found": 0.0}),
        # one of two found: the other is another class, though it overlaps exactly
        (
            {"a": [(0, [0, 0, 10, 10]), (2, [20, 20, 30, 30])]},
            {"a": [(0, [1, 0, 10, 10]), (1, [20, 20, 30, 30])]},
            {"theirs": 2, "ours": 2, "theirs_found": 0.5},
        ),
        # one of ours cannot match two of theirs; IoU below 0.5 is a miss
        (
            {"a": [(0, [0, 0, 10, 10])]},
            {"a": [(0, [0, 0, 10, 10]), (0, [0, 0, 10, 11])], "b": [(0, [0, 0, 4, 4])]},
            {"theirs": 3, "ours": 1, "theirs_found": 0.333},
        ),
        ({"a": [(0, [0, 0, 10, 10])]}, {"a": [(0, [5, 5, 15, 15])]}, {"theirs": 1, "ours": 1, "theirs_found": 0.0}),
    ],
)
def test_agreement_counts_theirs_found_one_to_one_by_class_and_iou(ours, theirs, expected):
    import numpy as np

    as_arrays = [{k: [(c, np.array(b, float)) for c, b in v] for k, v in d.items()} for d in (ours, theirs)]
    assert label_throughput.agreement(*as_arrays) == expected
