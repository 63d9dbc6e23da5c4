"""Review export: the round's most uncertain images, ready for human labeling.

Under `<out>/rounds/rNNN/review_export/`:

    images/review/<image_id>.<ext>   the images (video frames as JPEG), named by content
    labels/review/<image_id>.txt     the teacher's boxes as YOLO pre-annotations
    data.yaml                        a YOLO tree: import it, or train on it once corrected
    label_studio.json                Label Studio tasks with the boxes as predictions
    ranking.csv                      rank, image_id, uncertainty, source uri, video frame

The order is the review ranking (most uncertain first): score margin to the thresholds,
and view disagreement when consistency filtering ran. `label_studio_tasks` is pure.
"""

from __future__ import annotations

import csv
import io
import json


def label_studio_tasks(rows: list[dict], names: list[str], image_url: dict[str, str]) -> list[dict]:
    """Label Studio tasks (one per row, in order) with the boxes as a prediction. Label
    Studio's rectangles are percentages of the image, from the top-left corner."""
    tasks = []
    for rank, row in enumerate(rows, start=1):
        result = [
            {
                "type": "rectanglelabels",
                "from_name": "label",
                "to_name": "image",
                "original_width": row["width"],
                "original_height": row["height"],
                "image_rotation": 0,
                "value": {
                    "x": 100 * (b["x"] - b["w"] / 2),
                    "y": 100 * (b["y"] - b["h"] / 2),
                    "width": 100 * b["w"],
                    "height": 100 * b["h"],
                    "rotation": 0,
                    "rectanglelabels": [names[b["cls"]]],
                },
                "score": round(float(b["score"]), 4),
            }
            for b in row["boxes"] or []
        ]
        tasks.append(
            {
                "data": {
                    "image": image_url[row["image_id"]],
                    "image_id": row["image_id"],
                    "source_uri": row["uri"],
                    "video_uri": row.get("video_uri"),
                    "frame_index": row.get("frame_index"),
                    "rank": rank,
                },
                "predictions": [
                    {
                        "model_version": row.get("teacher") or "teacher",
                        "result": result,
                        "score": round(max((float(b["score"]) for b in row["boxes"] or []), default=0.0), 4),
                    }
                ],
            }
        )
    return tasks


def ranking_csv(rows: list[dict]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["rank", "image_id", "best_score", "uri", "video_uri", "frame_index"])
    for rank, row in enumerate(rows, start=1):
        best = max((float(b["score"]) for b in row["boxes"] or []), default=0.0)
        w.writerow(
            [
                rank,
                row["image_id"],
                f"{best:.4f}",
                row["uri"],
                row.get("video_uri") or "",
                "" if row.get("frame_index") is None else row["frame_index"],
            ]
        )
    return buf.getvalue()


def export_review(cfg, out, stage: str, names: list[str]) -> int:
    """Write the export for `stage` (e.g. 'rounds/r001') from its review Parquet; the count."""
    from ssl_ray.io.export import export_yolo_tree, read_parquet_rows

    rel = f"{stage}/review_export"
    rows = read_parquet_rows(out, f"{stage}/review/part-000000.parquet")
    files = export_yolo_tree(cfg, out, rel, {"review": rows}, names)
    urls = {row["image_id"]: out.uri_of(f"{rel}/{files[row['image_id']]}") for row in rows}
    out.write_text(f"{rel}/label_studio.json", json.dumps(label_studio_tasks(rows, names, urls), indent=1) + "\n")
    out.write_text(f"{rel}/ranking.csv", ranking_csv(rows))
    return len(rows)
