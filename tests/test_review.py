"""Review export, pure parts: Label Studio tasks and the ranking file."""

import csv
import io

import pytest

from ssl_ray.core.schema import box
from ssl_ray.stages.review import label_studio_tasks, ranking_csv

NAMES = ["car", "person"]


def row(image_id, boxes, w=200, h=100, video=None, frame=None):
    return {
        "image_id": image_id,
        "uri": f"s3://b/pool/{image_id}.jpg",
        "width": w,
        "height": h,
        "boxes": boxes,
        "video_uri": video,
        "frame_index": frame,
        "teacher": "s3://b/run/rounds/r000/weights/best.pt",
    }


@pytest.mark.parametrize(
    "b, value",
    [
        (box(0, 0.5, 0.5, 0.2, 0.4, 0.61), {"x": 40.0, "y": 30.0, "width": 20.0, "height": 40.0}),
        (box(1, 0.1, 0.9, 0.2, 0.2, 0.3), {"x": 0.0, "y": 80.0, "width": 20.0, "height": 20.0}),
    ],
)
def test_boxes_become_percent_rectangles_from_the_top_left(b, value):
    (task,) = label_studio_tasks([row("a", [b])], NAMES, {"a": "s3://b/run/review_export/images/review/a.jpg"})
    (result,) = task["predictions"][0]["result"]
    got = dict(result["value"])
    assert got.pop("rectanglelabels") == [NAMES[b["cls"]]] and got == pytest.approx({**value, "rotation": 0})
    assert (result["original_width"], result["original_height"]) == (200, 100)
    assert result["type"] == "rectanglelabels" and result["from_name"] == "label" and result["to_name"] == "image"
    assert task["data"]["image"].endswith("/a.jpg") and task["data"]["rank"] == 1


def test_tasks_keep_the_review_order_provenance_and_empty_images():
    rows = [
        row("b", [box(0, 0.5, 0.5, 0.1, 0.1, 0.4), box(1, 0.2, 0.2, 0.1, 0.1, 0.7)], video="s3://b/v.mp4", frame=30),
        row("a", []),
    ]
    tasks = label_studio_tasks(rows, NAMES, {"a": "A", "b": "B"})
    assert [t["data"]["image_id"] for t in tasks] == ["b", "a"] and [t["data"]["rank"] for t in tasks] == [1, 2]
    assert tasks[0]["data"]["video_uri"] == "s3://b/v.mp4" and tasks[0]["data"]["frame_index"] == 30
    assert tasks[0]["predictions"][0]["score"] == 0.7 and tasks[1]["predictions"][0]["result"] == []


def test_ranking_csv():
    rows = [row("b", [box(0, 0.5, 0.5, 0.1, 0.1, 0.4)], video="s3://b/v.mp4", frame=30), row("a", [])]
    lines = list(csv.reader(io.StringIO(ranking_csv(rows))))
    assert lines[0] == ["rank", "image_id", "best_score", "uri", "video_uri", "frame_index"]
    assert lines[1] == ["1", "b", "0.4000", "s3://b/pool/b.jpg", "s3://b/v.mp4", "30"]
    assert lines[2] == ["2", "a", "0.0000", "s3://b/pool/a.jpg", "", ""]
