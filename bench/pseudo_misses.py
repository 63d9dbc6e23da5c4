"""Where do the pseudo-labels fall short? For a finished `bench/ssl_gain.py` run.

For each round:

- the true objects of the pool images trained on that no kept box covers (same class,
  IoU >= 0.5), and how many of them the teacher did see: a detection of any class above
  the score floor overlapping them (IoU >= --overlap), none kept as a box of their class.
  Only those could be masked out of training instead of being taught as background;
- how tightly the kept boxes that do cover an object box it: their IoU with it (mAP50-95
  averages over IoU thresholds 0.5 to 0.95, so a box at IoU 0.9 misses two of its ten), and
  how far each side of it lies outside the true box's, in pixels (mean: a bias a correction
  could remove; standard deviation: the noise it could not).

    .venv/bin/python bench/pseudo_misses.py /tmp/gain/0-adaptive+consistency-r5e20 /tmp/gain/data0/data.yaml
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from ssl_gain import pool_truth  # noqa: E402  (the same truth the benchmark scores against)


def misses(round_dir: Path, truth: dict[str, list[dict]], overlap: float) -> dict:
    import pyarrow.parquet as pq

    from ssl_ray.consistency import iou
    from ssl_ray.thresholds import xyxy

    seen = {r["image_id"]: r["boxes"] for r in pq.read_table(round_dir / "predictions").to_pylist()}
    rows = [r for r in pq.read_table(round_dir / "merged.parquet").to_pylist() if r["source"] in ("pseudo", "negative")]
    total = missed = seen_unsure = 0
    unsure_scores, covered_iou, outward = [], [], []
    for row in rows:
        image_id, boxes = row["image_id"], row["boxes"]
        kept_xyxy = np.array([xyxy(b) for b in boxes]).reshape(-1, 4)
        seen_xyxy = np.array([xyxy(b) for b in seen[image_id]]).reshape(-1, 4)
        pixels = np.array([row["width"], row["height"]] * 2, dtype=float)
        for t in truth[image_id]:
            total += 1
            hits = iou(xyxy(t), kept_xyxy) if len(boxes) else np.zeros(0)
            same = [(o, k) for k, (b, o) in enumerate(zip(boxes, hits)) if b["cls"] == t["cls"] and o >= 0.5]
            if same:
                best, k = max(same)
                covered_iou.append(best)
                outward.append((kept_xyxy[k] - np.array(xyxy(t))) * pixels * [-1, -1, 1, 1])  # > 0: loose
                continue
            missed += 1
            near = iou(xyxy(t), seen_xyxy) >= overlap if len(seen[image_id]) else np.zeros(0, bool)
            if near.any():
                seen_unsure += 1
                unsure_scores.append(max(b["score"] for b, n in zip(seen[image_id], near) if n))
    covered, sides = np.array(covered_iou), np.array(outward).reshape(-1, 4)
    return {"true_objects": total, "missed": missed, "missed_but_detected_unsure": seen_unsure,
            "unsure_score_median": round(float(np.median(unsure_scores)), 3) if unsure_scores else None,
            "covered_iou_median": round(float(np.median(covered)), 3) if len(covered) else None,
            "covered_iou_at_least_0.9": round(float((covered >= 0.9).mean()), 3) if len(covered) else None,
            "covered_iou_at_least_0.95": round(float((covered >= 0.95).mean()), 3) if len(covered) else None,
            "outward_px_left_top_right_bottom": {"mean": sides.mean(0).round(3).tolist() if len(sides) else None,
                                                 "std": sides.std(0).round(3).tolist() if len(sides) else None}}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("run", type=Path, help="an SSL run folder of bench/ssl_gain.py")
    ap.add_argument("data", type=Path, help="that seed's data.yaml (its pool labels are the truth)")
    ap.add_argument("--overlap", type=float, default=0.3, help="IoU for an unkept detection to cover an object")
    args = ap.parse_args()
    truth = pool_truth(args.data)
    rounds = sorted(p for p in (args.run / "rounds").glob("r*") if p.name != "r000" and (p / "merged.parquet").exists())
    print(json.dumps({p.name: misses(p, truth, args.overlap) for p in rounds}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
